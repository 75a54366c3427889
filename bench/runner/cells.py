"""Where the planned cells run: the one seam every executor implements, and a cell's life in a worker.

The run plan (:mod:`bench.runner.plan`) resolves every cell, then hands the pending ones to an :class:`Executor`:
:class:`LocalExecutor` (this machine, ``opts.jobs`` worker processes) or ``bench.runner.slurm.SlurmExecutor`` (a
job array). Both run each cell through :func:`run_cell` in a process set up by :func:`init_worker`, so a worker's
life (its threads, ending with the process that started it), a cell's errors (values, never lost tracebacks) and
the run-file entries ``bench status`` reads (started, interrupted, resumed: :mod:`bench.runner.runfile`) are the
same code whatever the executor.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

from bench.core.errors import BenchError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5  # the fallback where the parent-death signal is not available (macOS) or was missed
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(BenchError):
    """A cell could not write (its record, its scratch, a cache) because the disk or quota is full: the cells
    after it would fail the same way after their training, so the executor starts no more."""


class Executor(Protocol):
    """Runs the pending cells of a plan: calls ``finish(cell, result)`` once per cell, ``result`` being
    ``(record path, written?)`` or the exception as a value, and keeps ``run`` (the run file) up to date."""

    def run(self, cells: list, opts, results_dir: Path, finish: Callable, run, log: Callable[[str], None]) -> None:
        ...


def executor_for(opts) -> Executor:
    if opts.executor == "slurm":
        from bench.runner.slurm import SlurmExecutor

        return SlurmExecutor()
    return LocalExecutor()


# ---------------------------------------------------------------------------------------------------------------
# a worker's life
# ---------------------------------------------------------------------------------------------------------------
def init_worker(threads: int, parent_pid: int | None = None) -> None:
    """Set up a process that runs cells: ``threads`` torch threads; with ``parent_pid``, the process ends when
    that parent does, however it ends (``kill -9`` included), so no worker trains on, or writes records, after its
    run was stopped. The parent is watched before torch is imported (seconds on a busy machine). Under
    ``--numerics pinned`` (inherited in the environment) torch must run the pinned kernels."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    import torch

    from bench.core.numerics import check_process

    check_process()
    torch.set_num_threads(threads)


def die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel sends this process SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``); and, on
    every system, a daemon thread ends the process once the parent pid is no longer its parent (reparented after
    the parent died; this also covers a parent that died before the prctl call)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl (exotic libc): the thread below still watches
            pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


