"""The runner: one record per (task, method, upstream, seed), shared one-off builds timed apart from the record's
own work, resumable, and one failing cell never loses the rest of the grid."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pytest

from bench.data.audio import write_audio

from bench.data.manifest import Example, Manifest
from bench.methods import METHODS
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions
from bench.tasks.registry import TaskSpec
from bench.runner.plan import RunOptions, run_benchmark

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


def test_prepare_runs_once_before_the_cells_and_is_recorded_apart(grid, tmp_path):
    """The run plan prepares each method's shared builds once, before any cell, and off the cells' clocks."""
    summary = run_benchmark([grid], ["majority"], RunOptions(seeds=(0, 1)), tmp_path, log=lambda s: None)
    assert len(summary.written) == 2 and CALLS == ["prepare", "run", "run"]
    rec = json.loads(summary.written[0].read_text())
    assert rec["prepare_time_s"] >= 0.3 > rec["wall_time_s"]
    assert rec["scores"]["accuracy"] == pytest.approx(4 / 6)  # majority label 'a' on 4 of 6 test items


def test_rerun_reuses_records_and_a_failure_keeps_the_rest(grid, tmp_path):
    opts = RunOptions(seeds=(0,))
    run_benchmark([grid], ["majority"], opts, tmp_path, log=lambda s: None)
    CALLS.clear()
    again = run_benchmark([grid], ["majority"], opts, tmp_path, log=lambda s: None)
    assert again.skipped_existing and not again.written and CALLS == []  # nothing recomputed, nothing prepared
    first = again.skipped_existing[0]

    failing = RunOptions(seeds=(0, 1, 2), method_options={"majority": {"fail": True, "prepare_seconds": 0}})
    out = run_benchmark([grid], ["majority"], failing, tmp_path, log=lambda s: None)
    assert len(out.failed) == 3 and "boom" in out.failed[0][1]
    assert first.is_file() and first.parent.parent == tmp_path / "toy" / "majority" / opts.upstream  # it survives


def test_a_method_that_lacks_the_task_kind_is_not_applicable_not_skipped(grid, tmp_path):
    gen = grid.model_copy(update={"kind": "generation", "name": "toy-gen", "labels": None, "metrics": ["wer"]})
    out = run_benchmark([gen], ["majority"], RunOptions(), tmp_path, log=lambda s: None)
    assert out.not_applicable == ["toy-gen × majority"] and not out.skipped and not out.written and CALLS == []


def test_other_options_make_other_records_and_none_is_overwritten(grid, tmp_path):
    quiet = dict(log=lambda s: None)
    base = RunOptions(seeds=(0, 1), method_options={"majority": {"prepare_seconds": 0}})
    a = run_benchmark([grid], ["majority"], base, tmp_path, **quiet).written
    variants = [RunOptions(seeds=(0,), method_options={"majority": {"prepare_seconds": 0.01}}),
                RunOptions(seeds=(0,), max_epochs=3, method_options=base.method_options),
                RunOptions(seeds=(0,), limit=3, method_options=base.method_options)]
    b = [p for o in variants for p in run_benchmark([grid], ["majority"], o, tmp_path, **quiet).written]
    assert len(a) == 2 and len(b) == 3 and len(set(a + b)) == 5 and all(p.is_file() for p in a + b)
    recs = [json.loads(p.read_text()) for p in a + b]
    assert recs[0]["group_hash"] == recs[1]["group_hash"] != recs[2]["group_hash"]  # seeds share a group
    assert recs[0]["config_hash"] != recs[1]["config_hash"]
    assert len({r["group_hash"] for r in recs}) == 4 and a[0].parent.name == recs[0]["group_hash"][:12]
    assert recs[4]["predictions"]["n"] == 3 and recs[4]["config"]["data"]["limit"] == 3
    # the same configuration again: reused; --force: recomputed in place
    CALLS.clear()
    again = run_benchmark([grid], ["majority"], variants[1], tmp_path, **quiet)
    assert again.skipped_existing == [b[1]] and CALLS == []
    forced = run_benchmark([grid], ["majority"], RunOptions(seeds=(0,), max_epochs=3, force=True,
                                                            method_options=base.method_options), tmp_path, **quiet)
    assert forced.written == [b[1]]


def test_records_hold_outputs_and_environment(grid, tmp_path):
    rec = json.loads(run_benchmark([grid], ["majority"], RunOptions(), tmp_path, log=lambda s: None)
                     .written[0].read_text())
    out = rec["outputs"]
    assert out["ids"] == [f"test{i}" for i in range(6)] and out["hypotheses"] == ["a"] * 6
    assert out["references"] == ["b", "a", "a", "b", "a", "a"] and "scores" not in out
    env = rec["environment"]
    assert env["cpu"]["model"] and "isa" in env["cpu"] and env["torch"]["version"] and env["threads"]["torch"] >= 1
    assert rec["schema_version"] == 2 and rec["positive_label"] is None


ARTEFACT = {"content": "v1"}


class WithArtefact(MajorityClass):
    """Reads a file its configuration does not pin (like a default LM): its content hash is its identity."""

    name = "with-artefact"

    def prepare(self, ctx):
        CALLS.append("prepare")

    def artefacts(self, ctx):
        assert CALLS and CALLS[-1] == "prepare"  # called after prepare built it
        CALLS.append("artefacts")
        import hashlib

        return {"lm": hashlib.sha256(ARTEFACT["content"].encode()).hexdigest()}


def test_artefact_hashes_are_part_of_the_configuration(grid, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "with-artefact", f"{__name__}:WithArtefact")
    monkeypatch.setitem(ARTEFACT, "content", "v1")
    quiet = dict(log=lambda s: None)
    first = run_benchmark([grid], ["with-artefact"], RunOptions(), tmp_path, **quiet).written
    assert CALLS == ["prepare", "artefacts", "run"]
    rec = json.loads(first[0].read_text())
    assert rec["config"]["artefacts"]["lm"] == __import__("hashlib").sha256(b"v1").hexdigest()
    CALLS.clear()
    assert run_benchmark([grid], ["with-artefact"], RunOptions(), tmp_path, **quiet).skipped_existing == first
    assert CALLS == ["prepare", "artefacts"]  # identified after prepare; not recomputed
    ARTEFACT["content"] = "v2"  # the LM file changed under the same name: a new record beside the old one
    second = run_benchmark([grid], ["with-artefact"], RunOptions(), tmp_path, **quiet).written
    assert second and second[0] != first[0] and first[0].is_file()
    # a method without artefacts keeps the configuration (and hash) it had before the hook existed
    plain = json.loads(run_benchmark([grid], ["majority"], RunOptions(), tmp_path, **quiet).written[0].read_text())
    assert "artefacts" not in plain["config"]


def test_compare_keeps_configurations_apart_and_marks_smoke_runs(grid, tmp_path):
    from bench.results.compare import build_leaderboard, records_frame, summarize

    quiet = dict(log=lambda s: None)
    opts = {"majority": {"prepare_seconds": 0}}
    run_benchmark([grid], ["majority"], RunOptions(seeds=(0, 1), method_options=opts), tmp_path, **quiet)
    run_benchmark([grid], ["majority"], RunOptions(seeds=(0,), limit=3, method_options=opts), tmp_path, **quiet)
    lb = build_leaderboard(summarize(records_frame([tmp_path])))
    row = lb.scores.loc["toy (synthetic) [accuracy ↑]"]
    assert list(row.index) == ["majority (whisper_tiny_en) [limit=none]", "majority (whisper_tiny_en) [limit=3] (smoke)"]
    assert row.iloc[0].startswith("66.67 ± 0.00 (n=2) [")  # two seeds averaged, the smoke run apart
    assert row.iloc[1].startswith("66.67 (n=1) [")
    num = lb.scores_numeric.set_index("system")
    assert num.loc["majority (whisper_tiny_en) [limit=none]", "n"] == 2 and num["ci_low"].notna().all()


def test_bench_run_writes_leaderboards_next_to_the_results_not_into_the_cwd(grid, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from bench.cli import app

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "toy.yaml").write_text(yaml.safe_dump(grid.model_dump(include={
        "name", "version", "family", "kind", "origin", "description", "labels", "metrics"}) | {
        "data": {"source": "manifest", "path": "x.jsonl"}}))
    monkeypatch.chdir(tmp_path)
    args = ["run", "--tasks", "toy", "--methods", "majority", "--task-dir", str(tasks),
            "-o", "majority.prepare_seconds=0", "--jobs", "1"]  # a test-only method exists in this process only
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "results" / "leaderboards" / "leaderboard-scores.md").is_file()
    assert not (tmp_path / "leaderboards").exists()
    r = CliRunner().invoke(app, [*args, "--results", "r2", "--leaderboard-dir", "lb"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "lb" / "leaderboard-scores.csv").is_file() and not (tmp_path / "r2" / "leaderboards").exists()


@pytest.mark.slow
def test_cells_in_worker_processes_write_the_serial_records(bench_home, tmp_path):
    """The run plan builds data and features first, then runs the cells: two worker processes (`--jobs 2`) write
    the same records as one serial loop (same config hashes, predictions and scores), since every cell runs on
    the same number of threads whatever --jobs is."""
    import json

    from bench.tasks.registry import TaskRegistry

    tasks = TaskRegistry().select("builtin-ks,builtin-vad")
    records = {}
    for jobs in (1, 2):
        opts = RunOptions(upstream="fbank", size="tiny", seeds=(0, 1), max_epochs=3, jobs=jobs)
        summary = run_benchmark(tasks, ["linear"], opts, tmp_path / f"jobs{jobs}", log=lambda s: None)
        assert len(summary.written) == 4 and not summary.failed
        records[jobs] = {str(p.relative_to(tmp_path / f"jobs{jobs}")): json.loads(p.read_text())
                         for p in summary.written}
    assert records[1].keys() == records[2].keys()
    for name, serial in records[1].items():
        parallel = records[2][name]
        assert parallel["config_hash"] == serial["config_hash"]
        assert parallel["outputs"] == serial["outputs"] and parallel["scores"] == serial["scores"]


def test_bf16_autocast_is_part_of_the_configuration(grid, tmp_path):
    """--bf16 records are their own systems (another config hash); fp32 configurations keep their hashes."""
    fp32 = run_benchmark([grid], ["majority"], RunOptions(upstream="fbank"), tmp_path, log=lambda s: None)
    bf16 = run_benchmark([grid], ["majority"], RunOptions(upstream="fbank", bf16=True), tmp_path, log=lambda s: None)
    assert len(fp32.written) == len(bf16.written) == 1 and fp32.written != bf16.written
    a, b = (json.loads(s.written[0].read_text()) for s in (fp32, bf16))
    assert "bf16" not in a["config"] and b["config"]["bf16"] is True and a["config_hash"] != b["config_hash"]


def test_workers_take_the_long_cells_first():
    """Generation tasks, then prompt tuning, then the rest: the pool ends with short cells, not one long one."""
    from types import SimpleNamespace

    from bench.runner.plan import longest_first

    def cell(kind, method):
        return SimpleNamespace(task=SimpleNamespace(kind=kind), method=method)

    cells = [cell("classification", "linear"), cell("classification", "prompt-gslm"), cell("generation", "lstm"),
             cell("generation", "prompt-gslm"), cell("classification", "linear")]
    order = [(c.task.kind, c.method) for c in longest_first(cells)]
    assert order == [("generation", "prompt-gslm"), ("generation", "lstm"), ("classification", "prompt-gslm"),
                     ("classification", "linear"), ("classification", "linear")]
