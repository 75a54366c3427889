"""builtin-fsd: vocoder-resynthesis detection — espeak-ng output ("bonafide") vs the same kind of utterance passed
through the WORLD vocoder (pyworld: DIO/StoneMask F0, CheapTrick envelope, D4C aperiodicity) and resynthesised
with a perturbed F0 contour ("spoof").

There is no real human speech on PyPI, so this is NOT human-vs-machine detection: it measures whether a model
hears vocoder artefacts (smoothed spectral envelope, re-estimated aperiodicity, re-generated excitation), the
artefact class most ASVspoof 2019 LA attacks share. Both classes use the same texts, voices and augmentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.data.augment import augment, pad_random, trim_silence
from bench.data.builtin import _common as C
from bench.data.builtin.text_content import STATEMENTS
from bench.data.builtin.ks import english_identities
from bench.tasks.registry import TaskSpec


def world_resynthesis(wav: np.ndarray, rng: np.random.Generator, sr: int = C.SR) -> tuple[np.ndarray, dict]:
    """WORLD analysis/synthesis with the F0 contour scaled and given slow random drift."""
    try:
        from bench.core.compat import import_pyworld

        pyworld = import_pyworld()
    except ImportError:
        from bench.core.errors import DependencyError

        raise DependencyError("builtin-fsd needs pyworld (pip install pyworld)") from None
    x = wav.astype(np.float64)
    f0, t = pyworld.dio(x, sr, frame_period=5.0)
    f0 = pyworld.stonemask(x, f0, t, sr)
    sp = pyworld.cheaptrick(x, f0, t, sr)
    ap = pyworld.d4c(x, f0, t, sr)
    scale = float(rng.uniform(0.9, 1.1))
    drift = 1.0 + 0.04 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 2 * np.pi))
    y = pyworld.synthesize(f0 * scale * drift, sp, ap, sr, frame_period=5.0)
    y = y[: wav.size] if y.size >= wav.size else np.pad(y, (0, wav.size - y.size))
    y = y * (np.max(np.abs(wav)) / (np.max(np.abs(y)) + 1e-12))
    return y.astype(np.float32), {"vocoder": "world-dio-cheaptrick-d4c", "f0_scale": round(scale, 3)}


def make_render(label: str, text: str, voice, aug):
    from bench.data.tts import synthesize

    def render(rng: np.random.Generator):
        v = C.jitter_voice(voice, rng)
        wav = trim_silence(synthesize(text, v))
        extra = {"engine": "espeak-ng", "voice": v.as_dict(), "text": text}
        if label == "spoof":
            wav, extra["resynthesis"] = world_resynthesis(wav, rng)
        if aug is not None:
            wav, extra["aug"] = augment(wav, rng, aug)
        return pad_random(wav, rng, 0.15), extra

    return render


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    voices = C.make_voices(english_identities(), seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=lambda v: v.variant[:1])
    class_texts = {label: list(STATEMENTS) for label in spec.labels}
    jobs = C.balanced_speech_jobs(spec.name, class_texts, split_voices, counts, seed,
                                  lambda label, text, voice: make_render(label, text, voice, aug))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
