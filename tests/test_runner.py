"""The runner: one record per (task, method, upstream, seed), shared one-off builds timed apart from the record's
own work, resumable, and one failing cell never loses the rest of the grid."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pytest

from bench.audio import write_audio

from bench.data.manifest import Example, Manifest
from bench.methods import METHODS
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions
from bench.registry import TaskSpec
from bench.runner import RunOptions, run_benchmark

CALLS: list[str] = []


class MajorityClass(Method):
    """Predicts the most frequent training label; ``prepare`` stands for a slow shared build (a default LM)."""

    name = "majority"

    @dataclass
    class Config:
        prepare_seconds: float = 0.3
        fail: bool = False

    def prepare(self, ctx):
        CALLS.append("prepare")
        time.sleep(self.config.prepare_seconds)

    def count_parameters(self, task, ctx):
        return ParamCount(trainable=0, frozen=0, stored_per_task=0)

    def run(self, task, manifest, ctx):
        CALLS.append("run")
        if self.config.fail:
            raise RuntimeError("boom")
        top = manifest.labels("train").most_common(1)[0][0]
        test = manifest.split("test")
        preds = Predictions([e.id for e in test], [e.label for e in test], [top] * len(test))
        return MethodOutput(preds, self.count_parameters(task, ctx))


@pytest.fixture
def grid(monkeypatch, bench_home):
    monkeypatch.setitem(METHODS, "majority", f"{__name__}:MajorityClass")
    CALLS.clear()
    task = TaskSpec(name="toy", version=1, family="KS", kind="classification", origin="synthetic",
                    description="toy", labels=["a", "b"], metrics=["accuracy"],
                    data={"source": "manifest", "path": "x.jsonl"})
    examples = [Example(id=f"{s}{i}", path=f"{s}{i}.wav", label="a" if i % 3 else "b", split=s, speaker=f"{s}{i}")
                for s in ("train", "valid", "test") for i in range(6)]
    for e in examples:  # the runner decode-checks every file before compute
        write_audio(bench_home / e.path, np.full(1600, 0.01, np.float32))
    manifest = Manifest(examples, bench_home)
    monkeypatch.setattr("bench.data.sources.prepare_manifest", lambda spec, *a, **k: manifest)
    return task


def test_prepare_runs_before_the_clock_and_is_recorded_apart(grid, tmp_path):
    summary = run_benchmark([grid], ["majority"], RunOptions(seeds=(0, 1)), tmp_path, log=lambda s: None)
    assert len(summary.written) == 2 and CALLS == ["prepare", "run", "prepare", "run"]
    rec = json.loads(summary.written[0].read_text())
    assert rec["prepare_time_s"] >= 0.3 > rec["wall_time_s"]
    assert rec["scores"]["accuracy"] == pytest.approx(4 / 6)  # majority label 'a' on 4 of 6 test items


def test_rerun_reuses_records_and_a_failure_keeps_the_rest(grid, tmp_path):
    opts = RunOptions(seeds=(0,))
    run_benchmark([grid], ["majority"], opts, tmp_path, log=lambda s: None)
    CALLS.clear()
    again = run_benchmark([grid], ["majority"], opts, tmp_path, log=lambda s: None)
    assert again.skipped_existing and not again.written and CALLS == []  # nothing recomputed, nothing prepared

    failing = RunOptions(seeds=(0, 1, 2), method_options={"majority": {"fail": True, "prepare_seconds": 0}})
    out = run_benchmark([grid], ["majority"], failing, tmp_path, log=lambda s: None)
    assert len(out.failed) == 3 and "boom" in out.failed[0][1]
    assert (tmp_path / "toy" / "majority" / "fbank" / "seed-0.json").is_file()  # the earlier record survives


def test_a_method_that_lacks_the_task_kind_is_not_applicable_not_skipped(grid, tmp_path):
    gen = grid.model_copy(update={"kind": "generation", "name": "toy-gen", "labels": None, "metrics": ["wer"]})
    out = run_benchmark([gen], ["majority"], RunOptions(), tmp_path, log=lambda s: None)
    assert out.not_applicable == ["toy-gen × majority"] and not out.skipped and not out.written and CALLS == []
