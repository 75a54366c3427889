"""builtin-ic: Fluent-Speech-Commands-style intents (action, object, location), many phrasings per intent.

The slot values and the 31 legal intents follow FSC (24 values: 6 actions, 14 objects, 4 locations; SUPERB IC);
``change language`` is written ``change_language`` so that a label is the three values joined by one space.
Balanced over intents; phrasings are drawn from templates, so the same intent has several wordings.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.builtin import _common as C
from bench.data.builtin.ks import english_identities
from bench.tasks.registry import TaskSpec

INTENTS = (
    [("activate", o, "none") for o in ("lamp", "lights", "music")]
    + [("activate", "lights", loc) for loc in ("kitchen", "bedroom", "washroom")]
    + [("deactivate", o, "none") for o in ("lamp", "lights", "music")]
    + [("deactivate", "lights", loc) for loc in ("kitchen", "bedroom", "washroom")]
    + [("bring", o, "none") for o in ("juice", "newspaper", "shoes", "socks")]
    + [("change_language", o, "none") for o in ("Chinese", "English", "German", "Korean", "none")]
    + [(a, "heat", loc) for a in ("increase", "decrease") for loc in ("none", "kitchen", "bedroom", "washroom")]
    + [(a, "volume", "none") for a in ("increase", "decrease")]
)

VERBS = {
    "activate": ["turn on the {o}", "switch on the {o}", "{o} on", "start the {o}"],
    "deactivate": ["turn off the {o}", "switch off the {o}", "{o} off", "stop the {o}"],
    "increase": ["turn up the {o}", "increase the {o}", "more {o}", "raise the {o}"],
    "decrease": ["turn down the {o}", "decrease the {o}", "less {o}", "lower the {o}"],
    "bring": ["bring me the {o}", "get me my {o}", "fetch the {o}", "i need my {o}"],
    "change_language": ["change the language to {o}", "switch to {o}", "set my language to {o}", "use {o}"],
}
LOCATION = ["in the {l}", "{l}"]


def phrasings(action: str, obj: str, loc: str) -> list[str]:
    if action == "change_language" and obj == "none":
        return ["change the language", "switch language", "language settings", "i want another language"]
    o = {"volume": "volume", "heat": "heating"}.get(obj, obj.lower() if obj not in ("Chinese", "English", "German",
                                                                                  "Korean") else obj)
    out = []
    for t in VERBS[action]:
        base = t.format(o=o)
        if loc == "none":
            out.append(base)
        else:
            out += [f"{base} in the {loc}", f"in the {loc} {base}"]
    return sorted(set(out))


def label_of(intent: tuple[str, str, str]) -> str:
    return " ".join(intent)


def build(spec: TaskSpec, out_dir: Path, size: str, seed: int, advance_factory=None):
    counts = C.per_split_counts(spec, size)
    aug = C.augment_config(spec)
    voices = C.make_voices(english_identities(), seed, spec.name)
    split_voices = C.voices_by_split(voices, seed, spec.name, stratify=lambda v: v.variant[:1])
    class_texts = {label_of(i): phrasings(*i) for i in INTENTS}
    jobs = C.balanced_speech_jobs(spec.name, class_texts, split_voices, counts, seed,
                                  lambda label, text, voice: C.speech(text, voice, aug))
    return C.render_jobs(jobs, out_dir, seed, spec.name, advance_factory)
