"""What bench's default ``--numerics pinned`` costs against ``--numerics fast`` (issue 26): the same small grid
timed in both modes on this machine, the ratio printed. A script that prints figures, never a test.

Each mode gets its own fresh ``BENCH_HOME`` (so neither reuses the other's features). Per mode:

- cold: the first ``bench run`` (data, features, units and cells: every computation the mode touches);
- cells: ``bench run --force`` again, ``--repeats`` times (features cached, every cell recomputed), median.

The repeated runs alternate between the modes, so a shared machine's load drifts over both alike (the two cold
runs do not: fast goes first). The goal in issue 26 is at
most 1.3x. What the libraries chose in each mode (torch's CPU capability, OpenBLAS's core) is read from a record.

    .venv/bin/python benchmarks/bench_numerics.py [--size tiny] [--limit 12] [--repeats 3]
        [--tasks builtin-ks,builtin-asr] [--methods linear,prompt-gslm] [--max-epochs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("fast", "pinned")


def bench_run(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--no-compare", *args], env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"bench run {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", default="builtin-ks,builtin-asr")
    ap.add_argument("--methods", default="linear,prompt-gslm")
    ap.add_argument("--max-epochs", type=int, default=1)
    a = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-numerics-"))
    base = {k: v for k, v in os.environ.items() if k != "BENCH_NUMERICS"}
    grid = ["--tasks", a.tasks, "--methods", a.methods, "--size", a.size, "--limit", str(a.limit),
            "--max-epochs", str(a.max_epochs), "--jobs", "1"]
    envs = {m: {**base, "BENCH_HOME": str(root / m / "home")} for m in MODES}
    args = {m: [*grid, "--results", str(root / m / "results"), "--numerics", m] for m in MODES}
    cold, cells = {}, {m: [] for m in MODES}
    for m in MODES:
        cold[m] = bench_run(args[m], envs[m])
        print(f"{m}: cold run (data, features, units, cells) {cold[m]:.1f} s", flush=True)
    for i in range(a.repeats):
        for m in MODES if i % 2 == 0 else reversed(MODES):
            cells[m].append(bench_run([*args[m], "--force"], envs[m]))
            print(f"{m}: cells again (--force) {cells[m][-1]:.1f} s", flush=True)

    print(f"\ngrid: {a.tasks} × {a.methods}, --size {a.size} --limit {a.limit} --max-epochs {a.max_epochs}, "
          f"{os.cpu_count()} cores")
    for m in MODES:
        rec = json.loads(next((root / m / "results").rglob("seed-*.json")).read_text())
        chosen = rec["environment"].get("numerics", {})
        print(f"  {m:6s}: torch {chosen.get('aten_cpu_capability')}, BLAS {', '.join(chosen.get('blas', []))}; "
              f"cold {cold[m]:.1f} s, cells median {statistics.median(cells[m]):.1f} s "
              f"({', '.join(f'{t:.1f}' for t in cells[m])})")
    print(f"  pinned / fast: cold {cold['pinned'] / cold['fast']:.2f}x, cells "
          f"{statistics.median(cells['pinned']) / statistics.median(cells['fast']):.2f}x (goal <= 1.3x)")
    print(f"  (each wall time includes the process start and imports; work files under {root})")


if __name__ == "__main__":
    main()
