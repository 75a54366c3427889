"""builtin-asr: sentence transcription (generation), closed-vocabulary template sentences.

Stands in for LibriSpeech ASR (SpeechPrompt v1 ASR; SUPERB ASR). Texts are disjoint between splits: every test
sentence is unseen in training, so a model must recognise words, not memorise utterances.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.data.builtin.ks import english_identities
from bench.data.builtin.text_content import sentences
from bench.tasks.registry import TaskSpec


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    voices = C.make_voices(english_identities(), seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=lambda v: v.variant[:1])
    jobs, used = [], set()
    for split, n in counts.items():
        r = C.sub_rng(seed, "text", spec.name, split)
        texts = sentences(n, r, exclude=used)
        used |= set(texts)
        pool = split_voices[split]
        for i, text in enumerate(texts):
            voice = pool[i % len(pool)]
            jobs.append(C.Job(f"{spec.name}-{split}-{i:05d}", split, text, voice.speaker_id,
                              C.speech(text, voice, aug)))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
