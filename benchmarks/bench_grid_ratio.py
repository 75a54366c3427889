"""Is the default grid as fast as, and are its records the same as, at an earlier commit? (issue #23: "the default
grid is no slower (ratio printed, same VM)" and "writes the same records ... for every cell whose configuration did
not change".) A script that prints figures, never a test.

It checks the earlier commit out into a temporary git worktree, then runs the same ``bench run`` (the built-in
suite, ``--tasks``/``--methods``/``--size`` as given) alternately at the earlier commit and at this checkout,
``--rounds`` times each, every run in a fresh ``BENCH_HOME`` (nothing cached: the grid time includes building the
built-in data, extraction, units and cells) with the same interpreter. It prints each run's grid time (bench's own
``grid time:`` line, set-up excluded) and wall time, the median ratio new / old, and, over the records of the
last round, how many cells have the same configuration hash and of those how many have identical scores and
per-utterance outputs (ids, references, hypotheses, per-utterance scores).

Both sides run with ``BENCH_NUMERICS`` set to ``--numerics`` (default ``fast``): a commit from before pinned
numerics became bench's default ran fast (and ignores the variable when it predates ``--numerics``), and a pinned
record's configuration hash differs from a fast one's, so only the same mode on both sides compares like with like.

    .venv/bin/python benchmarks/bench_grid_ratio.py --base 4bf93ec [--tasks all] [--size default] [--rounds 1]
        [--numerics fast] [--keep DIR] [--this-option METHOD.KEY=VALUE ...]

``--this-option`` gives this checkout's side a default as it was at the base (2026-12-06: the prompt methods' patience
became 0; ``--this-option prompt-gslm.patience=5`` and the same for prompt-gslm-lv, prompt-pgslm, prompt-pgslm-lv
compare the same configurations as before it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GRID = re.compile(r"grid time: (\d+) min (\d+) s")


def run_grid(code: Path, home: Path, results: Path, args, options: list[str] = ()) -> dict:
    cmd = [sys.executable, "-m", "bench.cli", "run", "--tasks", args.tasks, "--size", args.size, "--results",
           str(results), "--no-compare"]
    if args.methods:
        cmd += ["--methods", args.methods]
    for option in options:
        cmd += ["-o", option]
    env = {**os.environ, "BENCH_HOME": str(home), "PYTHONPATH": str(code), "COLUMNS": "120",
           "BENCH_NUMERICS": args.numerics}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = GRID.findall(proc.stdout + proc.stderr)
    grid = int(found[-1][0]) * 60 + int(found[-1][1]) if found else float("nan")
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr)[-3000:])
    return {"rc": proc.returncode, "grid_s": grid, "wall_s": wall}


def records(results: Path) -> dict[str, dict]:
    out = {}
    for f in results.rglob("seed-*.json"):
        rel = f.relative_to(results)
        if rel.parts[0].startswith("."):
            continue
        r = json.loads(f.read_text())
        out[f"{r['task']}|{r['method']}|{r['upstream']}|{r['seed']}"] = r
    return out


def compare(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    lines, same_hash, identical = [], 0, 0
    for key in sorted(new):
        if key not in old:
            lines.append(f"  {key}: no record at the base commit")
            continue
        a, b = old[key], new[key]
        if a["config_hash"] != b["config_hash"]:
            lines.append(f"  {key}: configuration changed ({a['config_hash'][:8]} -> {b['config_hash'][:8]})")
            continue
        same_hash += 1
        equal = a["scores"] == b["scores"] and all(a["outputs"].get(k) == b["outputs"].get(k)
                                                   for k in ("ids", "references", "hypotheses", "scores"))
        identical += equal
        if not equal:
            lines.append(f"  {key}: same configuration, different record: {a['scores']} -> {b['scores']}")
    return [f"records: {len(new)} cells, {same_hash} with the base commit's configuration hash, {identical} of "
            "those identical in scores and per-utterance outputs", *lines]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="The earlier commit (e.g. the one before a change).")
    ap.add_argument("--tasks", default="all")
    ap.add_argument("--methods", default="")
    ap.add_argument("--size", default="default")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="Copy the last round's records (base/ and this/) "
                    "here before the temporary folder goes (e.g. to read their per-cell wall times).")
    ap.add_argument("--this-option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                    help="-o for this checkout's side only: the base's value of a default changed since, so that "
                    "those cells keep the base's configuration (e.g. prompt-gslm-lv.patience=5); repeatable")
    ap.add_argument("--numerics", default="fast", choices=("fast", "pinned"),
                    help="BENCH_NUMERICS of both sides (fast: what every commit before the pinned default ran)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-grid-ratio-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), args.base],
                       check=True)
        try:
            times: dict[str, list[dict]] = {"base": [], "this": []}
            for r in range(args.rounds):
                for name, code in (("base", base), ("this", REPO)):
                    res = run_grid(code, tmp / f"home-{name}-{r}", tmp / f"results-{name}-{r}", args,
                                   args.this_option if name == "this" else ())
                    times[name].append(res)
                    print(f"round {r + 1} {name:4}: exit {res['rc']}, grid {res['grid_s']} s, wall "
                          f"{res['wall_s']:.0f} s", flush=True)
            ratio = statistics.median(t["grid_s"] for t in times["this"]) / statistics.median(
                t["grid_s"] for t in times["base"])
            last = args.rounds - 1
            if args.keep is not None:
                import shutil

                for name in ("base", "this"):
                    shutil.copytree(tmp / f"results-{name}-{last}", args.keep / name, dirs_exist_ok=True)
            print("\n".join(compare(records(tmp / f"results-base-{last}"), records(tmp / f"results-this-{last}"))))
            print(f"grid time, median of {args.rounds}: base {args.base} "
                  f"{statistics.median(t['grid_s'] for t in times['base'])} s, this checkout "
                  f"{statistics.median(t['grid_s'] for t in times['this'])} s: ratio {ratio:.3f}")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
