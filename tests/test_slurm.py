"""``bench run --executor slurm``: settings, and on a real Slurm (``.ci/slurm-up`` starts a single-node one) the
same records as a serial run, a killed array task re-run alone, a detached run followed by ``bench status``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.core.errors import BenchError
from bench.runner.slurm import TERMINAL_STATES, SlurmSettings, log_tail, queue_states, settings_from


# ---- settings (no cluster needed) -----------------------------------------------------------------------------
def test_settings_take_the_launcher_names_and_convert_types():
    s = settings_from(["partition=gpu", "mem_gb=32", "gpus_per_node=1", "additional_parameters.reservation=r1",
                       "setup=module load cuda", "stage_job=false"],
                      user_section={"timeout_min": 30, "partition": "cpu", "array_parallelism": 8})
    assert (s.partition, s.mem_gb, s.gpus_per_node, s.timeout_min, s.array_parallelism) == ("gpu", 32.0, 1, 30, 8)
    assert s.additional_parameters == {"reservation": "r1"} and s.setup == ["module load cuda"]
    assert s.stage_job is False


@pytest.mark.parametrize("item, says", [
    ("partitoin=gpu", "slurm setting 'partitoin' is unknown"),
    ("mem_gb=lots", "slurm setting 'mem_gb'"),
    ("cpus_per_task=0", "slurm setting 'cpus_per_task'"),
    ("gpu", "must look like KEY=VALUE"),
])
def test_a_bad_setting_is_one_line_naming_it(item, says):
    with pytest.raises(BenchError) as err:
        settings_from([item])
    assert says in err.value.message and "\n" not in err.value.message


def test_the_user_config_slurm_section_is_read(tmp_path, monkeypatch):
    from bench.runner.slurm import user_settings

    cfg = tmp_path / "config.yaml"
    cfg.write_text("slurm:\n  partition: a100\n  mem_gb: 64\n")
    monkeypatch.setenv("BENCH_CONFIG", str(cfg))
    s = user_settings(["mem_gb=16"])
    assert s.partition == "a100" and s.mem_gb == 16  # the command line wins
    cfg.write_text("slurm:\n  memory: 64\n")
    with pytest.raises(BenchError, match="'memory' is unknown"):
        user_settings([])


def test_slurm_options_need_the_slurm_executor(bench_home, tmp_path):
    from bench.cli import app

    r = CliRunner().invoke(app, ["run", "--tasks", "builtin-ks", "--methods", "linear", "--slurm", "mem_gb=4",
                                 "--results", str(tmp_path / "r")])
    assert isinstance(r.exception, BenchError) and "--slurm settings need --executor slurm" in r.exception.message
    r = CliRunner().invoke(app, ["run", "--tasks", "builtin-ks", "--executor", "pbs", "--results", str(tmp_path)])
    assert isinstance(r.exception, BenchError) and "--executor must be one of local, slurm" in r.exception.message


# ---- a real cluster ---------------------------------------------------------------------------------------------
def _cluster_up() -> str | None:
    """None when a Slurm controller answers with a usable node, else why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm client commands on PATH (.ci/slurm-up installs and starts a single-node cluster as root)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed: {err}"
    if out.returncode != 0 or not any(s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.split()):
        return f"no Slurm node is up (sinfo: {(out.stdout + out.stderr).strip() or 'nothing'}); run .ci/slurm-up"
    return None


@pytest.fixture(scope="module")
def cluster():
    why = _cluster_up()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm tests, but {why}")
        pytest.skip(why)


def _records(root: Path) -> dict[str, dict]:
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("seed-*.json"))}


def _run(args: list[str]):
    from bench.cli import app

    return CliRunner().invoke(app, ["run", "--size", "tiny", "--max-epochs", "3", "--no-compare", *args])


