"""Thread-parallel maps for the CPU stages whose work runs outside the GIL (espeak-ng in its helper process,
numpy/soxr/WORLD in C): on two cores, two threads keep both busy. Results come back in input order, so what a
stage writes does not depend on the thread count."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from bench.core.errors import BenchError

T = TypeVar("T")
R = TypeVar("R")

WORKERS_ENV = "BENCH_DATA_WORKERS"


def worker_threads() -> int:
    """``BENCH_DATA_WORKERS`` (a positive integer), else 2."""
    raw = os.environ.get(WORKERS_ENV, "2")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise BenchError(f"{WORKERS_ENV} must be a positive integer, got {raw!r}")
    return n


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None,
                name: str = "bench") -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads (default :func:`worker_threads`), yielding in input order; on
    an error, items not yet started are dropped and the error is raised."""
    workers = worker_threads() if workers is None else workers
    if workers == 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        yield from pool.map(fn, items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
