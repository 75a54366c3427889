"""Training-data samplers a recipe selects (``recipes/*.yaml``: ``data.resample``), applied to a loaded manifest.

``class_balanced``: SUPERB's Speech Commands training and dev data (s3prl ``downstream/speech_commands/dataset.py``
:66-76 weights every item ``len(data) / count[its class]``; ``expert.py``:51-69 draws ``len(data)`` items with a
``WeightedRandomSampler``, i.e. with replacement), which SpeechPrompt v1 and v2 froze into their unit files (v1's
shipped KS train list: 51,094 lines, 24,821 unique; v2 ``SCR_google_speech_commands/preprocessor.py``:44-51).
s3prl's list holds every training file once and each background-noise file once as ``_silence_`` (a fresh 1-s
crop at every draw); bench's manifest holds fixed crops, so the number of draws is the number of distinct audio
files in the split (a noise file counts once, as in s3prl) and a drawn ``_silence_`` item is one of the fixed
crops. The draw is made once, seeded by ``--data-seed`` (as SpeechPrompt's frozen lists; s3prl redraws every
epoch). Every class then has an expected ``N / C`` items.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from bench.data.manifest import Example, Manifest


def class_balanced_weights(labels: Sequence[str]) -> list[float]:
    """s3prl's weight of each item: ``len(data) / count[class]`` (every class gets the same total weight)."""
    counts = Counter(labels)
    return [len(labels) / counts[label] for label in labels]


def distinct_audio_files(examples: Sequence[Example]) -> int:
    return len({e.path for e in examples})


def class_balanced_draw(labels: Sequence[str], num_samples: int, seed: int) -> list[int]:
    """Indices drawn with replacement with probability ∝ s3prl's weights: ``torch.multinomial`` on a generator
    seeded with ``seed``, the draw ``WeightedRandomSampler(weights, num_samples, generator=g)`` makes."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    weights = torch.as_tensor(class_balanced_weights(labels), dtype=torch.double)
    return torch.multinomial(weights, int(num_samples), replacement=True, generator=g).tolist()


def class_balanced_resample(examples: Sequence[Example], seed: int, num_samples: int | None = None) -> list[Example]:
    """``num_samples`` (default: the distinct audio files) draws; draw j of example x gets id ``x.id@j``."""
    import dataclasses

    examples = sorted(examples, key=lambda e: e.id)  # manifest order must not change the draw
    n = distinct_audio_files(examples) if num_samples is None else num_samples
    idx = class_balanced_draw([e.label for e in examples], n, seed)
    return [dataclasses.replace(examples[i], id=f"{examples[i].id}@{j}") for j, i in enumerate(idx)]


def apply_resample(manifest: Manifest, method: str, splits: Sequence[str], seed: int) -> Manifest:
    """The manifest with ``splits`` redrawn by ``method`` (``none``: unchanged)."""
    if method == "none":
        return manifest
    if method != "class_balanced":
        from bench.core.errors import BenchError

        raise BenchError(f"unknown resample method '{method}'; expected none or class_balanced")
    out: list[Example] = []
    for split in ("train", "valid", "test"):
        exs = manifest.split(split)
        out += class_balanced_resample(exs, seed + ("train", "valid", "test").index(split)) \
            if split in splits and exs else exs
    return Manifest(out, manifest.root)


__all__ = ["class_balanced_weights", "class_balanced_draw", "class_balanced_resample", "apply_resample",
           "distinct_audio_files"]
