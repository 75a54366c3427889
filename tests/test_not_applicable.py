"""A prompt method on a task with more classes than its unit LM has units (VoxCeleb1 SID: 1,251 speakers, a
100-unit LM) cannot run: every verbalizer feeds each class back to the LM as one of its units. The plan lists
such pairs as not applicable, with the reason once, before any data or LM is built; they are no failed cells."""

from __future__ import annotations

import pytest

from bench.methods import method_class
from bench.methods.base import RunContext
from bench.runner.plan import RunOptions, run_benchmark
from bench.tasks.registry import TaskRegistry, TaskSpec

PROMPT_METHODS = ["prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv"]


def _task(n: int) -> TaskSpec:
    return TaskSpec(name=f"toy-{n}", version=1, family="SID", kind="classification", origin="synthetic",
                    description="toy", labels=[f"spk{i}" for i in range(n)], metrics=["accuracy"],
                    data={"source": "manifest", "path": "x.jsonl"})


def _ctx(tmp_path) -> RunContext:
    return RunContext(seed=0, upstream="fbank", cache_dir=tmp_path / "cache", models_dir=tmp_path / "models")


@pytest.mark.parametrize("method", PROMPT_METHODS)
def test_more_classes_than_lm_units_is_not_applicable_and_says_why(method, tmp_path):
    m = method_class(method)({})
    assert m.unit_count(_ctx(tmp_path)) == 100  # the offline stand-in LMs' K, read from their config
    assert m.not_applicable(_task(100), _ctx(tmp_path)) is None
    why = m.not_applicable(_task(101), _ctx(tmp_path))
    assert why.startswith("101 label symbols but the unit LM has 100 units")
    sid = TaskRegistry().get("sid-voxceleb1")
    assert m.not_applicable(sid, _ctx(tmp_path)).startswith("1,251 label symbols but the unit LM has 100 units")
    assert method_class("linear")({}).not_applicable(sid, _ctx(tmp_path)) is None
    assert not (tmp_path / "models").exists()  # nothing built to answer


def test_the_plan_lists_them_with_the_reason_once_and_builds_nothing(monkeypatch, bench_home, tmp_path):
    def no_data(*a, **k):
        raise AssertionError("no data is prepared for a task none of whose methods apply")

    monkeypatch.setattr("bench.data.sources.prepare_manifest", no_data)
    lines = []
    summary = run_benchmark([_task(1251)], PROMPT_METHODS, RunOptions(upstream="fbank"), tmp_path / "results",
                            log=lines.append)
    assert summary.not_applicable == [f"toy-1251 × {m}" for m in PROMPT_METHODS]
    assert not summary.failed and not summary.skipped and not summary.written
    (line,) = [x for x in lines if "not applicable" in x]
    assert ("toy-1251 × prompt-gslm, prompt-gslm-lv, prompt-pgslm, prompt-pgslm-lv: 1,251 label symbols but the "
            "unit LM has 100 units") in line
    assert not (bench_home / "models").exists()
