"""Non-speech sound sources shared by builtin-ks (``_silence_``), builtin-vad (background) and builtin-auc.

A *source* is a seeded parameter set (noise colour, level, hum frequency); sources, not clips, are held out
between splits, the way Speech Commands' background-noise files are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bench.data.augment import coloured_noise

SR = 16_000


@dataclass(frozen=True)
class NoiseSource:
    name: str
    exponent: float  # 1/f^exponent colour: 0 white, 1 pink, 2 brown
    level_db: float  # RMS in dBFS
    hum_hz: float  # 0 = no hum; else mains-like hum with harmonics
    click_rate: float  # clicks per second (0 = none)

    def as_dict(self) -> dict:
        return asdict(self)


def noise_sources(n: int, seed: int, key: str) -> list[NoiseSource]:
    from bench.data.builtin._common import sub_rng

    out = []
    for i in range(n):
        r = sub_rng(seed, "noise-source", key, i)
        out.append(NoiseSource(f"{key}-n{i:02d}", exponent=float(r.choice([0.0, 0.5, 1.0, 1.5, 2.0])),
                               level_db=float(round(r.uniform(-50, -20), 1)),
                               hum_hz=float(r.choice([0.0, 0.0, 50.0, 60.0])),
                               click_rate=float(r.choice([0.0, 0.0, 2.0, 8.0]))))
    return out


def background_noise(src: NoiseSource, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` samples of the source, with per-clip level variation of ±3 dB."""
    x = coloured_noise(n, rng, src.exponent)
    if src.hum_hz:
        t = np.arange(n) / SR
        ph = rng.uniform(0, 2 * np.pi)
        hum = sum(np.sin(2 * np.pi * k * src.hum_hz * t + k * ph) / k for k in (1, 2, 3))
        x = x + 0.8 * hum / np.sqrt(np.mean(hum ** 2))
    if src.click_rate:
        for pos in rng.integers(0, n, size=rng.poisson(src.click_rate * n / SR)):
            m = min(80, n - pos)
            x[pos:pos + m] += 6.0 * rng.standard_normal(m) * np.exp(-np.arange(m) / 15)
    x = x / (np.sqrt(np.mean(x ** 2)) + 1e-12)
    level = 10 ** ((src.level_db + rng.uniform(-3, 3)) / 20)
    return np.clip(x * level, -0.99, 0.99).astype(np.float32)
