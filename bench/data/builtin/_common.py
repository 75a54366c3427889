"""Shared machinery of the built-in generators: sizes, seeded sub-streams, voice pools, voice-disjoint splits,
and rendering a list of jobs to 16 kHz WAV files plus a manifest.

Every random draw of an utterance comes from ``sub_rng(seed, task, utterance_id)``, so an utterance's audio does
not depend on the order in which others were generated, and (size, seed) fully determines the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from bench.data.augment import AugmentConfig, augment, pad_random, place, trim_silence
from bench.data.manifest import Example, Manifest, sha1_file
from bench.core.errors import BenchError
from bench.tasks.registry import TaskSpec

SPLIT_FRACTIONS = {"train": 0.6, "valid": 0.2, "test": 0.2}
SR = 16_000


# ---- sizes and seeds ---------------------------------------------------------------------------------------
def per_split_counts(spec: TaskSpec, size: str) -> dict[str, int]:
    """Examples per class (or per intent/template) per split, from ``data.params.sizes.<size>: [train, valid, test]``."""
    sizes = spec.data.params.get("sizes") or {}
    if size not in sizes:
        raise BenchError(f"{spec.source_file or spec.name}: data.params.sizes has no '{size}' entry",
                         hint="give [train, valid, test] examples per class for tiny, default and large")
    n = sizes[size]
    if not (isinstance(n, list) and len(n) == 3 and all(isinstance(v, int) and v > 0 for v in n)):
        raise BenchError(f"{spec.source_file or spec.name}: data.params.sizes.{size} must be [train, valid, test] "
                         f"positive integers, not {n!r}")
    return dict(zip(("train", "valid", "test"), n))


def sub_rng(seed: int, *keys: object) -> np.random.Generator:
    """An independent generator for (seed, keys): stable across runs, platforms and generation order."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def assign_splits(units: Sequence[str], seed: int, key: str, strata: dict[str, str] | None = None,
                  fractions: dict[str, float] = SPLIT_FRACTIONS) -> dict[str, str]:
    """Map each unit (voice identity, noise source) to one split; within each stratum every split gets ≥ 1 unit.

    Holding out whole units is what makes the splits speaker-disjoint (SUPERB SF's speaker splits, s3prl KS hashing).
    """
    groups: dict[str, list[str]] = {}
    for u in sorted(set(units)):
        groups.setdefault((strata or {}).get(u, ""), []).append(u)
    out: dict[str, str] = {}
    for stratum, members in sorted(groups.items()):
        if len(members) < 3:
            raise BenchError(f"cannot split {len(members)} units of stratum '{stratum}' into train/valid/test "
                             f"({key}); need at least 3")
        order = list(sub_rng(seed, "split", key, stratum).permutation(len(members)))
        n_valid = max(1, int(round(fractions["valid"] * len(members))))
        n_test = max(1, int(round(fractions["test"] * len(members))))
        for rank, i in enumerate(order):
            out[members[i]] = "valid" if rank < n_valid else "test" if rank < n_valid + n_test else "train"
    return out


# ---- voices ------------------------------------------------------------------------------------------------
def make_voices(identities: Iterable[tuple[str, str]], seed: int, key: str, pitch: tuple[int, int] = (35, 65),
                rate: tuple[int, int] = (140, 210), prange: tuple[int, int] = (30, 80)) -> list:
    """One speaker per (language, variant) identity with its own seeded pitch/rate/range offsets."""
    from bench.data.tts import Voice

    voices = []
    for lang, variant in identities:
        r = sub_rng(seed, "voice", key, lang, variant)
        voices.append(Voice(lang, variant, pitch=int(r.integers(pitch[0], pitch[1] + 1)),
                            rate=int(r.integers(rate[0], rate[1] + 1)), range=int(r.integers(prange[0], prange[1] + 1))))
    return voices


def voices_by_split(voices: list, seed: int, key: str, stratify: Callable | None = None) -> dict[str, list]:
    split_of = assign_splits([v.identity for v in voices], seed, key,
                             {v.identity: stratify(v) for v in voices} if stratify else None)
    return {s: [v for v in voices if split_of[v.identity] == s] for s in ("train", "valid", "test")}


