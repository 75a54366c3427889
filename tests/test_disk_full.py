"""A full disk under the results directory (or the home, or the scratch) is one line naming the path and the cause;
the run summary is still printed, no partial or temporary file is left, and `bench run` exits 1."""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.core.errors import BenchError
from bench.data.audio import write_audio
from bench.data.manifest import Example, Manifest
from bench.methods import METHODS
from bench.methods.base import Method, MethodOutput, ParamCount, Predictions
from bench.tasks.registry import TaskSpec


class Majority(Method):
    """The most frequent training label: a cell that trains nothing, so the test is about the writes."""

    name = "majority"

    @dataclass
    class Config:
        pass

    def count_parameters(self, task, ctx):
        return ParamCount(trainable=0, frozen=0, stored_per_task=0)

    def run(self, task, manifest, ctx):
        top = manifest.labels("train").most_common(1)[0][0]
        test = manifest.split("test")
        return MethodOutput(Predictions([e.id for e in test], [e.label for e in test], [top] * len(test)),
                            self.count_parameters(task, ctx))


@pytest.fixture
def toy_cli(monkeypatch, bench_home, tmp_path):
    """`bench run` arguments for a toy task (its audio under BENCH_HOME) and the test-only method."""
    monkeypatch.setitem(METHODS, "majority", f"{__name__}:Majority")
    spec = dict(name="toy", version=1, family="KS", kind="classification", origin="synthetic", description="toy",
                labels=["a", "b"], metrics=["accuracy"], data={"source": "manifest", "path": "x.jsonl"})
    examples = [Example(id=f"{s}{i}", path=f"{s}{i}.wav", label="a" if i % 3 else "b", split=s, speaker=f"{s}{i}")
                for s in ("train", "valid", "test") for i in range(6)]
    for e in examples:
        write_audio(bench_home / e.path, np.full(1600, 0.01, np.float32))
    manifest = Manifest(examples, bench_home)
    monkeypatch.setattr("bench.data.sources.prepare_manifest", lambda task, *a, **k: manifest)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "toy.yaml").write_text(yaml.safe_dump(spec))
    TaskSpec(**spec)  # the file is a valid task
    return ["run", "--tasks", "toy", "--methods", "majority", "--task-dir", str(tasks), "--seeds", "0-2",
            "--jobs", "1", "--no-compare"]


def _invoke(args, monkeypatch):
    from typer.testing import CliRunner

    from bench import cli

    monkeypatch.setattr(cli.console, "width", 400)  # a line per message, as in a wide terminal
    return CliRunner().invoke(cli.app, args)


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def _check_one_cause_and_summary(out: str, results: Path) -> None:
    lines = out.splitlines()
    assert sum(line.startswith("disk full: ") for line in lines) == 1, out  # said once, as it happened
    first = next(line for line in lines if line.startswith("disk full: "))
    assert str(results) in first and "No space left on device [errno 28" in first
    assert "0 record(s) written, 0 reused, 0 skipped, 3 failed" in out  # the summary
    assert sum("not started: the disk is full" in line for line in lines if line.startswith("  failed")) == 2
    assert "exit 1" in out


