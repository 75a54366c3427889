"""Whisper upstream extraction speed (a script, not a test: it prints figures).

Measures, on this machine (torch's default threads): the encoder alone on 1-s clips in batches of 32 (the
FeatureStore's 32-s budget), x real time = audio seconds / wall seconds, median of ``--repeats`` passes after one
warm-up (and the CPU seconds, which other load on shared cores disturbs less); the log-mel front end's share; and the time of the cheap calls (provenance, config id) on repeat.

    .venv/bin/python benchmarks/bench_whisper.py [--upstream whisper_tiny_en] [--clips 256] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", default="whisper_tiny_en")
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from bench.features.upstream import build_upstream, upstream_config_id, upstream_provenance
    from bench.features.upstream_whisper import log_mel_spectrogram

    t0 = time.perf_counter()
    enc = build_upstream(args.upstream)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    n = int(args.seconds * 16000)
    t = np.arange(n) / 16000
    clips = [(0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
             for _ in range(args.clips)]
    batches = [clips[i: i + args.batch] for i in range(0, len(clips), args.batch)]
    audio_s = len(clips) * args.seconds

    cpu: list[float] = []

    def run() -> float:
        start, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            enc(b)
        cpu.append(time.process_time() - c0)
        return time.perf_counter() - start

    enc(batches[0])  # warm-up
    walls = [run() for _ in range(args.repeats)]
    start = time.perf_counter()
    for c in clips:
        log_mel_spectrogram(c)
    mel_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(100):
        upstream_provenance(args.upstream)
        upstream_config_id(args.upstream)
    cheap_ms = (time.perf_counter() - start) * 10
    wall = statistics.median(walls)
    print(f"{args.upstream}: {enc.info.num_layers} states x {enc.info.hidden_size}, "
          f"{enc.info.num_parameters / 1e6:.1f} M parameters, built in {build_s:.2f} s; torch threads "
          f"{torch.get_num_threads()}")
    print(f"  {len(clips)} clips of {args.seconds:g} s in batches of {args.batch}: median {wall:.2f} s of "
          f"{[round(w, 2) for w in walls]} -> {audio_s / wall:.0f}x real time")
    print(f"  CPU time (all threads): median {statistics.median(cpu):.2f} s -> "
          f"{audio_s / statistics.median(cpu):.0f}x real time per core (less sensitive to other load)")
    print(f"  log-mel front end alone: {mel_s:.2f} s ({audio_s / mel_s:.0f}x real time, {100 * mel_s / wall:.0f}% "
          f"of the extraction)")
    print(f"  provenance + config id on repeat: {cheap_ms:.2f} ms per pair")


if __name__ == "__main__":
    main()
