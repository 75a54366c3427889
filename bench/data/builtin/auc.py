"""builtin-auc: audio-event classification over generated non-speech sounds (an ESC-50 stand-in).

Each class is a sound-production recipe (tones, chirps, sirens, clicks, bells, buzz, noise bursts, beeps); each
class has several *sources* (a fixed parameter sub-range, like recordings of different physical objects), and
sources are held out between splits, so test sounds come from unseen parameter regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.augment import AugmentConfig, augment, coloured_noise
from bench.data.builtin import _common as C
from bench.tasks.registry import TaskSpec

SR = C.SR
SOURCES_PER_CLASS = 6


def _env(n: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / SR
    return np.minimum(t / max(attack, 1e-3), 1.0) * np.exp(-t / decay)


def sound(cls: str, base: float, rng: np.random.Generator, n: int) -> np.ndarray:
    """One event of class ``cls``; ``base`` in [0, 1) is the source's position in the class's parameter range."""
    t = np.arange(n) / SR
    f = 200 * 2 ** (3 * base + rng.uniform(0, 0.4))  # 200 Hz .. 1.9 kHz, source-dependent
    if cls == "tone":
        x = np.sin(2 * np.pi * f * t) * _env(n, 0.02, 5.0)
    elif cls in ("chirp_up", "chirp_down"):
        f1 = f * rng.uniform(2.5, 4.0)
        a, b = (f, f1) if cls == "chirp_up" else (f1, f)
        x = np.sin(2 * np.pi * (a * t + (b - a) * t ** 2 / (2 * t[-1]))) * _env(n, 0.02, 5.0)
    elif cls == "siren":
        rate = 0.5 + 3 * base
        inst = f * (1 + 0.3 * np.sin(2 * np.pi * rate * t))
        x = np.sin(2 * np.pi * np.cumsum(inst) / SR)
    elif cls == "click_train":
        x = np.zeros(n)
        period = int(SR / (3 + 20 * base + rng.uniform(0, 3)))
        for p in range(int(rng.integers(0, period)), n - 64, period):
            x[p:p + 64] += rng.standard_normal(64) * np.exp(-np.arange(64) / 8)
    elif cls == "bell":
        x = sum(np.sin(2 * np.pi * f * r * t) / (k + 1) * np.exp(-t / (0.6 / (k + 1)))
                for k, r in enumerate((1.0, 2.76, 5.40, 8.93)))
    elif cls == "buzz":
        x = np.sign(np.sin(2 * np.pi * (f / 4) * t)) * 0.5 + 0.5 * ((t * f / 4) % 1.0 - 0.5)
        x = x * _env(n, 0.01, 5.0)
    elif cls == "noise_burst":
        x = np.zeros(n)
        m = int(rng.uniform(0.1, 0.4) * SR)
        s = int(rng.integers(0, n - m))
        x[s:s + m] = coloured_noise(m, rng, 2.0 * base) * _env(m, 0.005, 0.1 + 0.2 * base)
    elif cls == "beeps":
        x = np.zeros(n)
        on, period = int(0.08 * SR), int((0.15 + 0.25 * base) * SR)
        for p in range(int(rng.integers(0, period)), n - on, period):
            x[p:p + on] = np.sin(2 * np.pi * f * t[:on])
    else:
        raise ValueError(cls)
    x = np.asarray(x, np.float64)
    return (0.5 * x / (np.max(np.abs(x)) + 1e-12)).astype(np.float32)


def source_params(cls: str, seed: int, key: str) -> dict[str, float]:
    """Sources of a class: evenly spaced positions in its parameter range, jittered with the seed."""
    r = C.sub_rng(seed, "sources", key, cls)
    return {f"{cls}-s{k}": float((k + r.uniform(0, 0.8)) / SOURCES_PER_CLASS) for k in range(SOURCES_PER_CLASS)}


def event_jobs(task: str, classes: list[str], counts: dict[str, int], seed: int, clip: float,
               aug: AugmentConfig | None, label_of=lambda c: c) -> list[C.Job]:
    jobs = []
    for cls in classes:
        sources = source_params(cls, seed, task)
        split_of = C.assign_splits(list(sources), seed, f"{task}/{cls}")
        for split, n in counts.items():
            pool = sorted(s for s in sources if split_of[s] == split)
            for i in range(n):
                name = pool[i % len(pool)]

                def render(rng, cls=cls, base=sources[name], name=name):
                    x = sound(cls, base, rng, int(clip * SR))
                    extra = {"engine": "synthetic-sound", "source": name, "class": cls}
                    if aug is not None:
                        x, extra["aug"] = augment(x, rng, aug)
                        x = x[: int(clip * SR)] if x.size >= int(clip * SR) else np.pad(x, (0, int(clip * SR) - x.size))
                    return x, extra

                jobs.append(C.Job(f"{task}-{split}-{C.slug(cls)}-{i:04d}", split, label_of(cls), f"source:{name}",
                                  render))
    return jobs


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    clip = float(spec.data.params.get("clip_seconds", 2.0))
    jobs = event_jobs(spec.name, list(spec.labels), counts, seed, clip, C.augment_config(spec))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