@pytest.fixture
def full_fs(tmp_path):
    """A 256 KiB tmpfs with no block left (skipped where mounting is not permitted: not root, no CAP_SYS_ADMIN)."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot mount a small file system here: {err}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()}")
    try:
        (mnt / "results").mkdir()
        with open(mnt / "filler", "wb", buffering=0) as f:  # fill it to the last block
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as err:
                assert err.errno == errno.ENOSPC
        assert os.statvfs(mnt).f_bavail == 0
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_a_full_results_file_system_is_one_line_the_summary_and_exit_1(toy_cli, full_fs, monkeypatch):
    results = full_fs / "results"
    r = _invoke([*toy_cli, "--results", str(results)], monkeypatch)
    assert r.exit_code == 1, r.output
    _check_one_cause_and_summary(r.output, results)
    assert "run file not written: cannot write run file" in r.output  # the run file's own write, one line too
    assert _temps(full_fs) == [] and list(results.rglob("*.json")) == []


def test_a_writer_failing_with_enospc_is_one_line_the_summary_and_exit_1(toy_cli, tmp_path, monkeypatch):
    """The same with the disk-full error raised by the writer itself (no mount needed): the record's write
    fails at its fsync; the temporary file is removed and no cell starts after the first failure."""
    real_fsync = os.fsync

    def full(fd):
        if ".seed-" in os.readlink(f"/proc/self/fd/{fd}"):  # the records' temporaries
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell which file an fsync is for")
    monkeypatch.setattr(os, "fsync", full)
    results = tmp_path / "results"
    r = _invoke([*toy_cli, "--results", str(results)], monkeypatch)
    assert r.exit_code == 1, r.output
    _check_one_cause_and_summary(r.output, results)
    assert _temps(results) == [] and list(results.rglob("seed-*.json")) == []
    assert list((results / ".runs").glob("*.json"))  # the run file (its own writes succeeded) says what failed


def test_a_short_array_write_on_a_full_disk_names_the_cause(tmp_path, monkeypatch):
    """numpy reports a failed write as "N requested and M written", without errno: on a full file system the
    cache writer's message says it is full; the temporary is removed."""
    from bench.core import arrayfile

    def short_write(f, arr, allow_pickle=False):
        f.write(b"\0" * 16)
        raise OSError("3456000 requested and 16 written")

    monkeypatch.setattr(arrayfile.np.lib.format, "write_array", short_write)
    monkeypatch.setattr(arrayfile, "disk_is_full", lambda path: True)
    with pytest.raises(BenchError, match=r"cannot write cache array .*x\.npy: No space left on device \[errno 28"):
        arrayfile.save_array_atomic(tmp_path / "x.npy", np.zeros(4))
    monkeypatch.setattr(arrayfile, "disk_is_full", lambda path: False)
    with pytest.raises(BenchError, match="3456000 requested and 16 written"):  # not full: the error as it came
        arrayfile.save_array_atomic(tmp_path / "x.npy", np.zeros(4))
    assert list(tmp_path.iterdir()) == []


def test_training_writes_no_checkpoint_it_never_reads(tmp_path, monkeypatch):
    """The best weights stay in memory: fit leaves no ``*-best.pt`` (it was written every improving epoch and
    never read back)."""
    import torch

    from bench.methods.training import TrainSettings, fit

    monkeypatch.chdir(tmp_path)
    model = torch.nn.Linear(2, 2)
    x, y = torch.randn(8, 2), torch.tensor([0, 1] * 4)

    def loss(batch):
        return torch.nn.functional.cross_entropy(model(x[batch]), y[batch])

    def validate():
        value = float(torch.nn.functional.cross_entropy(model(x), y))
        return (value,), {"loss": value}

    fit(model, 8, loss, validate, TrainSettings(lr=0.1, batch_size=4, max_epochs=3, patience=3), seed=0,
        log=lambda s: None)
    assert list(tmp_path.rglob("*")) == []


def test_a_torch_checkpoint_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """save_torch_atomic (for checkpoints under the results' scratch): the write's ENOSPC names the file, not
    torch's "unexpected pos"; no temporary is left. A torch error over an ENOSPC still names the cause."""
    import torch

    from bench.data.manifest import save_torch_atomic
    from bench.runner.cells import error_line, is_disk_full

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BenchError, match=r"cannot write checkpoint .*state\.pt: No space left on device") as e:
        save_torch_atomic({"w": torch.zeros(3)}, tmp_path / "w" / "state.pt")
    assert is_disk_full(e.value) and list((tmp_path / "w").iterdir()) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    save_torch_atomic({"w": torch.ones(3)}, tmp_path / "w" / "state.pt")
    assert torch.load(tmp_path / "w" / "state.pt", weights_only=True)["w"].tolist() == [1.0, 1.0, 1.0]

    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as err:
        assert is_disk_full(err)
        assert error_line(err).endswith("(No space left on device [errno 28])")


def test_a_built_in_task_build_that_fails_leaves_no_half_written_data(bench_home, monkeypatch):
    """The suite generator fails half-way (disk full writing a clip): its task directory is removed, so no
    partial data is left and the next run builds afresh."""
    import importlib

    from bench.data.sources import builtin_dir, prepare_manifest
    from bench.tasks.registry import TaskRegistry

    spec = TaskRegistry().select("builtin-ks")[0]
    module = importlib.import_module(f"bench.data.builtin.{spec.data.generator}")

    def half_build(spec, out, *a, **k):
        write_audio(out / "wav" / "train" / "one.wav", np.zeros(160, np.float32))
        raise BenchError(f"cannot write audio {out / 'wav' / 'train' / 'two.wav'}: No space left on device [errno 28]")

    monkeypatch.setattr(module, "build", half_build)
    with pytest.raises(BenchError, match="No space left on device"):
        prepare_manifest(spec, "tiny", 0)
    out = builtin_dir(spec, "tiny", 0, None)
    assert not out.exists() and _temps(out.parent) == []
