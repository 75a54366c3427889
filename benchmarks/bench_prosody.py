"""pGSLM prosody and MS-TLM throughput (a script, not a test: it prints figures).

Measures, on this machine:
  1. frame F0 extraction, x real time, for WORLD DIO+StoneMask and Harvest on a speech-like harmonic glide;
  2. MS-TLM forward, utterances / s, for transformer_ulm_tiny and (optionally) transformer_ulm_big on
     100-unit utterances (≈ 4 s of HuBERT-100 speech after deduplication).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def glide(seconds: float, sr: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    inst = 110.0 * 2.0 ** (t / seconds)
    phase = 2 * np.pi * np.cumsum(inst) / sr
    return (0.3 * sum(np.sin(k * phase) / k for k in range(1, 11))).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--big", action="store_true", help="also time transformer_ulm_big (12 x 1024)")
    args = ap.parse_args()

    from bench.units.prosody import F0Config, extract_f0

    wav = glide(args.seconds)
    for method in ("dio", "harvest"):
        t0 = time.perf_counter()
        extract_f0(wav, F0Config(method=method))
        dt = time.perf_counter() - t0
        print(f"F0 {method:8s}: {args.seconds / dt:8.1f}x real time")

    import torch

    from bench.lms.multistream import MultiStreamLMConfig, MultiStreamUnitLM, collate_streams, encode_streams

    torch.set_num_threads(2)
    makers = [("tiny", MultiStreamLMConfig.tiny)] + ([("big", MultiStreamLMConfig.transformer_ulm_big)]
                                                    if args.big else [])
    rng = np.random.default_rng(0)
    for name, maker in makers:
        cfg = maker(100)
        model = MultiStreamUnitLM(cfg).eval()
        rows = [encode_streams(cfg, rng.integers(0, 100, 100), rng.integers(1, 8, 100), rng.integers(0, 32, 100))
                for _ in range(8)]
        batch = collate_streams(cfg, rows)
        with torch.no_grad():
            model(batch.tokens, batch.durations, batch.f0)
            t0 = time.perf_counter()
            model(batch.tokens, batch.durations, batch.f0)
            dt = time.perf_counter() - t0
        print(f"MS-TLM {name:5s} ({model.num_parameters():,} params): {8 / dt:8.1f} utterances/s (batch 8 x 102)")


if __name__ == "__main__":
    main()
