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


_PROBE = '''
import ctypes, os, sys
from bench.core import heap
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print("skip"); sys.exit()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def mapped(n=4 << 20):
    before = libc.mallinfo2().hblks
    p = libc.malloc(n)
    now = libc.mallinfo2().hblks
    libc.free(p)
    return now - before
heap.bound_heap()
seen = [mapped()]
with heap.compute_heap():
    seen.append(mapped())
    with heap.data_heap():
        seen.append(mapped())
    seen.append(mapped())  # back in the loop's 32 MiB
seen.append(mapped())
print(" ".join(map(str, seen)))
'''


def _probe(env: dict) -> str:
    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("the malloc threshold is glibc's")
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=env).stdout
    if out.strip() == "skip":
        pytest.skip("no mallinfo2 here (glibc < 2.33 or not glibc)")
    return out.strip()


def test_a_4_mib_batch_tensor_is_mapped_outside_compute_loops_and_from_the_heap_inside():
    """At 1 MiB a 4 MiB block is its own mmap; inside compute_heap (32 MiB) it comes from the heap, inside a
    data_heap read within it mapped again, then from the heap until the loop ends."""
    env = {k: v for k, v in os.environ.items() if k != heap.ENV}
    assert _probe(env) == "1 0 1 0 1"


def test_compute_heap_leaves_a_users_threshold_alone():
    env = {**os.environ, heap.ENV: str(2 << 20)}
    assert _probe(env) == "1 1 1 1 1"
