"""Build the whole built-in suite at one size and print per-task build time, clip count and size on disk.

    python benchmarks/builtin_suite_build.py [--size default] [--seed 0] [--home /tmp/bench-suite]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", default="/tmp/bench-suite-build")
    args = ap.parse_args()
    os.environ["BENCH_HOME"] = args.home
    from bench.data.sources import builtin_dir, prepare_manifest
    from bench.tasks.registry import TaskRegistry

    reg = TaskRegistry()
    names = list(dict.fromkeys(s.name for s in reg.select("builtin")))
    total_t, total_b, total_n = 0.0, 0, 0
    print(f"{'task':18s} {'clips':>6s} {'train/valid/test':>17s} {'seconds':>8s} {'MB':>7s} {'audio h':>8s}")
    for name in names:
        spec = reg.get(name)
        t = time.perf_counter()
        m = prepare_manifest(spec, args.size, args.seed, rebuild=True)
        dt = time.perf_counter() - t
        d = builtin_dir(spec, args.size, args.seed)
        nbytes = sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file())
        hours = sum((m.audio_path(e).stat().st_size - 44) / 32000 for e in m) / 3600
        s = m.sizes()
        print(f"{name:18s} {len(m):6d} {s['train']:>5d}/{s['valid']:>4d}/{s['test']:>4d}   {dt:8.1f} "
              f"{nbytes / 2**20:7.1f} {hours:8.3f}")
        total_t, total_b, total_n = total_t + dt, total_b + nbytes, total_n + len(m)
    print(f"{'TOTAL':18s} {total_n:6d} {'':17s} {total_t:8.1f} {total_b / 2**20:7.1f}")


if __name__ == "__main__":
    main()