def run_cell(cell, opts, results_dir: Path):
    """One cell in a worker: ``(path, written)`` or the exception as a value (a BenchError's one-line message
    survives pickling as a plain BenchError; an OS error names its file and cause)."""
    from bench.runner.plan import run_one

    try:
        return run_one(cell.task, cell.manifest, cell.method, cell.seed, opts, results_dir, None, lambda s: None,
                       dropped_bad_audio=cell.dropped_bad_audio, resolved=cell.resolved, prepare_s=cell.prepare_s)
    except BenchError as err:
        return DiskFullError(err.message) if is_disk_full(err) else BenchError(err.message)
    except Exception as err:  # noqa: BLE001
        return DiskFullError(error_line(err)) if is_disk_full(err) else RuntimeError(error_line(err))


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is, or was raised while handling, an OS error saying the disk or the quota is full (a
    BenchError from a writer keeps the OSError as its context)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, DiskFullError) or (isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def error_line(err: BaseException) -> str:
    """One line for a failed cell: an OS error as ``cannot write PATH: No space left on device [errno 28]``."""
    if isinstance(err, BenchError):
        return err.message
    if isinstance(err, OSError) and err.errno is not None:
        from bench.data.manifest import write_error

        return write_error(err.filename or "(unknown file)", "file", err).message
    line = f"{type(err).__name__}: {err}"
    cause = _os_error_in(err)
    if cause is not None and cause.errno in DISK_FULL_ERRNOS:  # e.g. torch's "unexpected pos" over an ENOSPC
        return f"{line} ({cause.strerror} [errno {cause.errno}]{f' writing {cause.filename}' if cause.filename else ''})"
    return line


def _os_error_in(err: BaseException | None) -> OSError | None:
    for _ in range(10):
        if err is None or isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


# ---------------------------------------------------------------------------------------------------------------
# the local executor
# ---------------------------------------------------------------------------------------------------------------
class LocalExecutor:
    """This machine: serially in this process (``opts.jobs`` 1) or in ``opts.jobs`` spawned worker processes that
    end with this one. Each cell's run-file entry says when it started; SIGTERM (like Ctrl-C) stops the workers,
    marks the cells that were running as interrupted and ends the run."""

    def run(self, cells: list, opts, results_dir: Path, finish: Callable, run, log: Callable[[str], None]) -> None:
        from bench.runner.runfile import entry_for, mark_interrupted_runs

        entries = {id(c): entry_for(c, results_dir, opts.upstream) for c in cells}
        resumed = mark_interrupted_runs(results_dir, log)  # earlier runs of this directory killed mid-cell
        for e in entries.values():
            e.resumes = resumed.get((e.record, e.config_hash))

        full: list[str] = []  # the first disk-full error: no cell starts after it

        def done(cell, result) -> None:
            entry = entries[id(cell)]
            entry.ended = _now()
            if isinstance(result, BaseException):
                if not isinstance(result, DiskFullError) and is_disk_full(result):
                    result = DiskFullError(error_line(result))
                entry.error = getattr(result, "message", None) or str(result)
                if isinstance(result, DiskFullError) and not full:
                    full.append(result.message)
                    log(f"[red]disk full[/]: {_escape(result.message)}; no more cells are started")
            finish(cell, result)

        def not_started(cell) -> None:
            entries[id(cell)].error = f"not started: the disk is full ({full[0]})"
            finish(cell, BenchError("not started: the disk is full (see above)"))

        def started(cell) -> None:
            entries[id(cell)].started = _now()
            run.save(log)

        run.cells = list(entries.values())
        run.save(log)
        try:
            with _sigterm_as_interrupt():
                if opts.jobs <= 1:
                    self._serial(cells, opts, results_dir, started, done, log, full, not_started)
                else:
                    self._pool(cells, opts, results_dir, started, done, full, not_started)
        except BaseException as err:
            run.interrupted = True
            for e in run.cells:
                if e.started and not e.ended:
                    e.interrupted = True
            if isinstance(err, KeyboardInterrupt):  # Ctrl-C, SIGTERM: typer then exits 130 without a word
                log(f"[yellow]interrupted[/]: workers stopped, {sum(e.interrupted for e in run.cells)} running "
                    f"cell(s) marked interrupted, finished records kept; `bench status {_escape(str(results_dir))}` "
                    "lists them; the same command again resumes")
            raise
        finally:
            run.finished = not run.interrupted
            run.save(log)

    @staticmethod
    def _serial(cells, opts, results_dir, started, done, log, full, not_started) -> None:
        import torch

        from bench.core.numerics import check_process
        from bench.runner.plan import run_one

        check_process(opts.numerics)
        threads = torch.get_num_threads()
        torch.set_num_threads(opts.cell_threads)
        try:
            for cell in cells:
                if full:
                    not_started(cell)
                    continue
                started(cell)
                try:
                    result = run_one(cell.task, cell.manifest, cell.method, cell.seed, opts, results_dir, None, log,
                                     dropped_bad_audio=cell.dropped_bad_audio, resolved=cell.resolved,
                                     prepare_s=cell.prepare_s)
                except Exception as err:  # noqa: BLE001 - one failure must not lose the rest of the grid
                    result = err
                done(cell, result)
        finally:
            torch.set_num_threads(threads)

    @staticmethod
    def _pool(cells, opts, results_dir, started, done, full, not_started) -> None:
        """At most ``opts.jobs`` cells handed to the pool at a time, so a cell handed over is a cell running
        (its run-file entry says so), longest first."""
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        from bench.runner.plan import longest_first

        ctx = multiprocessing.get_context("spawn")  # no fork of a process whose OpenMP pool already runs

        def new_pool():
            return ProcessPoolExecutor(max_workers=opts.jobs, mp_context=ctx, initializer=init_worker,
                                       initargs=(opts.cell_threads, os.getpid()))

        queue = list(longest_first(cells))
        pool = new_pool()
        futures: dict = {}
        try:
            while queue or futures:
                while queue and full:
                    not_started(queue.pop(0))
                while queue and len(futures) < opts.jobs:
                    if getattr(pool, "_broken", False) and not futures:  # a worker died (killed, out of memory):
                        pool.shutdown(wait=True)  # its cells failed; the rest of the grid gets fresh workers
                        pool = new_pool()
                    elif getattr(pool, "_broken", False):
                        break  # collect the broken pool's futures first
                    cell = queue.pop(0)
                    started(cell)
                    try:
                        futures[pool.submit(run_cell, cell, opts, results_dir)] = cell
                    except BrokenProcessPool:  # broke since the check: this cell goes to the fresh pool
                        queue.insert(0, cell)
                        break
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    cell = futures.pop(future)
                    try:
                        result = future.result()
                    except Exception as err:  # noqa: BLE001 - a worker that died (killed, out of memory)
                        result = RuntimeError(f"worker process failed: {type(err).__name__}: {err}")
                    done(cell, result)
        except BaseException:
            stop_workers(pool)
            raise
        pool.shutdown(wait=True)


def stop_workers(pool) -> None:
    """Kill a pool's worker processes now (they would finish their cells first) and drop what is queued."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError):
            pass
    pool.shutdown(wait=False, cancel_futures=True)


class _sigterm_as_interrupt:
    """SIGTERM handled like Ctrl-C while cells run (main thread only): the executor's clean-up runs."""

    def __enter__(self):
        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


def _escape(text: str) -> str:
    """``text`` safe inside a rich console line (an ``[errno 28]`` is not markup)."""
    from rich.markup import escape

    return escape(text)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = ["Executor", "LocalExecutor", "executor_for", "init_worker", "die_with_parent", "run_cell", "error_line",
           "is_disk_full", "DiskFullError", "stop_workers", "PARENT_POLL_S"]
