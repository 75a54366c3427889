"""Long utterances: a maximum length per task (``long_audio`` in a task card or a recipe's per-task ``data``, or
``bench run --max-seconds``) and what happens above it, crop or refuse.

Cropping is done on the manifest, before anything reads audio: an utterance over the limit becomes the segment
of its first ``max_seconds`` (``end = start + max_seconds``). Every reader decodes through
``bench.data.audio.load_audio(path, start, end)`` (features, units, F0), so each sees the cropped samples, and the
feature and unit caches key an utterance by its segment, so a cropped utterance never reuses the full-length
utterance's cached features. s3prl's SUPERB SID recipe crops training utterances to ``max_timestep: 128000``
samples (8 s; s3prl/downstream/voxceleb1/config.yaml:33, dataset.py:110-114, applied to the train split only,
expert.py:47); it draws a random window at each read, where bench keeps the first window, the one a cache can hold.

A limit enters a cell's configuration only when set (``long_audio`` in the resolved config, :func:`config_entry`),
and each record says how many utterances were cropped (``data.long_audio``, :func:`record_entry`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from bench.core.errors import BenchError
from bench.data.manifest import Manifest
from bench.tasks.registry import LongAudio, TaskSpec

POLICIES = ("crop", "refuse")
CROPPED_KEY = "uncropped_seconds"  # Example.extra of a cropped utterance: its length before the crop


def limit_for(task: TaskSpec, recipe: str, max_seconds: float | None = None,
              policy: str | None = None) -> LongAudio | None:
    """The limit a run applies to ``task``: ``--max-seconds`` (every split) over the recipe's per-task
    ``data.long_audio`` over the task card's ``long_audio``; ``--long-audio`` (``policy``) replaces the policy of
    whichever applies. None: no limit (the default everywhere)."""
    from bench.runner.recipes import data_choices

    limit = data_choices(recipe, task).long_audio or task.long_audio
    if max_seconds is not None:
        return LongAudio(max_seconds=max_seconds, policy=policy or (limit.policy if limit else "refuse"))
    if limit is not None and policy is not None:
        return limit.model_copy(update={"policy": policy})
    return limit


def unlimited(tasks, recipe: str, max_seconds: float | None, policy: str | None) -> list[str]:
    """The tasks a ``--long-audio`` policy does nothing for: no ``--max-seconds`` and no limit in their card or
    the recipe (a policy without a limit is not one; the run says so rather than doing nothing in silence)."""
    if policy is None or max_seconds is not None:
        return []
    return [t.name for t in tasks if limit_for(t, recipe) is None]


def config_entry(limit: LongAudio | None) -> dict:
    """The cell configuration's part: ``{"long_audio": {...}}`` when a limit is set, else nothing (hashes of runs
    without a limit are unchanged)."""
    return {"long_audio": limit.record()} if limit is not None else {}


def record_entry(limit: LongAudio | None, manifest: Manifest) -> dict:
    """The record's ``data`` part: how many utterances of each split were cropped and the longest before the crop."""
    if limit is None:
        return {}
    cropped = [e for e in manifest if CROPPED_KEY in e.extra]
    per_split = {s: sum(1 for e in cropped if e.split == s) for s in limit.splits}
    out = {"cropped": per_split}
    if cropped:
        out["longest_uncropped_seconds"] = max(e.extra[CROPPED_KEY] for e in cropped)
    return {"long_audio": out}


def apply_long_audio(task: str, manifest: Manifest, limit: LongAudio | None, seconds: dict[str, float],
                     log: Callable[[str], object] = print) -> Manifest:
    """``manifest`` with ``limit`` applied: unchanged when nothing is over; under ``crop`` the utterances over it cut
    to their first ``max_seconds`` (marked in ``extra``); under ``refuse`` a one-line BenchError naming the task, how
    many utterances are over, the longest (file and seconds) and the options to change. ``seconds``: each example
    id's length (``bench.data.audio_check.AudioCheckReport.seconds``)."""
    if limit is None:
        return manifest
    over = [e for e in manifest if e.split in limit.splits and seconds.get(e.id, 0.0) > limit.max_seconds]
    if not over:
        return manifest
    longest = max(over, key=lambda e: seconds[e.id])
    splits = "/".join(limit.splits)
    if limit.policy == "refuse":
        raise BenchError(f"{len(over)} of {sum(e.split in limit.splits for e in manifest)} {splits} "
                         f"utterance(s) of {task} are longer than max_seconds {limit.max_seconds:g} (the longest: "
                         f"{manifest.audio_path(longest)}, {seconds[longest.id]:.2f} s); nothing computed for this "
                         "task (--long-audio crop keeps their first max_seconds; --max-seconds S sets another limit)")
    log(f"[yellow]long audio[/] {task}: {len(over)} {splits} utterance(s) cropped to their first "
        f"{limit.max_seconds:g} s (the longest was {seconds[longest.id]:.2f} s)")
    over_ids = {e.id for e in over}
    return Manifest([dataclasses.replace(e, end=(e.start or 0.0) + limit.max_seconds,
                                         extra={**e.extra, CROPPED_KEY: round(seconds[e.id], 3)})
                     if e.id in over_ids else e for e in manifest], manifest.root)


__all__ = ["POLICIES", "CROPPED_KEY", "limit_for", "config_entry", "record_entry", "apply_long_audio"]
