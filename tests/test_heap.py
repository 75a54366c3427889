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


def test_torch_is_asked_for_huge_pages_on_large_tensors(monkeypatch):
    """bound_heap exports THP_MEM_ALLOC_ENABLE (a user's value kept); torch loaded with it page-aligns a 4 MiB
    tensor and advises huge pages for it (c10 alloc_cpu), without it the tensor sits after malloc's chunk header."""
    monkeypatch.delenv(heap.THP_ENV, raising=False)
    monkeypatch.setenv(heap.ENV, str(heap.MMAP_THRESHOLD))
    heap.bound_heap()
    assert os.environ[heap.THP_ENV] == "1"
    monkeypatch.setenv(heap.THP_ENV, "0")
    heap.bound_heap()
    assert os.environ[heap.THP_ENV] == "0"
    probe = "import torch; print(torch.empty(1 << 20, dtype=torch.float32).data_ptr() % 4096)"
    offsets = {}
    for value in ("1", "0"):
        env = {**os.environ, heap.THP_ENV: value}
        offsets[value] = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                        env=env).stdout.strip()
    if sys.platform.startswith("linux"):
        assert offsets == {"1": "0", "0": offsets["0"]} and offsets["0"] != "0"
