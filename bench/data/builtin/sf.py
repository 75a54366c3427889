"""builtin-sf: SNIPS-style slot filling as generation: transcript with ``B-<slot>`` / ``E-<slot>`` tag words.

The target is lower-case words where each slot value is bracketed by tag words, e.g.
``play B-artist queen E-artist in the B-room kitchen E-room`` (SUPERB SF's character-slot format, word-level).
Templates cover five SNIPS-like intents; utterances are balanced over templates and slot values are drawn with
a seeded generator.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.data.builtin.ks import english_identities
from bench.tasks.registry import TaskSpec

VALUES = {
    "artist": ["queen", "the beatles", "adele", "miles davis", "nina simone", "bob marley", "elton john"],
    "playlist": ["morning jazz", "road trip", "workout mix", "chill evening", "summer hits", "study music"],
    "room": ["kitchen", "bedroom", "living room", "bathroom", "office", "garage"],
    "city": ["london", "paris", "new york", "berlin", "tokyo", "madrid", "chicago", "dublin"],
    "time": ["seven am", "noon", "six thirty", "tomorrow morning", "tonight", "nine pm"],
    "cuisine": ["italian", "thai", "mexican", "indian", "chinese", "french"],
    "people": ["two", "three", "four", "five", "six"],
}
SLOT_TAGS = list(VALUES)

TEMPLATES = [
    "play {artist} in the {room}",
    "play some {artist}",
    "add {artist} to my {playlist} playlist",
    "put this song on {playlist}",
    "what is the weather in {city}",
    "will it rain in {city} {time}",
    "wake me up at {time}",
    "set an alarm for {time}",
    "book a table for {people} at an {cuisine} restaurant",
    "find a {cuisine} restaurant in {city}",
    "turn off the music in the {room}",
    "book a table for {people} in {city} at {time}",
]


def render_template(template: str, rng) -> tuple[str, str]:
    """(spoken text, tagged target) for one template with seeded slot values."""
    spoken, target = [], []
    for token in template.split():
        if token.startswith("{"):
            slot = token[1:-1]
            value = VALUES[slot][int(rng.integers(len(VALUES[slot])))]
            spoken.append(value)
            target += [f"B-{slot}", value, f"E-{slot}"]
        else:
            spoken.append(token)
            target.append(token)
    return " ".join(spoken), " ".join(target)


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)  # per template
    aug = C.augment_config(spec)
    voices = C.make_voices(english_identities(), seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=lambda v: v.variant[:1])
    jobs = []
    for t_idx, template in enumerate(TEMPLATES):
        for split, n in counts.items():
            r = C.sub_rng(seed, "plan", spec.name, t_idx, split)
            pool = split_voices[split]
            start = int(r.integers(len(pool)))
            for i in range(n):
                spoken, target = render_template(template, r)
                voice = pool[(start + i) % len(pool)]
                jobs.append(C.Job(f"{spec.name}-{split}-t{t_idx:02d}-{i:04d}", split, target, voice.speaker_id,
                                  C.speech(spoken, voice, aug), {"template": t_idx}))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
