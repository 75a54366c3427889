"""What bench prints reads in an 80-column terminal and in a log: every table fits with each task, method and word
whole; piped to a file, a run writes plain progress lines (stage, done/total, elapsed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.progress import PlainProgress, format_elapsed, live_progress

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "leaderboards" / "records" / "builtin"
BENCH = [sys.executable, "-m", "bench.cli"]


def bench80(*args, env=None, cwd=None):
    r = subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=600, cwd=cwd,
                       env={**os.environ, "COLUMNS": "80", **(env or {})})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def assert_fits(out: str, width: int = 80) -> None:
    """Every line of the tables fits; log lines (progress, the paths written) may be longer, never cut."""
    long = [line for line in out.splitlines() if len(line.rstrip()) > width
            and not line.startswith(("[progress] ", "  /"))]
    assert not long, long
    assert "…" not in out  # nothing shortened with an ellipsis


def tokens(out: str) -> set[str]:
    return {t.strip(",;:()") for line in out.splitlines() for t in line.split()}


def test_compare_at_80_columns_shows_every_task_and_method_whole(tmp_path):
    results = tmp_path / "records"
    for task in ("builtin-ks", "builtin-sf"):  # a classification and a generation task: every method, seed 0
        shutil.copytree(RECORDS / task, results / task, ignore=shutil.ignore_patterns("seed-[12].json"))
    out = bench80("compare", str(results), "--leaderboard-dir", str(tmp_path / "lb"), "--no-plot", "--details",
                  env={"BENCH_PROGRESS_INTERVAL": "0.01"})
    assert_fits(out)
    assert re.search(r"^\[progress\] bootstrap intervals and tests: \d+/\d+", out, flags=re.M), out
    words = tokens(out)
    assert {"builtin-ks", "builtin-sf", "accuracy", "slot_type_f1"} <= words
    methods = {p.name for task in ("builtin-ks", "builtin-sf") for p in (results / task).iterdir()}
    assert methods == {"linear", "lstm", "prompt-gslm", "prompt-gslm-lv", "prompt-pgslm", "prompt-pgslm-lv"}
    assert methods <= words
    legend = dict(re.findall(r"^  (S\d+)  (.+)$", out.split("systems:\n", 1)[1].split("\n\n", 1)[0], flags=re.M))
    assert "linear (whisper_tiny_en)" in legend.values() and "prompt-pgslm-lv (whisper_tiny_en)" in legend.values()
    # the compact row of builtin-ks has one cell per system, the best one marked
    row = next(line for line in out.splitlines() if line.strip().startswith("builtin-ks") and "*" in line)
    assert len(row.split()) == 1 + len(legend) and re.fullmatch(r"\d+\.\d\*", row.split()[2])
    assert re.search(r"^  S2  \d+\.\d\d \(n=1\) \[\d+\.\d\d, \d+\.\d\d\] \* best$", out, flags=re.M)  # --details
    assert f"  {tmp_path / 'lb' / 'leaderboard-scores.md'}\n" in out  # a path is never folded
    assert (tmp_path / "lb" / "leaderboard-scores.md").is_file()  # the files keep the full names
    assert "| task [metric] | linear (fbank) |" in (tmp_path / "lb" / "leaderboard-scores.md").read_text()


def test_many_systems_are_split_over_tables_that_fit():
    import pandas as pd

    from bench.results.terminal import leaderboard_lines

    systems = [f"run{r}: {m} (whisper_tiny_en) [lr=0.001, limit=20] (smoke)" for r in range(3)
               for m in ("linear", "prompt-gslm-lv", "prompt-pgslm-lv", "lstm")]
    tasks = ["builtin-prosody", "ic-fluent-speech-commands"]
    rows = [dict(task=t, origin="synthetic" if t.startswith("builtin") else "corpus", system=s, metric="accuracy",
                 higher_is_better=True, mean=0.123 * (i + 1) / 4, std=0.01, n=3, ci_low=0.1, ci_high=0.2,
                 p_vs_best=0.5, best=i == 0) for t in tasks for i, s in enumerate(systems)]
    params = pd.DataFrame({s: [199_961, 6_128] for s in systems}, index=tasks)
    lines = leaderboard_lines(pd.DataFrame(rows), params, width=80)
    out = "\n".join(lines)
    assert_fits(out)
    assert sum(line.startswith("task ") for line in lines) >= 4  # scores and parameters, each in several tables
    assert "S12" in out and all(s in " ".join(out.split()) for s in systems)
    assert "† synthetic" in out and "builtin-prosody†" in tokens(out) and "ic-fluent-speech-commands" in tokens(out)
    assert "200k" in out and "6.13k" in out


def test_tasks_at_80_columns_keep_names_and_words_whole():
    out = bench80("tasks")
    assert_fits(out)
    from bench.tasks.metrics import METRICS
    from bench.tasks.registry import TaskRegistry

    words = tokens(out)
    specs = list(TaskRegistry())
    assert {s.name for s in specs} <= words and {"classification", "generation", "synthetic"} <= words
    assert {m for s in specs for m in s.metrics} <= words and set(METRICS) & words
    detail = bench80("tasks", "--details", "--tasks", "ks")
    assert_fits(detail)
    assert "speech_commands_v0.01/" in tokens(detail)  # where to get the data, a whole word


def test_status_and_params_fit_80_columns(tmp_path):
    from bench.runner.runfile import CellEntry, new_run

    results = tmp_path / "results"
    run = new_run(results, "local")
    label = "ic-fluent-speech-commands × prompt-pgslm-lv × whisper_tiny_en × seed 2"
    run.cells = [CellEntry(label, "x/seed-2.json", "0" * 64, error="RuntimeError: " + "a long explanation " * 12)]
    run.finished = True
    run.write()
    r = subprocess.run([*BENCH, "status", str(results)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert_fits(r.stdout)
    assert label in " ".join(r.stdout.split()) and "failed" in r.stdout and "explanation" in tokens(r.stdout)
    out = bench80("params", "-m", "lstm", "-t", "builtin-asr", "-u", "fbank")
    assert_fits(out)
    assert {"trainable", "bilstm", "lstm", "builtin-asr"} <= tokens(out)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_plain_progress_writes_stage_done_total_and_elapsed_at_the_interval():
    lines, clock = [], Clock()
    p = PlainProgress(lines.append, interval=30, clock=clock)
    advance = p("building builtin-ks", 4)
    clock.t += 10
    advance()
    assert lines == []  # not yet 30 s since the start
    clock.t += 25
    advance()
    assert lines == ["[progress] building builtin-ks: 2/4, 35 s elapsed"]
    clock.t += 40  # a long step: the heartbeat reports the stage that moved last
    p.heartbeat()
    assert lines[-1] == "[progress] building builtin-ks: 2/4, 1 min 15 s elapsed"
    advance(2)  # a stage that was reported says when it ends
    assert lines[-1] == "[progress] building builtin-ks: 4/4 (done), 1 min 15 s elapsed"
    clock.t += 31  # between stages the run still says it is working
    p.heartbeat()
    assert lines[-1] == "[progress] working (after building builtin-ks), 1 min 46 s elapsed"
    n = len(lines)
    clock.t += 5
    p.heartbeat()
    assert len(lines) == n
    assert format_elapsed(3725) == "1 h 02 min"


def test_live_progress_off_a_terminal_is_plain_lines_and_can_be_turned_off(monkeypatch):
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=80)
    monkeypatch.setenv("BENCH_PROGRESS_INTERVAL", "0.01")
    with live_progress(console) as progress:
        advance = progress("features fbank", 3)
        import time

        time.sleep(0.05)
        advance()
        time.sleep(0.05)  # the heartbeat thread writes while nothing advances
    assert re.search(r"^\[progress\] features fbank: 1/3, \d+ s elapsed$", buf.getvalue(), flags=re.M), buf.getvalue()
    monkeypatch.setenv("BENCH_PROGRESS_INTERVAL", "0")
    buf.truncate(0)
    with live_progress(console) as progress:
        progress("features fbank", 3)(3)
    assert buf.getvalue() == ""


def test_a_run_piped_to_a_file_writes_progress_lines(tmp_path):
    """`bench run ... > log.txt` with a short interval: lines naming the stage, done/total and the elapsed time
    for the data build (or its reuse), the feature extraction and the cells."""
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        r = subprocess.run([*BENCH, "run", "--tasks", "builtin-ks", "--methods", "linear", "--upstream", "fbank",
                            "--size", "tiny", "--limit", "6", "--max-epochs", "2", "--no-compare",
                            "--results", str(tmp_path / "results")], stdout=f, stderr=subprocess.STDOUT, text=True,
                           timeout=600, env={**os.environ, "BENCH_PROGRESS_INTERVAL": "0.05", "COLUMNS": "80",
                                             "BENCH_HOME": str(tmp_path / "home")})  # its own: nothing cached
    text = log.read_text()
    assert r.returncode == 0, text[-3000:]
    found = re.findall(r"^\[progress\] (.+): (\d+)/(\d+)(?: \(done\))?, ((?:\d+ h )?(?:\d+ min )?\d+ s) elapsed$",
                       text, flags=re.M)
    stages = {s for s, *_ in found}
    assert any(s.startswith("features fbank") for s in stages), stages
    assert any(s.startswith("cells") for s in stages), stages
    assert all(int(done) <= int(total) for _, done, total, _ in found)
    assert "\x1b[" not in text  # plain text, no terminal escapes


def test_importing_the_api_imports_neither_torch_nor_pandas():
    r = subprocess.run([sys.executable, "-c", "import sys, bench.api; "
                        "print('torch' in sys.modules, 'pandas' in sys.modules)"], capture_output=True, text=True)
    assert r.stdout.strip() == "False False", r.stdout + r.stderr


def test_api_runs_a_tiny_grid_and_loads_it_as_a_dataframe(tmp_path):
    from bench import api

    results = tmp_path / "results"
    paths = api.run(tasks="builtin-ks", methods=["linear"], seeds=[0, 1], results=results, upstream="fbank",
                    size="tiny", limit=6, max_epochs=2, options={"linear": {"lr": 1e-3}})
    assert len(paths) == 2 and all(p.is_file() and p.is_relative_to(results) for p in paths)
    df = api.load_results(results)
    assert len(df) == 2 and list(df["seed"]) == [0, 1]
    row = df.iloc[0]
    assert (row["task"], row["method"], row["upstream"], row["recipe"]) == ("builtin-ks", "linear", "fbank",
                                                                            "cpu-default")
    assert row["main_metric"] == "accuracy" and row["score"] == row["accuracy"] and 0 <= row["score"] <= 1
    assert "macro_f1" in df.columns and bool(row["synthetic"]) and bool(row["smoke"]) and row["limit"] == 6
    assert row["trainable"] == 64_780 and df["group"].nunique() == 1 and df["config_hash"].nunique() == 2
    assert api.run(tasks="builtin-ks", methods="linear", seeds=[0, 1], results=results, upstream="fbank",
                   size="tiny", limit=6, max_epochs=2, options=["linear.lr=0.001"]) == paths  # reused
    from bench.core.errors import BenchError

    with pytest.raises(BenchError, match="unknown option 'nope'"):
        api.run(tasks="builtin-ks", methods="linear", results=results, options={"linear": {"nope": 1}})
    committed = api.load_results(RECORDS)
    assert len(committed) == 216 and set(committed["method"]) >= {"linear", "lstm", "prompt-gslm-lv"}


def test_published_columns_join_the_table_as_codes():
    import pandas as pd

    from bench.results.reference import reference_table
    from bench.results.terminal import leaderboard_lines

    ref = reference_table("speechprompt-v2", tasks=["ks-speech-commands-v1"])
    rows = [dict(task="ks-speech-commands-v1", origin="corpus", system="linear (whisper_tiny_en)", metric="accuracy",
                 higher_is_better=True, mean=0.9, std=0.0, n=1, ci_low=0.8, ci_high=0.95, p_vs_best=float("nan"),
                 best=True)]
    out = "\n".join(leaderboard_lines(pd.DataFrame(rows), None, ref, width=80))
    assert_fits(out)
    columns = [c for c in ref.columns if c != "task"]
    assert all(f"paper: {c}" in out for c in columns)
    row = next(line for line in out.splitlines() if line.startswith("  ks-speech-commands-v1"))
    assert row.split()[1:] == ["90.0*", *[str(ref[c].iloc[0]) for c in columns]]
