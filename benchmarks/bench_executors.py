"""Executors measured (issue #16): the cell stage of ``--jobs 2`` vs ``--jobs 1`` on linear/lstm cells, and the
per-cell overhead of a Slurm array job. A script that prints figures, never a test.

1. ``--jobs``: a grid of linear and lstm cells on the default built-in suite (Whisper tiny.en features, extracted
   once before timing). Each timing is ``bench run --force`` (every cell recomputed, features cached) minus the
   same command without ``--force`` (the plan alone: data, audio checks and caches looked up, every cell reused),
   so it is the cell stage. Goal: >= 1.6x on 2 cores.
2. Slurm (needs a controller, e.g. ``.ci/slurm-up``): N tiny cells as one array, one task at a time, against the
   same N cells run serially in one local process. Per-cell overhead = (array wall - local wall) / N: what a job
   costs beyond the cell (queueing, sbatch, a Python start, imports, submitit's pickles), with one cell per task
   and with ``cells_per_job`` auto (a task runs several cells and pays its start once). Goal: <= 2 s.

    .venv/bin/python benchmarks/bench_executors.py [--skip-jobs] [--skip-slurm] [--cells 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = str(Path(sys.executable).with_name("bench"))


def bench_run(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    out = subprocess.run([BENCH, "run", "--no-compare", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"bench run {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return wall


def cell_seconds(results: Path) -> list[float]:
    return [json.loads(p.read_text())["wall_time_s"] for p in results.rglob("seed-*.json")]


def jobs_speedup(env: dict, repeats: int) -> None:
    grid = ["--tasks", "builtin-ks,builtin-scr,builtin-ic,builtin-lid,builtin-asr", "--methods", "linear,lstm",
            "--seeds", "0,1"]
    results = Path(env["BENCH_HOME"]) / "jobs-results"
    print("--jobs: 5 tasks (4 linear, 1 lstm) x 2 seeds = 10 cells, default size, whisper_tiny_en")
    print(f"  first run (data, features, cells): {bench_run([*grid, '--results', str(results)], env):.0f} s")
    figures = {}
    for jobs in (1, 2):
        cells, plans = [], []
        for _ in range(repeats):
            forced = bench_run([*grid, "--results", str(results), "--force", "--jobs", str(jobs)], env)
            plan = bench_run([*grid, "--results", str(results), "--jobs", str(jobs)], env)
            cells.append(forced - plan)
            plans.append(plan)
        figures[jobs] = statistics.median(cells)
        print(f"  --jobs {jobs}: cell stage {figures[jobs]:.1f} s (runs {[round(c, 1) for c in cells]}; the plan "
              f"alone {statistics.median(plans):.1f} s)")
    print(f"  speed-up --jobs 2 vs 1: {figures[1] / figures[2]:.2f}x (goal >= 1.6x)")


def slurm_overhead(env: dict, n: int) -> None:
    if shutil.which("sbatch") is None:
        print("Slurm: no sbatch on PATH (run .ci/slurm-up as root): not measured")
        return
    seeds = f"0-{n - 1}"
    grid = ["--tasks", "builtin-ks", "--methods", "linear", "--upstream", "fbank", "--size", "tiny",
            "--max-epochs", "1", "--seeds", seeds, "--jobs", "1"]
    home = Path(env["BENCH_HOME"])
    bench_run([*grid, "--results", str(home / "warm")], env)  # data and features built once, outside the timing
    local_dir, slurm_dir = home / "local", home / "slurm"
    local = bench_run([*grid, "--results", str(local_dir)], env)
    own_local = sum(cell_seconds(local_dir))
    print(f"Slurm: {n} tiny cells (builtin-ks x linear on fbank, 1 epoch), one array task at a time")
    print(f"  local serial: {local:.1f} s wall, the cells' own {own_local:.1f} s")
    for per_job in (1, None):
        out = home / f"slurm-{per_job}"
        extra = ["--slurm", f"cells_per_job={per_job}"] if per_job else []
        slurm = bench_run([*grid, "--results", str(out), "--executor", "slurm", "--slurm", "stage_job=false",
                           "--slurm", "array_parallelism=1", "--slurm", "poll_s=0.5", *extra], env)
        what = "one cell per array task" if per_job else "cells_per_job auto (all in the one task that may run)"
        print(f"  slurm, {what}: {slurm:.1f} s wall -> {(slurm - local) / n:.2f} s per cell more than local "
              f"(goal <= 2 s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-jobs", action="store_true")
    ap.add_argument("--skip-slurm", action="store_true")
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-executors-"))
    env = {**os.environ, "BENCH_HOME": str(home)}
    print(f"{os.cpu_count()} CPU(s); BENCH_HOME {home}")
    if not args.skip_jobs:
        jobs_speedup(env, args.repeats)
    if not args.skip_slurm:
        slurm_overhead(env, args.cells)
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
