"""builtin-vad: is there speech in this 1-s clip? Speech = espeak-ng words in noise; background = noise sources
(coloured noise, hum, clicks) and generated sound events (tones, sirens, bells, ...), i.e. the NeMo/SpeechPrompt
VAD construction (Speech Commands speech vs Freesound backgrounds) with generated material.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.data.builtin.auc import event_jobs
from bench.data.builtin.ks import KEYWORDS, UNKNOWN_WORDS, english_identities, silence_jobs
from bench.tasks.registry import TaskSpec

EVENTS = ["tone", "chirp_up", "siren", "click_train", "bell", "buzz", "noise_burst", "beeps"]


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    voices = C.make_voices(english_identities(), seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=lambda v: v.variant[:1])
    jobs = C.balanced_speech_jobs(spec.name, {"speech": [*KEYWORDS, *UNKNOWN_WORDS]}, split_voices, counts, seed,
                                  lambda label, text, voice: C.speech(text, voice, aug, clip_seconds=1.0))
    # background: half noise-only clips, half sound events (counts split between them)
    half = {s: (n + 1) // 2 for s, n in counts.items()}
    rest = {s: n - half[s] for s, n in counts.items()}
    jobs += silence_jobs(spec.name + "-noise", half, seed, 1.0, label="background")
    per_event = {s: -(-n // len(EVENTS)) for s, n in rest.items()}
    events = event_jobs(spec.name + "-event", EVENTS, per_event, seed, 1.0, None, label_of=lambda c: "background")
    for split, n in rest.items():  # keep exactly n, interleaving event classes
        pick = [j for j in events if j.split == split]
        pick = sorted(pick, key=lambda j: (int(j.id.rsplit("-", 1)[1]), j.id))[:n]
        jobs += pick
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