GRID = ["--tasks", "builtin-ks,builtin-vad", "--methods", "linear", "--upstream", "fbank", "--seeds", "0,1"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_slurm_array_writes_the_serial_records(cluster, bench_home, tmp_path):
    """The tiny grid through --executor slurm (a stage job, then one array of two tasks of two cells) writes, cell
    by cell, the records of a serial local run: same config hashes, predictions and scores."""
    serial = _run([*GRID, "--jobs", "1", "--results", str(tmp_path / "serial")])
    assert serial.exit_code == 0, serial.output
    slurm = _run([*GRID, "--executor", "slurm", "--slurm", "poll_s=0.5", "--slurm", "array_parallelism=2",
                  "--results", str(tmp_path / "slurm")])
    assert slurm.exit_code == 0, slurm.output
    assert "stage job" in slurm.output and "as Slurm array" in slurm.output
    assert "of 2 task(s), 2 cell(s) each" in " ".join(slurm.output.split())  # two at a time: two cells a task
    a, b = _records(tmp_path / "serial"), _records(tmp_path / "slurm")
    assert a.keys() == b.keys() and len(a) == 4
    for name, rec in a.items():
        assert b[name]["config_hash"] == rec["config_hash"]
        assert b[name]["outputs"] == rec["outputs"] and b[name]["scores"] == rec["scores"]
    again = _run([*GRID, "--executor", "slurm", "--slurm", "stage_job=false", "--results", str(tmp_path / "slurm")])
    assert again.exit_code == 0 and "0 record(s) written, 4 reused" in again.output
    assert "submitted" not in again.output  # a finished grid submits nothing


def _wait_for(predicate, timeout: float, what: str, seen=None):
    """``predicate()`` once it is truthy; on timeout an error naming ``what`` and, from ``seen()``, what was there."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f"; {seen()}" if seen else ""))


@pytest.mark.slurm
@pytest.mark.slow
def test_a_killed_array_task_is_the_only_cell_a_rerun_submits(cluster, bench_home, tmp_path):
    """Detach (--no-wait), follow with `bench status`, SIGKILL one array task while it runs: status names it
    failed, and the same command again submits exactly that cell."""
    from bench.cli import app
    from bench.runner.runfile import latest_run

    results = tmp_path / "r"
    grid = [*GRID, "--executor", "slurm", "--slurm", "poll_s=0.5", "--slurm", "array_parallelism=1",
            "--slurm", "cells_per_job=1", "--results", str(results)]
    first = _run([*grid, "--no-wait"])
    assert first.exit_code == 0, first.output
    assert "submitted to Slurm and not waited for" in first.output
    run = latest_run(results)
    assert not run.waited and len(run.cells) == 4 and all(c.job_id for c in run.cells)
    status = CliRunner().invoke(app, ["status", str(results), "--all"])
    assert any(s in status.output for s in ("queued", "running", "done")), status.output

    # a second client while the jobs live attaches to them: it submits nothing new
    attached = _run([*grid, "--no-wait", "--slurm", "stage_job=false"])
    assert attached.exit_code == 0, attached.output
    second = latest_run(results)
    assert {c.job_id for c in second.cells} <= {c.job_id for c in run.cells}

    victim = run.cells[-1]  # one array task at a time: the last one starts last
    state = _wait_for(lambda: (queue_states([victim.job_id]) or {}).get(victim.job_id) == "RUNNING" or
                      (results / victim.record).exists(), 120, f"job {victim.job_id} to start")
    assert not (results / victim.record).exists(), "the job finished before it could be killed"
    assert state
    # SIGKILL the task's processes now, as the kernel's OOM killer would. `scancel --signal=KILL` sends SIGTERM
    # first and SIGKILL KillWait seconds later; submitit ignores SIGTERM, so a tiny cell could finish in between
    # (it did in CI: the job CANCELLED with its record written). Only the victim runs (one task at a time).
    # squeue says RUNNING once slurmd starts the batch script, a moment before submitit's python (whose command
    # line names the folder) exists: CI's pkill once matched nothing. Kill as soon as there is something to kill.
    def victim_seen() -> str:
        queue = queue_states([victim.job_id])
        return (f"squeue: {'no answer' if queue is None else queue.get(victim.job_id, 'gone')}, record "
                f"{'written' if (results / victim.record).exists() else 'absent'}, log tail: "
                f"{log_tail(victim.log, 5)!r}")

    def killed() -> bool:
        hit = subprocess.run(["pkill", "-KILL", "-f", str(results / ".slurm")]).returncode == 0
        return hit or (results / victim.record).exists()

    _wait_for(killed, 60, f"job {victim.job_id}'s processes to kill", victim_seen)

    def victim_ended() -> str | None:
        queue = queue_states([victim.job_id])  # None: squeue does not answer, ask again
        state = None if queue is None else queue.get(victim.job_id, "gone")
        return state if state in TERMINAL_STATES | {"gone"} else None

    ended = _wait_for(victim_ended, 120, f"job {victim.job_id} to end after the kill", victim_seen)
    assert ended != "COMPLETED" and not (results / victim.record).exists(), \
        f"the job finished before the kill reached it ({victim_seen()})"
    others = [c for c in run.cells if c is not victim]
    _wait_for(lambda: all((results / c.record).exists() for c in others), 240, "the other cells' records")
    tried = []

    def status_failed():
        tried[:] = [CliRunner().invoke(app, ["status", str(results)])]
        return tried[0].exit_code == 1 and tried[0]

    status = _wait_for(status_failed, 180, "status to see the killed job",
                       lambda: f"the last `bench status` (exit {tried[0].exit_code}) printed:\n{tried[0].output}\n"
                               f"{victim_seen()}")
    assert "3 done, 1 failed" in " ".join(status.output.split()) and victim.job_id in status.output
    assert not (results / victim.record).exists()

    rerun = _run(grid)
    assert rerun.exit_code == 0, rerun.output
    last = latest_run(results)
    assert [c.label for c in last.cells] == [victim.label]  # exactly the missing cell
    assert "1 record(s) written, 3 reused" in rerun.output
    assert (results / victim.record).exists()
    final = CliRunner().invoke(app, ["status", str(results), "--all"])
    assert final.exit_code == 0 and "1 done, 3 reused" in " ".join(final.output.split())


def test_status_without_a_run_file_says_so(tmp_path):
    from bench.cli import app

    (tmp_path / "r").mkdir()
    r = CliRunner().invoke(app, ["status", str(tmp_path / "r")])
    assert isinstance(r.exception, BenchError) and "has no run file" in r.exception.message


def test_a_local_run_writes_its_run_file(bench_home, tmp_path):
    """Every run writes its plan; `bench status` of a finished local run lists its cells done."""
    from bench.cli import app
    from bench.runner.runfile import latest_run

    r = _run(["--tasks", "builtin-ks", "--methods", "linear", "--upstream", "fbank", "--results", str(tmp_path)])
    assert r.exit_code == 0, r.output
    run = latest_run(tmp_path)
    assert run.executor == "local" and run.finished and len(run.cells) == 1 and run.cells[0].job_id is None
    status = CliRunner().invoke(app, ["status", str(tmp_path), "--all"])
    assert status.exit_code == 0 and "1 done" in " ".join(status.output.split())


def test_settings_defaults_are_valid():
    assert SlurmSettings().cpus_per_task == 1
