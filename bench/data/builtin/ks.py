"""builtin-ks: Speech-Commands-v1-style keyword spotting, 12 classes, 1-s clips, synthesised by espeak-ng.

The SUPERB KS label set (s3prl ``speech_commands``): ten keywords, ``_unknown_`` (the corpus's twenty auxiliary
words) and ``_silence_`` (1-s crops of background noise; here generated coloured noise, hum and clicks).
Speakers are espeak (accent, variant) identities; whole identities are held out between splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.builtin import _common as C
from bench.data.builtin.noise import background_noise, noise_sources
from bench.tasks.registry import TaskSpec

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# Speech Commands v0.01 auxiliary words (all map to _unknown_).
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
                 "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
LABELS = (*KEYWORDS, UNKNOWN, SILENCE)


def english_identities() -> list[tuple[str, str]]:
    from bench.data.tts import ENGLISH_ACCENTS, FEMALE_VARIANTS, MALE_VARIANTS

    return [(a, v) for a in ENGLISH_ACCENTS for v in ("", *MALE_VARIANTS, *FEMALE_VARIANTS)]


def gender_of(voice) -> str:
    return "female" if voice.variant.startswith("f") else "male"


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    clip = float(spec.data.params.get("clip_seconds", 1.0))
    aug = C.augment_config(spec)
    voices = C.make_voices(english_identities(), seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=gender_of)
    class_texts = {w: [w] for w in KEYWORDS} | {UNKNOWN: list(UNKNOWN_WORDS)}
    jobs = C.balanced_speech_jobs(spec.name, class_texts, split_voices, counts, seed,
                                  lambda label, text, voice: C.speech(text, voice, aug, clip_seconds=clip))
    jobs += silence_jobs(spec.name, counts, seed, clip)
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)


def silence_jobs(task: str, counts: dict[str, int], seed: int, clip: float, label: str = SILENCE) -> list[C.Job]:
    """Noise-only clips; each comes from a noise 'source' (colour, level, hum), and sources are split-disjoint."""
    sources = noise_sources(24, seed, task)
    split_of = C.assign_splits([s.name for s in sources], seed, task + "/noise")
    jobs = []
    for split, n in counts.items():
        pool = [s for s in sources if split_of[s.name] == split]
        for i in range(n):
            src = pool[i % len(pool)]

            def render(rng: np.random.Generator, src=src):
                return background_noise(src, rng, int(clip * C.SR)), {"engine": "noise", "source": src.as_dict()}

            jobs.append(C.Job(f"{task}-{split}-{C.slug(label)}-{i:04d}", split, label, f"noise:{src.name}", render))
    return jobs
