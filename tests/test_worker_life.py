"""No worker outlives its run: a worker ends with the process that started it (kill -9 included), the run file
says which cells a stopped run left interrupted, `bench status` says so and exits 1, and a re-run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from bench.runner.runfile import CellEntry, RunFile, cell_states, mark_interrupted_runs, read_run

REPO = Path(__file__).resolve().parent.parent
DEAD_PID = 2**22 + 12345  # above the kernel's pid_max default: never a live process

PARENT = textwrap.dedent("""
    import multiprocessing, os, sys, time
    sys.path.insert(0, sys.argv[1])
    from bench.runner.cells import die_with_parent

    def child(parent):
        die_with_parent(parent)
        time.sleep(120)

    if __name__ == "__main__":
        p = multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(),))
        p.start()
        print(p.pid, flush=True)
        time.sleep(120)
""")


def _wait_gone(pids: list[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    return alive


def test_a_worker_dies_with_its_parent_on_kill_9(tmp_path):
    """The parent-death signal (and the parent-pid watch behind it) ends a worker within a second of its
    parent's SIGKILL, although the worker would sleep for two minutes."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)  # the child has run die_with_parent
        assert psutil.pid_exists(child)
        parent.kill()
        parent.wait()
        assert _wait_gone([child], within=3.0) == []
    finally:
        parent.kill()


def _run_file(tmp_path: Path, pid: int, **kw) -> RunFile:
    from bench.core.locks import this_host

    cells = [CellEntry("t × m × u × seed 0", "t/m/u/g/seed-0.json", "h0", started="2026-01-01T00:00:00Z"),
             CellEntry("t × m × u × seed 1", "t/m/u/g/seed-1.json", "h1")]
    run = RunFile(run_id=f"20260101-000000-{pid}", executor="local",
                  created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  results_dir=str(tmp_path), cells=cells, pid=pid, host=this_host(), **kw)
    run.write()
    return run


