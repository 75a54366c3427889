"""The fixed malloc mmap threshold (bench/core/heap.py): set for the process, exported to the processes it starts,
a user's own value kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def test_a_run_of_built_in_tasks_only_keeps_glibcs_heap(monkeypatch):
    monkeypatch.delenv(heap.ENV, raising=False)
    assert heap.bound_heap_for(["builtin", "builtin"]) is False
    assert heap.ENV not in os.environ
    heap.bound_heap_for(["builtin", "corpus"])
    assert os.environ[heap.ENV] == str(heap.MMAP_THRESHOLD)
    monkeypatch.delenv(heap.ENV)
    heap.bound_heap_for(["builtin"], size="large")  # 7.5x the default size: bounded as a corpus
    assert os.environ[heap.ENV] == str(heap.MMAP_THRESHOLD)


RUNS = {"cli": "from typer.testing import CliRunner\nfrom bench.cli import app\n"
                "r = CliRunner().invoke(app, ['run', '--tasks', '{task}', '--methods', 'linear', '--size', 'huge'])\n"
                "assert r.exit_code != 0 and '--size' in str(r.exception), r.output\n",
        "api": "from bench import api\nfrom bench.core.errors import BenchError\n"
                "try:\n    api.run(tasks='{task}', size='huge')\n"
                "except BenchError as e:\n    assert 'size' in str(e)\n"}


@pytest.mark.parametrize("entry", sorted(RUNS))
@pytest.mark.parametrize("task, bounded", [("builtin-ks", False), ("ks-speech-commands-v1", True)])
def test_bench_run_bounds_the_heap_for_a_corpus_task_only(tmp_path, task, bounded, entry):
    """`bench run` and the API's run decide once they know their tasks, before any work (here: before refusing a
    bad size)."""
    env = {k: v for k, v in os.environ.items() if k != heap.ENV}
    env["BENCH_HOME"] = str(tmp_path)
    code = "import os\n" + RUNS[entry].format(task=task) + f"print(os.environ.get('{heap.ENV}'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == (str(heap.MMAP_THRESHOLD) if bounded else "None")
