"""The fixed malloc mmap threshold (bench/core/heap.py): set for the process, exported to the processes it starts,
a user's own value kept."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.core import heap


def test_bench_sets_the_threshold_and_exports_it(monkeypatch):
    monkeypatch.delenv(heap.ENV, raising=False)
    done = heap.bound_heap()
    assert os.environ[heap.ENV] == str(heap.MMAP_THRESHOLD)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).mallopt
        except AttributeError:  # not glibc
            assert not done
        else:
            assert done
    child = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{heap.ENV}'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(heap.MMAP_THRESHOLD)  # workers and Slurm jobs start with it


def test_a_users_value_is_kept(monkeypatch):
    monkeypatch.setenv(heap.ENV, "2097152")
    assert heap.bound_heap() is False
    assert os.environ[heap.ENV] == "2097152"


def test_every_bench_command_sets_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != heap.ENV}
    env["BENCH_HOME"] = str(tmp_path)
    code = ("import os, sys\nfrom typer.testing import CliRunner\nfrom bench.cli import app\n"
            "r = CliRunner().invoke(app, ['tasks'])\nassert r.exit_code == 0, r.output\n"
            f"print(os.environ.get('{heap.ENV}'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(heap.MMAP_THRESHOLD)