def test_a_killed_run_has_interrupted_and_not_started_cells_and_status_exits_1(tmp_path):
    """A run file whose process is gone: its started cell is interrupted, the other one never started; `bench
    status` says so and exits 1. A later run seals the file (the run and the cell marked interrupted) and learns
    which cell it resumes."""
    run = _run_file(tmp_path, DEAD_PID)
    states = {s.label: s.state for s in cell_states(read_run(run.path()))}
    assert states == {"t × m × u × seed 0": "interrupted", "t × m × u × seed 1": "not started"}
    out = subprocess.run([sys.executable, "-m", "bench.cli", "status", str(tmp_path)], capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "interrupted" in out.stdout and "the run was stopped" in out.stdout

    lines: list[str] = []
    resumed = mark_interrupted_runs(tmp_path, lines.append)
    assert resumed == {("t/m/u/g/seed-0.json", "h0"): run.run_id}
    sealed = read_run(run.path())
    assert sealed.interrupted and [c.interrupted for c in sealed.cells] == [True, False]
    assert any("was stopped" in line for line in lines)


def test_a_live_run_is_running_not_interrupted(tmp_path):
    run = _run_file(tmp_path, os.getpid())
    assert [s.state for s in cell_states(read_run(run.path()))] == ["running", "pending"]
    assert mark_interrupted_runs(tmp_path, lambda s: None) == {}  # a live run is left alone


def test_a_pid_reused_by_a_later_process_is_not_the_run(tmp_path):
    """The run's pid now belongs to a process started after the run file was written: the run is gone."""
    run = _run_file(tmp_path, os.getpid())
    run.created = "2000-01-01T00:00:00Z"  # long before this process started
    run.write()
    assert [s.state for s in cell_states(read_run(run.path()))] == ["interrupted", "not started"]


def _records(results: Path) -> dict[str, float]:
    return {str(p.relative_to(results)): p.stat().st_mtime for p in results.rglob("seed-*.json")
            if ".work" not in p.parts and ".runs" not in p.parts}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill_9", "sigterm"])
def test_kill_9_of_bench_run_ends_every_worker_and_a_rerun_resumes(tmp_path, sig):
    """`bench run` (tiny KS, linear on fbank, 4 seeds, --jobs 2) is SIGKILLed (or SIGTERMed) while two workers
    train: within 5 s no process it started is alive (workers, multiprocessing's resource tracker); `bench status`
    says the run was interrupted and exits 1 (after SIGTERM the run file says so itself); the same command again
    writes only the missing records, says which cells it resumes, and exits 0."""
    results = tmp_path / "results"
    env = {**os.environ, "BENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bench.cli", "run", "--tasks", "builtin-ks", "--methods", "linear", "--upstream",
           "fbank", "--size", "tiny", "--seeds", "0-3", "--jobs", "2", "--results", str(results), "--no-compare"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, training, run_path = time.monotonic() + 500, False, None
        while time.monotonic() < deadline and proc.poll() is None and not training:
            time.sleep(0.5)
            found = sorted((results / ".runs").glob("*.json")) if (results / ".runs").is_dir() else []
            if not found:
                continue
            run_path = found[-1]
            try:
                run = read_run(run_path)
            except Exception:  # noqa: BLE001 - replaced while read
                continue
            running = [c for c in run.cells if c.started and not c.ended]
            workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
            # set up (the parent-watch thread runs, torch's threads too): inside their cells
            training = len(running) == 2 and len(workers) == 2 and all(w.num_threads() > 2 for w in workers)
        assert training, f"the run never had two cells running: {proc.poll()}"
        time.sleep(1.0)  # the workers are inside their cells
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 3  # two workers and the resource tracker
        proc.send_signal(sig)
        assert proc.wait(timeout=30) != 0
        assert _wait_gone(tree, within=5.0) == [], [psutil.Process(p).cmdline() for p in tree if psutil.pid_exists(p)]
    finally:
        proc.kill()
        proc.communicate()
    done_before = _records(results)
    assert len(done_before) < 4
    if sig == signal.SIGTERM:  # the run marked its own cells
        own = read_run(run_path)
        assert own.interrupted and not own.finished and sum(c.interrupted for c in own.cells) == 2

    status = subprocess.run([sys.executable, "-m", "bench.cli", "status", str(results)], env=env,
                            capture_output=True, text=True)
    assert status.returncode == 1 and "interrupted" in status.stdout, status.stdout + status.stderr

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{4 - len(done_before)} record(s) written, {len(done_before)} reused" in again.stdout
    after = _records(results)
    assert len(after) == 4 and all(after[k] == t for k, t in done_before.items())  # finished ones untouched
    killed, rerun = (read_run(p) for p in sorted((results / ".runs").glob("*.json"))[-2:])
    assert killed.interrupted and sum(c.interrupted for c in killed.cells) == 2
    assert sum(c.resumes == killed.run_id for c in rerun.cells) == 2 and rerun.finished
    assert json.loads(next(iter((results / "builtin-ks").rglob("seed-0.json"))).read_text())["seed"] == 0


def test_a_slurm_array_task_runs_its_cells_through_the_same_seam(monkeypatch, bench_home, tmp_path):
    """What a Slurm array task and the stage job execute (no cluster needed): the cells through
    cells.init_worker / cells.run_cell, the shared builds through plan.stage_shared_builds; the same records as
    the local executor."""
    import numpy as np
    import torch

    from bench.data.audio import write_audio
    from bench.data.manifest import Example, Manifest
    from bench.methods import METHODS
    from bench.runner import slurm
    from bench.runner.plan import RunOptions, RunSummary, _prepare_data, _stage, run_benchmark
    from bench.tasks.registry import TaskSpec

    monkeypatch.setitem(METHODS, "majority", "tests.test_disk_full:Majority")
    monkeypatch.syspath_prepend(str(REPO))
    task = TaskSpec(name="toy", version=1, family="KS", kind="classification", origin="synthetic",
                    description="toy", labels=["a", "b"], metrics=["accuracy"],
                    data={"source": "manifest", "path": "x.jsonl"})
    examples = [Example(id=f"{s}{i}", path=f"{s}{i}.wav", label="a" if i % 3 else "b", split=s, speaker=f"{s}{i}")
                for s in ("train", "valid", "test") for i in range(6)]
    for e in examples:
        write_audio(bench_home / e.path, np.full(1600, 0.01, np.float32))
    manifest = Manifest(examples, bench_home)
    monkeypatch.setattr("bench.data.sources.prepare_manifest", lambda spec, *a, **k: manifest)
    opts = RunOptions(seeds=(0, 1), jobs=1)

    assert slurm._stage_worker([task], ["majority"], opts, tmp_path / "a") == []
    summary = RunSummary()
    cells = _stage(_prepare_data([task], ["majority"], opts, summary, None, print), opts, tmp_path / "a", summary,
                   None, print)
    threads = torch.get_num_threads()
    try:
        out = slurm._cells_job(cells, opts, tmp_path / "a")
    finally:
        torch.set_num_threads(threads)
    assert [written for _, written in out] == [True, True]
    local = run_benchmark([task], ["majority"], opts, tmp_path / "b", log=lambda s: None)
    for (path, _), other in zip(out, sorted(local.written)):
        a, b = (json.loads(p.read_text()) for p in (path, other))
        assert a["config_hash"] == b["config_hash"] and a["outputs"] == b["outputs"]
