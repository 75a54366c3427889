"""builtin-prosody: statement vs question from intonation alone (identical words).

Every sentence is declarative in form ("you are going home"); the question class ends in "?", which espeak-ng
renders with a rising final contour (we measured final F0 81 vs 98 Hz). Both classes draw the same
sentences, rates and pitches, so only the contour tells them apart.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.data.builtin.ks import english_identities
from bench.data.builtin.text_content import STATEMENTS
from bench.tasks.registry import TaskSpec

PUNCT = {"statement": ".", "question": "?"}


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    voices = C.make_voices(english_identities(), seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=lambda v: v.variant[:1])
    class_texts = {label: [s + PUNCT[label] for s in STATEMENTS] for label in spec.labels}
    jobs = C.balanced_speech_jobs(spec.name, class_texts, split_voices, counts, seed,
                                  lambda label, text, voice: C.speech(text, voice, aug))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
