"""The foundation slice end to end, as a user runs it: `bench run` on the built-in KS task with the linear
baseline, then `bench compare`. Held-out voices; the baseline must beat chance (1/12) by a clear margin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def bench(*args, home: Path, cwd: Path):
    env = {**os.environ, "BENCH_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("slice")
    args = ["run", "--tasks", "builtin-ks", "--methods", "linear", "--upstream", "fbank", "--results", str(root / "results"),
            "--leaderboards", str(root / "lb")]
    first = bench(*args, home=root / "home", cwd=root)
    second = bench(*args, home=root / "home", cwd=root)
    return root, first, second


def test_run_writes_one_complete_record(slice_run):
    root, first, _ = slice_run
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (rec_path,) = (root / "results" / "builtin-ks" / "linear" / "fbank").glob("*/seed-0.json")  # <group hash>/
    rec = json.loads(rec_path.read_text())
    assert rec["task_origin"] == "synthetic"
    assert rec["params"]["trainable"] == 64_780  # SUPERB utterance-level head on fbank (240-d, 1 layer), 12 classes
    for key in ("versions", "git_revision", "config_hash", "group_hash", "wall_time_s", "peak_rss_mb", "device",
                "environment"):
        assert rec[key]
    assert rec["data"]["manifest_sha256"] and rec["data"]["sizes"]["test"] > 0
    assert len(rec["outputs"]["ids"]) == rec["predictions"]["n"] == rec["data"]["sizes"]["test"]
    # Held-out voices, chance 1/12. SUPERB's mean-pooled linear head on CMVN'd fbank is nearly blind (SUPERB's
    # FBANK row: KS 8.63 %, i.e. chance), so "clearly above chance" is a significance test, not a big margin:
    # the number correct must be implausible under guessing (one-sided binomial p < 1e-4).
    from scipy.stats import binom

    n = rec["predictions"]["n"]
    correct = round(rec["scores"]["accuracy"] * n)
    assert binom.sf(correct - 1, n, 1 / 12) < 1e-4, (correct, n, rec["scores"])


def test_rerun_reuses_the_record_and_extracts_nothing(slice_run):
    root, first, second = slice_run
    assert second.returncode == 0
    assert "0 record(s) written, 1 reused" in second.stdout


def test_compare_writes_leaderboards(slice_run):
    root, first, _ = slice_run
    md = (root / "lb" / "leaderboard-scores.md").read_text()
    assert "builtin-ks (synthetic) [accuracy ↑]" in md and "linear (fbank)" in md
    r = bench("compare", str(root / "results"), "--out", str(root / "lb2"), "--all-metrics",
              home=root / "home", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "macro_f1" in (root / "lb2" / "leaderboard-scores.md").read_text()
