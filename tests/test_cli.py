"""The command line: instant help, one-screen errors (tracebacks only with --debug)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BENCH = [sys.executable, "-m", "bench.cli"]


def bench(*args, env=None, cwd=None):
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, cwd=cwd)


def test_help_and_listing_do_not_import_torch():
    r = subprocess.run([sys.executable, "-c", "import sys, bench.cli, bench.registry, bench.data.sources;"
                        "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert r.stdout.strip() == "False"


def test_unknown_task_is_one_screen_with_suggestion():
    r = bench("run", "--tasks", "builtin-kss")
    assert r.returncode == 2
    assert "unknown task or group 'builtin-kss'" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) < 10


def test_debug_shows_the_traceback():
    r = bench("--debug", "run", "--tasks", "no-such-task")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_bad_option_syntax_names_the_option():
    r = bench("run", "--tasks", "all", "--option", "lr=1")
    assert r.returncode == 2 and "METHOD.KEY=VALUE" in r.stderr


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["compare", "--help"], ["data", "--help"]])
def test_help_pages(args):
    r = bench(*args)
    assert r.returncode == 0 and "Usage" in r.stdout


def test_bad_task_file_is_reported_with_its_path(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: x\nversion: 1\nfamily: KS\nbogus: 1\n")
    r = bench("tasks", "--task-dir", str(tmp_path))
    assert r.returncode == 2 and "broken.yaml" in r.stderr and "bogus: unknown field" in r.stderr