def jitter_voice(voice, rng: np.random.Generator, pitch: int = 4, rate: float = 0.08):
    """Utterance-level pitch and tempo jitter through the synthesiser's own parameters (no resampling artefacts)."""
    return voice.with_(pitch=int(np.clip(voice.pitch + rng.integers(-pitch, pitch + 1), 0, 99)),
                       rate=int(np.clip(round(voice.rate * rng.uniform(1 - rate, 1 + rate)), 80, 450)))


# ---- rendering ---------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One utterance to generate: ``render(rng) -> (float32 16 kHz audio, extra fields)``."""

    id: str
    split: str
    label: str
    speaker: str
    render: Callable[[np.random.Generator], tuple[np.ndarray, dict]]
    extra: dict = field(default_factory=dict)


def speech(text: str, voice, aug: AugmentConfig | None, clip_seconds: float | None = None, ssml: bool = False,
           max_pad: float = 0.15, jitter: bool = True) -> Callable[[np.random.Generator], tuple[np.ndarray, dict]]:
    """A renderer: synthesise ``text`` with a jittered ``voice``, augment, then place in a fixed clip or pad."""
    from bench.data.tts import synthesize

    def render(rng: np.random.Generator):
        v = jitter_voice(voice, rng) if jitter else voice
        wav = trim_silence(synthesize(text, v, ssml=ssml))
        extra = {"engine": "espeak-ng", "voice": v.as_dict(), "text": text}
        if aug is not None:
            wav, extra["aug"] = augment(wav, rng, aug)
        if clip_seconds:
            wav, extra["offset"] = place(wav, rng, int(clip_seconds * SR))
        else:
            wav = pad_random(wav, rng, max_pad)
        return wav, extra

    return render


def render_jobs(jobs: list[Job], out_dir: Path, seed: int, task: str, advance_factory=None) -> Manifest:
    """Generate every job's audio under ``out_dir/wav/<split>/`` and return the manifest (paths relative).

    Jobs render on :func:`bench.core.threads.worker_threads` threads (one waits on the espeak-ng helper process while
    another augments and writes); each draws only from its own ``sub_rng``, so the files and the manifest (in job
    order) are the same with any number of threads."""
    from bench.data.audio import write_audio
    from bench.core.threads import ordered_map

    out_dir = Path(out_dir)
    advance = advance_factory(f"building {task}", len(jobs)) if advance_factory else None

    def render(job: Job) -> Example:
        wav, extra = job.render(sub_rng(seed, task, job.id))
        if not np.all(np.isfinite(wav)):
            raise BenchError(f"{task}: generated non-finite audio for {job.id}")
        rel = f"wav/{job.split}/{job.id}.wav"
        write_audio(out_dir / rel, wav)
        return Example(id=job.id, path=rel, label=job.label, split=job.split, speaker=job.speaker,
                       audio_sha1=sha1_file(out_dir / rel), extra={**job.extra, **extra})

    examples = []
    for example in ordered_map(render, jobs, name=f"render-{task}"):
        examples.append(example)
        if advance:
            advance(1)
    return Manifest(examples, root=out_dir)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_") or "x"


def balanced_speech_jobs(task: str, class_texts: dict[str, Sequence[str]], split_voices: dict[str, list],
                         counts: dict[str, int], seed: int, make_render: Callable, extra: dict | None = None) -> list[Job]:
    """``counts[split]`` utterances per class per split, cycling through that split's voices (balanced classes).

    ``make_render(label, text, voice)`` returns the renderer; texts are drawn with a seeded per-(class, split) stream.
    """
    jobs = []
    for label, texts in class_texts.items():
        for split, n in counts.items():
            voices = split_voices[split]
            if not voices:
                raise BenchError(f"{task}: split '{split}' has no voices")
            r = sub_rng(seed, "plan", task, label, split)
            start = int(r.integers(len(voices)))
            for i in range(n):
                voice = voices[(start + i) % len(voices)]
                text = texts[int(r.integers(len(texts)))]
                jobs.append(Job(f"{task}-{split}-{slug(label)}-{i:04d}", split, label, voice.speaker_id,
                                make_render(label, text, voice), dict(extra or {})))
    return jobs


def augment_config(spec: TaskSpec) -> AugmentConfig | None:
    p = spec.data.params.get("augment", {})
    return None if p is False else AugmentConfig.from_params(p or None)
