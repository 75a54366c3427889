"""builtin-scr: multilingual spoken digits (command recognition in languages other than English).

Stands in for SpeechPrompt v2's non-English SCR sets (Grabo nl, Lithuanian SC, Arabic SC): a frozen model pre-trained
on English speech must recognise commands spoken in other languages. The text is the numeral itself, so espeak-ng
reads it with each language's own number words ("3" → drie, trys, ثلاثة, tres).
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.tasks.registry import TaskSpec

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VARIANTS = ("", "m1", "m3", "m5", "m7", "f1", "f2", "f4", "f5")


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    languages = list(spec.data.params.get("languages", ["nl", "lt", "ar", "es"]))
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    voices = C.make_voices([(lang, v) for lang in languages for v in VARIANTS], seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=lambda v: v.language)
    class_texts = {d: [str(i)] for i, d in enumerate(DIGITS)}
    jobs = C.balanced_speech_jobs(spec.name, class_texts, split_voices, counts, seed,
                                  lambda label, text, voice: C.speech(text, voice, aug, clip_seconds=1.0))
    for j in jobs:
        j.extra["language"] = j.speaker.split(":")[1].split("+")[0]
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
