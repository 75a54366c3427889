"""Feature-extraction throughput and cache effectiveness (a script, not a test: it prints figures).

Measures, on this machine:
  1. s3prl fbank alone on batched 1-s clips (x real time);
  2. the cold FeatureStore path: decode + resample (22.05 kHz → 16 kHz) + fbank + write cache (x real time);
  3. the cached re-run of the same data stage (seconds, and % of cold);
  4. peak resident memory;
  5. with ``--slice``: the foundation slice itself, ``bench run --tasks builtin-ks --methods linear`` in a
     fresh BENCH_HOME: cold (features extracted) vs a re-run with the features cached (``--force`` retrains).
Target (issue #2): cold path > 300x real time on 2 cores; cached data stage < 5 % of cold.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.data.manifest import Example, Manifest
from bench.features.store import FeatureStore
from bench.results.records import PeakMemory


def make_clips(root: Path, n: int, sr: int = 22050) -> Manifest:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    exs = []
    t = np.arange(sr) / sr
    for i in range(n):
        wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(sr)
        p = root / f"clip{i:05d}.wav"
        sf.write(p, wav.astype(np.float32), sr, subtype="PCM_16")
        exs.append(Example(id=f"c{i}", path=p.name, label="x", split="train"))
    return Manifest(exs, root=root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=2000)
    ap.add_argument("--upstream", default="fbank")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternate the three measurements this many times and report medians (this VM's speed "
                         "drifts by tens of percent within minutes, so one pass of each is not comparable)")
    ap.add_argument("--slice", action="store_true", help="also time the KS x linear slice cold vs cached")
    ap.add_argument("--slice-size", default="default", help="built-in suite size for --slice")
    args = ap.parse_args()
    import torch

    from bench.core.compat import import_s3prl_upstream

    print(f"torch threads: {torch.get_num_threads()}, clips: {args.clips} x 1 s, repeats: {args.repeats}")
    S3PRLUpstream, _ = import_s3prl_upstream()
    up = S3PRLUpstream(args.upstream).eval()
    batch = torch.randn(32, 16000)
    lens = torch.full((32,), 16000)
    reps = max(1, args.clips // 32)
    with torch.inference_mode():
        up(batch, lens)

    def alone() -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(reps):
                up(batch, lens)
            return reps * 32 / (time.perf_counter() - t0)

    alone_x, cold_s, warm_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp, PeakMemory() as mem:
        root = Path(tmp)
        m = make_clips(root / "wav", args.clips)
        for r in range(args.repeats):
            alone_x.append(alone())
            cache = root / f"cache{r}"
            t0 = time.perf_counter()
            FeatureStore(args.upstream, cache_dir=cache).get(m, m.examples)
            cold_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = FeatureStore(args.upstream, cache_dir=cache)
            again.get(m, m.examples)
            warm_s.append(time.perf_counter() - t0)
            assert again.stats["extracted"] == 0
    fb, cold, warm = (float(np.median(v)) for v in (alone_x, cold_s, warm_s))
    print(f"[1] s3prl {args.upstream} alone, batched 1-s clips: {fb:.0f}x real time "
          f"(runs: {', '.join(f'{x:.0f}' for x in alone_x)})")
    print(f"[2] cold data stage (decode + resample + {args.upstream} + write cache): {cold:.2f} s, "
          f"{args.clips / cold:.0f}x real time (target > 300x; runs: {', '.join(f'{args.clips / c:.0f}' for c in cold_s)}); "
          f"{args.clips / cold / fb:.0%} of {args.upstream} alone")
    print(f"[3] cached re-run of the data stage: {warm:.3f} s = {100 * warm / cold:.1f} % of cold (target < 5 %)")
    print(f"[4] peak RSS: {mem.peak_bytes / 2**20:.0f} MB")
    if args.slice:
        time_slice(args.slice_size)


def time_slice(size: str) -> None:
    """The KS x linear slice through the real runner, in a throw-away BENCH_HOME."""
    import os

    from bench.data.sources import prepare_manifest
    from bench.tasks.registry import TaskRegistry
    from bench.runner.plan import RunOptions, run_benchmark

    with tempfile.TemporaryDirectory() as home:
        os.environ["BENCH_HOME"] = home
        task = TaskRegistry().get("builtin-ks")
        t0 = time.perf_counter()
        m = prepare_manifest(task, size)
        gen = time.perf_counter() - t0
        from bench.data.audio import duration_samples

        seconds = sum(duration_samples(m.audio_path(ex), ex.start, ex.end) for ex in m.examples) / 16_000
        runs = []
        for force in (False, True):
            results = Path(home) / "results"
            t0 = time.perf_counter()
            run_benchmark([task], ["linear"], RunOptions(size=size, force=force), results, log=lambda *_: None)
            runs.append(time.perf_counter() - t0)
        print(f"[5] slice builtin-ks x linear ({size}: {len(m.examples)} clips, ~{seconds / 60:.1f} min of audio; "
              f"data generation {gen:.0f} s, not counted): cold {runs[0]:.1f} s, features cached {runs[1]:.1f} s "
              f"({100 * runs[1] / runs[0]:.0f} % of cold; the rest is training the probe)")


if __name__ == "__main__":
    main()
