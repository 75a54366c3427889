"""Freed memory goes back to the system: a fixed malloc mmap threshold for every bench process.

glibc's malloc serves a request above its mmap threshold (128 KiB at start) with its own ``mmap`` and returns it
to the system on ``free``; but each such free raises the threshold to that block's size (up to 32 MiB), so later
blocks of feature arrays and batch tensors of varying sizes come from the heap, which fragments and is never given
back. On a real corpus that is most of a cell's memory: an lstm cell on a 10-h LibriSpeech-layout corpus
(whisper_tiny_en, features cached, one epoch) peaked at 1,447 MB with the moving threshold and at 789 MB with it
fixed at 128 KiB (benchmarks/rehearsal.py, 2026-12-05). Setting the threshold (``mallopt(M_MMAP_THRESHOLD)``)
turns the moving threshold off. Results are unchanged: only where memory comes from.

The value is 1 MiB, not glibc's starting 128 KiB: at 128 KiB every torch tensor above it was a fresh ``mmap``
(zeroed pages, then ``munmap``), and the built-in grid's cells ran 1.5–1.8x slower (ks, ic and asr, all six
methods: 544 s against 316 s for the same 15 records; builtin-ks linear + prompt-gslm-lv 40–43 s at 128 KiB,
27 s at 1 MiB, 4 MiB or 32 MiB; at 1 MiB the 15-cell grid took 363 s, its ks and ic cells as fast as at
4bf93ec, its asr cells 1.2-1.4x slower, not explained yet). Feature arrays and batch tensors of a real corpus are
mostly above 1 MiB, so they are still returned: on the 10-h corpus fbank's lstm cell peaked at 1,073 MB at
1 MiB and 1,070 MB at 128 KiB (one epoch, features cached), and whisper_tiny_en's lstm stage at 862 MB
(extraction and one epoch; 861 MB at 128 KiB with three).

The process sets it for itself at start (``bound_heap``) and exports ``MALLOC_MMAP_THRESHOLD_`` so that the
processes it starts (``--jobs`` workers, Slurm jobs, stage builds) get it from their first allocation. A value the
user already exported is kept. Outside glibc (macOS, musl) nothing is done.

The asr cells' slowdown was the lstm head's batch tensors: 1–32 MiB each (a CTC batch of 300-frame utterances),
so at 1 MiB every one was a fresh ``mmap``: builtin-asr × lstm took 66.8 s at 1 MiB (10.8 M minor page faults
for the process), 48.7 s at a fixed 32 MiB (1.0 M) and 45.3 s with glibc's moving threshold; its prompt-gslm-lv
cell 52–53 s at all three (whisper_tiny_en, features cached, one process each, 2026-12-05). Inside a training
or decoding loop (:func:`compute_heap`) the threshold is 32 MiB: every allocation made there is a batch's and
is freed by the next batch (or is a copy of the trained weights), so what the heap keeps is bounded by a batch and
the model, not by the corpus; the loops' long-lived inputs (features, rows) were allocated before, under 1 MiB.
"""

from __future__ import annotations

import contextlib
import os
import sys

MMAP_THRESHOLD = 1024 * 1024  # 1 MiB: see above
COMPUTE_MMAP_THRESHOLD = 32 * 1024 * 1024  # inside training and decoding loops (compute_heap)
ENV = "MALLOC_MMAP_THRESHOLD_"  # read by glibc when a process starts
M_MMAP_THRESHOLD = -3  # <malloc.h>


def bound_heap() -> bool:
    """Fix this process's malloc mmap threshold (glibc) and export it to child processes; True when set."""
    if ENV in os.environ:
        return False  # the user's (or the parent's) value is already in effect since this process started
    os.environ[ENV] = str(MMAP_THRESHOLD)
    if not sys.platform.startswith("linux"):
        return False
    return _set_threshold(MMAP_THRESHOLD)


def _set_threshold(value: int) -> bool:
    try:
        import ctypes

        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, value))
    except (OSError, AttributeError):
        return False


_scopes: list[int] = []  # thresholds of the compute_heap / data_heap blocks entered, innermost last


@contextlib.contextmanager
def _scope(value: int):
    if not sys.platform.startswith("linux") or os.environ.get(ENV) != str(MMAP_THRESHOLD):
        yield  # a value the user exported, or no glibc: left alone
        return
    _scopes.append(value)
    _set_threshold(value)
    try:
        yield
    finally:
        _scopes.pop()
        _set_threshold(_scopes[-1] if _scopes else MMAP_THRESHOLD)


def compute_heap():
    """Within: the mmap threshold at 32 MiB, so a loop's batch tensors are reused from the heap instead of mapped
    and zeroed afresh each step (see above); the enclosing threshold again after. Only where bench's own 1 MiB is
    in effect (a value the user exported, or another platform, is left alone)."""
    return _scope(COMPUTE_MMAP_THRESHOLD)


def data_heap():
    """Within (inside a :func:`compute_heap` loop): 1 MiB again, for reads whose arrays outlive the batch
    (features kept in memory after their first read) or whose sizes follow the corpus (features streamed from the
    cache): what would fragment a heap in proportion to the corpus (see above)."""
    return _scope(MMAP_THRESHOLD)
