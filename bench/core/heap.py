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
4bf93ec, its asr cells 1.2-1.4x slower: see below). Feature arrays and batch tensors of a real corpus are
mostly above 1 MiB, so they are still returned: on the 10-h corpus fbank's lstm cell peaked at 1,073 MB at
1 MiB and 1,070 MB at 128 KiB (one epoch, features cached), and whisper_tiny_en's lstm stage at 862 MB
(extraction and one epoch; 861 MB at 128 KiB with three).

The process sets it for itself at start (``bound_heap``) and exports ``MALLOC_MMAP_THRESHOLD_`` so that the
processes it starts (``--jobs`` workers, Slurm jobs, stage builds) get it from their first allocation. A value the
user already exported is kept. Outside glibc (macOS, musl) nothing is done.

``bench run`` (and ``bench.api.run``) decide once they know their tasks (``bound_heap_for``): a run of built-in
tasks only, at the tiny or default size, keeps glibc's own moving threshold, since those tasks are small by
construction (2.6 h for the whole suite) and the fixed threshold only cost them time (below); any corpus or
manifest task, or ``--size large``, bounds the heap as before, so the rehearsal's figures are unchanged. Measured
with ``benchmarks/bench_grid_ratio.py --base 4bf93ec --tasks builtin-ks,builtin-ic,builtin-asr`` (fast numerics,
the prompt methods at 4bf93ec's patience 5 via ``--this-option``), three rounds on one idle 2-core AMD EPYC VM on
2026-12-06: base / this 353 / 364 s, 415 / 407 s, 344 / 342 s (ratios 1.03, 0.98, 0.99); builtin-asr × lstm
50.4 s against 50.8 s. The heap changes no record: builtin-ic × linear and builtin-asr × lstm with the threshold
fixed (exported) and with glibc's own gave identical records, fast and pinned.

What the asr cells paid was the lstm head's batch tensors, 4–32 MiB each, every one a fresh ``mmap`` whose
4 KiB pages the kernel zeroes and maps one fault at a time: builtin-asr × lstm took 66.8 s at 1 MiB (10.8 M minor
page faults for the process), 67.2 s at 4 MiB, 60.5 s at 8 MiB, 48.7 s at 32 MiB (1.0 M) and 45.3 s with the
moving threshold (whisper_tiny_en, features cached, one process each, 2026-12-05); its prompt-gslm-lv cell
52–55 s at all of them. A 32 MiB threshold inside the training loops only was tried and not kept: fbank's lstm
cell on the 10-h corpus (one epoch) then peaked at 1,322–1,344 MB against 1,073 MB, 1.29–1.36× its tenth-size
peak. Also tried and not kept: torch's own transparent-huge-page allocation (``THP_MEM_ALLOC_ENABLE=1``, read by c10's
CPU allocator: a tensor of 2 MiB or more is page-aligned and ``madvise(MADV_HUGEPAGE)``; pytorch
c10/core/alignment.h ``gAlloc_threshold_thp``, c10/core/impl/alloc_cpu.cpp). It took builtin-asr × lstm to 58.6 s
(5.0 M faults with its prompt-gslm-lv cell), records identical and the rehearsal's peaks unchanged, but the
15-cell grid took 374 s against 4bf93ec's 317 s (1.18×; 1.15× without it): the prompt cells ran 1.1–1.2× slower
(builtin-ks × prompt-gslm-lv 19.9 s against 17.3 s; why was not measured). So the asr cells are still 1.2–1.4×
slower than with the moving threshold. Also tried (2026-12-05, 5be7042, not kept): the threshold fixed at 32 MiB for
the whole process, with and without ``malloc_trim(0)`` every 10 training steps (glibc then also gives back the free
pages inside the heap). builtin-asr × lstm took 57 s and 65 s (0.9 M and 2.7 M faults) against 75–82 s at 1 MiB
(11–12 M faults; whole command, features cached); fbank's lstm cell on the 10-h corpus (one epoch) took 152 s and
151 s against 195 s, but peaked at 1,339 MB and 1,266 MB against 1,035 MB at 1 MiB: what the heap keeps is not
only free pages a trim returns. glibc's malloc offers no setting that is both.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable

MMAP_THRESHOLD = 1024 * 1024  # 1 MiB: see above
ENV = "MALLOC_MMAP_THRESHOLD_"  # read by glibc when a process starts
M_MMAP_THRESHOLD = -3  # <malloc.h>


def bound_heap_for(sources: Iterable[str], size: str = "default") -> bool:
    """:func:`bound_heap` unless every task of the run is built-in (``data.source``) at its tiny or default size:
    those are small by construction, and under glibc's own threshold their cells run up to 1.4x faster (the lstm
    head's batch tensors; see above); True when set."""
    if size != "large" and all(source == "builtin" for source in sources):
        return False
    return bound_heap()


def bound_heap() -> bool:
    """Fix this process's malloc mmap threshold (glibc) and export it to child processes; True when set."""
    if ENV in os.environ:
        return False  # the user's (or the parent's) value is already in effect since this process started
    os.environ[ENV] = str(MMAP_THRESHOLD)
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
