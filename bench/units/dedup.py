"""Run-length deduplication of frame units (GSLM trains its ULM on deduplicated units; pGSLM keeps the run
lengths as its duration stream; docs/papers.md, "The pipeline")."""

from __future__ import annotations

import numpy as np


def dedup(frame_units) -> tuple[np.ndarray, np.ndarray]:
    """(units, durations): consecutive repeats collapsed; ``durations[i]`` = frames in run ``i``.

    ``np.repeat(units, durations)`` gives the frame sequence back exactly."""
    u = np.asarray(frame_units, dtype=np.int64).reshape(-1)
    if u.size == 0:
        return u.copy(), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1])))
    durations = np.diff(np.concatenate((starts, [u.size])))
    return u[starts], durations.astype(np.int64)


def expand(units, durations) -> np.ndarray:
    """Inverse of :func:`dedup`."""
    return np.repeat(np.asarray(units, dtype=np.int64), np.asarray(durations, dtype=np.int64))
