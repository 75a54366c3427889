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
    r = subprocess.run([sys.executable, "-c", "import sys, bench.cli, bench.tasks.registry, bench.data.sources;"
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


@pytest.mark.slow
def test_units_fit_and_pretrain_ulm_build_once_and_reuse(tmp_path):
    """`bench units fit` and `bench pretrain ulm` on the tiny built-in KS task: a quantizer and a fairseq-format LM
    directory, built on training audio, cached (the second call trains nothing and names the same files)."""
    from bench.lms.default_lm import DEFAULT_UPSTREAM, UNIT_LAYERS, locate_lm
    from bench.units.kmeans import KMeansQuantizer

    env = {"BENCH_HOME": str(tmp_path / "home")}
    fit = ["units", "fit", "--tasks", "builtin-ks", "--size", "tiny", "-k", "12", "--n-init", "1",
           "--out", str(tmp_path / "km.npy")]
    r = bench(*fit, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    q = KMeansQuantizer.load(tmp_path / "km.npy")
    assert q.num_units == 12 and q.dim == 384 and q.meta["utterances"] == 72  # the 72 training clips only
    assert q.meta["layer"] == UNIT_LAYERS[DEFAULT_UPSTREAM]  # Whisper tiny.en's probed unit layer
    r2 = bench(*fit[:-2], env=env)
    assert r2.returncode == 0 and f"hash {q.hash}" in r2.stdout

    pre = ["pretrain", "ulm", "--tasks", "builtin-ks", "--size", "tiny", "-k", "12", "--epochs", "1"]
    r = bench(*pre, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("unit LM: "))
    files = locate_lm(line.removeprefix("unit LM: ").strip())
    assert files.checkpoint.is_file() and files.dict.is_file() and files.units["K"] == 12
    stamp = files.checkpoint.stat().st_mtime_ns
    r2 = bench(*pre, env=env)
    assert r2.returncode == 0 and line in r2.stdout and files.checkpoint.stat().st_mtime_ns == stamp

    pro = ["pretrain", "ulm", "--prosody", "--tasks", "builtin-ks", "--size", "tiny", "-k", "12", "--epochs", "2"]
    r = bench(*pro, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("unit LM: "))
    ms = locate_lm(line.removeprefix("unit LM: ").strip())
    assert ms.checkpoint.is_file() and "prompt-pgslm.lm=" in r.stdout
    assert ms.units["quantizer_hash"] == files.units["quantizer_hash"]  # pGSLM reads the GSLM ULM's units
    assert ms.units["trained_on"] == {"builtin-ks": 72}


@pytest.mark.slow
def test_a_group_leaves_out_absent_corpora_but_a_named_corpus_is_required(tmp_path):
    """`--tasks ks` (builtin-ks + Speech Commands) on a machine without Speech Commands runs the built-in task and
    exits 0, naming the corpus it left out; naming the corpus itself is a skip and exit 1."""
    env = {"BENCH_HOME": str(tmp_path / "home")}
    common = ["--methods", "linear", "--upstream", "fbank", "--size", "tiny", "--max-epochs", "1", "--no-compare"]
    r = bench("run", "--tasks", "ks", *common, "--results", str(tmp_path / "a"), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left out" in r.stdout and "ks-speech-commands-v1" in r.stdout and "1 record(s) written" in r.stdout
    r = bench("run", "--tasks", "ks-speech-commands-v1", *common, "--results", str(tmp_path / "b"), env=env)
    assert r.returncode == 1 and "skipped" in r.stdout
