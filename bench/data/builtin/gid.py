"""builtin-gid: gender of the (synthetic) voice, with pitch randomised so that F0 alone is not a shortcut.

espeak-ng's m*/f* variants differ in more than F0 (formant scaling, breathiness, voicing shape), but their median F0
alone would separate them (~95 vs ~190 Hz at default pitch). Each male voice gets a high base pitch (espeak 65-99,
median F0 ≈ 120-170 Hz) and each female voice a low one (0-40, ≈ 140-185 Hz), so the two F0 ranges overlap and a
classifier has to use timbre. ``test_builtin_voices`` measures how far a median-F0 threshold gets.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.data.builtin.text_content import STATEMENTS
from bench.tasks.registry import TaskSpec
from bench.data.tts import ENGLISH_ACCENTS, FEMALE_VARIANTS, MALE_VARIANTS

PITCH = {"male": (65, 99), "female": (0, 40)}


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    jobs = []
    for gender, variants in (("male", MALE_VARIANTS), ("female", FEMALE_VARIANTS)):
        voices = C.make_voices([(a, v) for a in ENGLISH_ACCENTS for v in variants], seed, spec.name,
                               pitch=PITCH[gender])
        split_voices = C.voices_by_split(voices, seed, f"{spec.name}/{gender}")
        jobs += C.balanced_speech_jobs(spec.name, {gender: list(STATEMENTS)}, split_voices, counts, seed,
                                       lambda label, text, voice: C.speech(text, voice, aug))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
