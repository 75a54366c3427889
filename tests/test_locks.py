"""Several bench processes on one $BENCH_HOME: a shared artefact is built once (the others wait, then reuse it),
temp names are unique per process, leftovers of dead processes are cleaned, and a failed write (disk full) is one
line naming the file, with no half-written temp left behind."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.core.errors import BenchError
from bench.core.locks import build_lock, clean_stale_temps, temp_path
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions

DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a live process

BUILD_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from bench.core.locks import build_lock

    out = Path(sys.argv[1])
    def ensure():
        if out.is_file():
            return "reused"
        with build_lock(out, f"the dummy artefact {out}"):
            if out.is_file():
                return "reused after waiting"
            with open(out.parent / "builds.log", "a") as f:
                f.write(f"{os.getpid()}\\n")
            time.sleep(1.5)
            out.write_text("built")
            return "built"
    print(ensure())
""")


def _spawn(*args, env=None):
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def test_two_processes_build_a_locked_artefact_once(tmp_path):
    out = tmp_path / "artefact.txt"
    procs = [_spawn("-c", BUILD_SCRIPT, str(out)) for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    outcomes = sorted(stdout.strip() for stdout, _ in results)
    assert outcomes[0] == "built" and outcomes[1].startswith("reused"), outcomes
    assert len((tmp_path / "builds.log").read_text().split()) == 1  # built exactly once
    waited = [err for _, err in results if "waiting for another bench process building the dummy artefact" in err]
    assert len(waited) == (1 if outcomes[1] == "reused after waiting" else 0)


def test_two_processes_build_the_same_builtin_task_once(tmp_path):
    """Two `bench data build builtin-vad --size tiny` at once on one BENCH_HOME: one builds, the other waits and
    reads the same manifest; both succeed."""
    env = {"BENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    cmd = ["-m", "bench.cli", "data", "build", "builtin-vad", "--size", "tiny"]
    procs = [_spawn(*cmd, env=env)]
    time.sleep(0.3)
    procs.append(_spawn(*cmd, env=env))
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    sha = [next(l for l in out.splitlines() if "builtin-vad" in l).split()[-1] for out, _ in results]
    assert sha[0] == sha[1] and len(sha[0]) == 12
    data = tmp_path / "home" / "data" / "builtin-vad" / "tiny-seed0"
    assert not [p for p in data.parent.rglob("*.tmp")]
    stamp = json.loads((data / "build.json").read_text())
    assert stamp["sizes"] == {"train": 12, "valid": 6, "test": 6}


def test_lock_timeout_names_what_it_waits_for(tmp_path):
    out = tmp_path / "thing"
    holder = _spawn("-c", "import sys, time; from pathlib import Path; from bench.core.locks import build_lock\n"
                          "with build_lock(Path(sys.argv[1]), 'x'):\n    print('held', flush=True); time.sleep(30)",
                    str(out))
    try:
        assert holder.stdout.readline().strip() == "held"
        said = []
        with pytest.raises(BenchError, match=r"waiting for another bench process \(pid \d+\) building the thing"):
            with build_lock(out, "the thing", timeout=0.5, log=said.append):
                pass
        assert said and "waiting for another bench process building the thing" in said[0]
    finally:
        holder.kill()
        holder.wait()
    with build_lock(out, "the thing", timeout=5):  # the kernel released the dead holder's lock
        with build_lock(out, "the thing", timeout=0):  # re-entrant in one thread
            pass


def test_temp_names_are_unique_and_name_the_process(tmp_path):
    a, b = temp_path(tmp_path / "x.json"), temp_path(tmp_path / "x.json")
    assert a != b and a.name.startswith(f".x.json.{os.getpid()}-") and a.suffix == ".tmp"


def test_stale_temps_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead_file = tmp_path / "cache" / f".shard.npy.{DEAD_PID}-0a1b2c3d.tmp"
    dead_old_style = tmp_path / "cache" / f".index.json.{DEAD_PID}.tmp"
    dead_dir = tmp_path / "models" / f".ulm-default-abc.{DEAD_PID}-deadbeef.tmp"
    live = tmp_path / "cache" / f".other.npy.{os.getpid()}-0a1b2c3d.tmp"
    keep = tmp_path / "cache" / "real.npy"
    for f in (dead_file, dead_old_style, live, keep):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    (dead_dir / "sub").mkdir(parents=True)
    (dead_dir / "sub" / "checkpoint_best.pt").write_text("half")
    removed = clean_stale_temps([tmp_path])
    assert sorted(removed) == sorted([dead_file, dead_old_style, dead_dir])
    assert live.exists() and keep.exists() and not dead_dir.exists()


# --------------------------------------------------------------------------------------------------------------
# the runner: stale scratch cleaned at start, a cell's scratch removed once its record is written
def test_run_cleans_dead_scratch_and_removes_its_workdir(tmp_path, bench_home, monkeypatch):
    from bench.data.audio import write_audio
    from bench.data.manifest import Example, Manifest
    from bench.methods import METHODS
    from bench.tasks.registry import TaskSpec
    from bench.runner.plan import RunOptions, run_benchmark

    monkeypatch.setitem(METHODS, "scratchy", f"{__name__}:Scratchy")
    task = TaskSpec(name="toy", version=1, family="KS", kind="classification", origin="synthetic",
                    description="toy", labels=["a", "b"], metrics=["accuracy"],
                    data={"source": "manifest", "path": "x.jsonl"})
    exs = [Example(id=f"{s}{i}", path=f"{s}{i}.wav", label="ab"[i % 2], split=s, speaker=f"{s}{i}")
           for s in ("train", "valid", "test") for i in range(2)]
    for e in exs:
        write_audio(bench_home / e.path, np.full(1600, 0.01, np.float32))
    manifest = Manifest(exs, bench_home)
    monkeypatch.setattr("bench.data.sources.prepare_manifest", lambda spec, *a, **k: manifest)
    results = tmp_path / "results"
    stale = results / ".work" / "toy" / "scratchy" / f".seed-0.{DEAD_PID}-0a1b2c3d.tmp"
    stale.mkdir(parents=True)
    (stale / "ckpt.pt").write_text("left by a killed run")
    summary = run_benchmark([task], ["scratchy"], RunOptions(), results, log=lambda s: None)
    assert len(summary.written) == 1
    assert SEEN and SEEN[0].name.startswith(f".seed-0.{os.getpid()}-") and SEEN[0].parent.name == "scratchy"
    assert not (results / ".work").exists()  # the dead run's scratch and this run's are both gone


SEEN: list[Path] = []


class Scratchy(Method):
    name = "scratchy"

    @dataclass
    class Config:
        pass

    def count_parameters(self, task, ctx):
        return ParamCount(0, 0, 0)

    def run(self, task, manifest, ctx):
        ctx.workdir.mkdir(parents=True)
        (ctx.workdir / "best.pt").write_text("checkpoint")
        SEEN.append(ctx.workdir)
        test = manifest.split("test")
        return MethodOutput(Predictions([e.id for e in test], [e.label for e in test], ["a"] * len(test)),
                            ParamCount(0, 0, 0))


# --------------------------------------------------------------------------------------------------------------
# OS errors while writing: one line naming the file and what it is; no temp left
def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_writing_text_names_the_file(tmp_path, monkeypatch):
    from bench.data.manifest import write_text_atomic

    monkeypatch.setattr(os, "fsync", _enospc)
    target = tmp_path / "results" / "rec.json"
    with pytest.raises(BenchError) as err:
        write_text_atomic(target, "{}", what="result record")
    assert str(target) in err.value.message and "result record" in err.value.message
    assert "No space left on device" in err.value.message and "\n" not in err.value.message
    assert list(target.parent.iterdir()) == []  # the half-written temp is gone


def test_disk_full_writing_a_cache_array_names_the_file(tmp_path, monkeypatch):
    from bench.core.arrayfile import ShardedArrayStore, save_array_atomic

    monkeypatch.setattr(np.lib.format, "write_array", _enospc)
    with pytest.raises(BenchError, match=r"cannot write cache array .*x\.npy: No space left on device"):
        save_array_atomic(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(BenchError, match="No space left on device"):
        ShardedArrayStore(tmp_path / "store").put_many(["a"], [np.zeros((2, 3))])
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_permission_error_writing_audio_names_the_file(tmp_path, monkeypatch):
    import soundfile as sf

    from bench.data.audio import write_audio

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(sf, "write", denied)
    with pytest.raises(BenchError, match=r"cannot write audio .*u\.wav: Permission denied"):
        write_audio(tmp_path / "wav" / "u.wav", np.zeros(160, np.float32))
    assert list((tmp_path / "wav").iterdir()) == []


@pytest.mark.slow
def test_two_concurrent_bench_runs_on_one_home_build_once_and_agree(tmp_path):
    """Two `bench run` at once on one BENCH_HOME (tiny KS, linear on fbank, separate results directories): both
    exit 0, the built-in task is generated once (the other process waits on its lock), and the two records are
    equal in configuration, predictions and scores."""
    env = {"BENCH_HOME": str(tmp_path / "home"), "COLUMNS": "200"}

    def cmd(i):
        return ["-m", "bench.cli", "run", "--tasks", "builtin-ks", "--methods", "linear", "--upstream", "fbank",
                "--size", "tiny", "--max-epochs", "3", "--results", str(tmp_path / f"r{i}"), "--no-compare"]

    procs = [_spawn(*cmd(0), env=env)]
    time.sleep(0.3)
    procs.append(_spawn(*cmd(1), env=env))
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    builds = list((tmp_path / "home" / "data" / "builtin-ks").glob("tiny-seed0*"))
    assert [b.name for b in builds] == ["tiny-seed0"]  # one build, no leftover temp
    recs = [json.loads(next((tmp_path / f"r{i}").rglob("seed-0.json")).read_text()) for i in range(2)]
    assert recs[0]["config_hash"] == recs[1]["config_hash"]
    assert recs[0]["outputs"] == recs[1]["outputs"] and recs[0]["scores"] == recs[1]["scores"]


def test_temps_of_another_host_are_kept_until_old(tmp_path):
    """On a cluster the results directory is shared: a pid of another host says nothing here, so its temps are
    kept (its job may be running) until FOREIGN_TEMP_AGE_S old; this host's dead temps go at once."""
    from bench.core.locks import FOREIGN_TEMP_AGE_S, this_host

    mine_dead = tmp_path / f".a.json.{DEAD_PID}-0a1b2c3d@{this_host()}.tmp"
    foreign = tmp_path / f".b.json.{DEAD_PID}-0a1b2c3d@node-017.tmp"
    foreign_old = tmp_path / f".c.json.{DEAD_PID}-0a1b2c3d@node-017.tmp"
    for f in (mine_dead, foreign, foreign_old):
        f.write_text("x")
    old = time.time() - FOREIGN_TEMP_AGE_S - 60
    os.utime(foreign_old, (old, old))
    assert sorted(clean_stale_temps([tmp_path])) == sorted([mine_dead, foreign_old])
    assert foreign.exists()
    assert temp_path(tmp_path / "x").name.endswith(f"@{this_host()}.tmp")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_disk_full_writing_audio_names_the_cause_not_system_error(tmp_path, monkeypatch):
    """The kernel's own ENOSPC (writes to /dev/full fail with it), not libsndfile's "System error."."""
    import builtins

    from bench.data import audio

    monkeypatch.setattr(audio, "open", lambda path, mode: builtins.open("/dev/full", "wb"), raising=False)
    with pytest.raises(BenchError) as err:
        audio.write_audio(tmp_path / "wav" / "u.wav", np.zeros(16000, np.float32))
    msg = err.value.message
    assert f"cannot write audio {tmp_path / 'wav' / 'u.wav'}: No space left on device [errno 28: ENOSPC]" == msg
    assert list((tmp_path / "wav").iterdir()) == []
