"""builtin-acc: which of espeak-ng's eight English accents spoke the sentence (rule-based accents).

The accents are espeak-ng's pronunciation and intonation rules (en-us, RP, Scottish, NYC, Caribbean, Lancaster,
West Midlands, default British), not recordings of real accented speakers. Voice variants are held out between
splits within each accent, so test timbres are unseen.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.data.builtin.text_content import STATEMENTS
from bench.tasks.registry import TaskSpec
from bench.data.tts import FEMALE_VARIANTS, MALE_VARIANTS


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    voices = C.make_voices([(a, v) for a in spec.labels for v in ("", *MALE_VARIANTS, *FEMALE_VARIANTS)],
                           seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=lambda v: v.language)
    jobs = []
    for accent in spec.labels:
        per = {s: [v for v in vs if v.language == accent] for s, vs in split_voices.items()}
        jobs += C.balanced_speech_jobs(spec.name, {accent: list(STATEMENTS)}, per, counts, seed,
                                       lambda label, text, voice: C.speech(text, voice, aug))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
