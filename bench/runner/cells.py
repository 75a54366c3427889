"""Where the planned cells run: the one seam every executor implements, and a cell's life in a worker.

The run plan (:mod:`bench.runner.plan`) resolves every cell, then hands the pending ones to an :class:`Executor`:
:class:`LocalExecutor` (this machine, ``opts.jobs`` worker processes) or ``bench.runner.slurm.SlurmExecutor`` (a
job array). Both run each cell through :func:`run_cell` in a process set up by :func:`init_worker`, so a worker's
life (its threads, ending with the process that started it), a cell's errors (values, never lost tracebacks) and
the run-file entries ``bench status`` reads (started, interrupted, resumed: :mod:`bench.runner.runfile`) are the
same code whatever the executor.
"""

from __future__ import annotations

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
    run was stopped. Under ``--numerics pinned`` (inherited in the environment) torch must run the pinned kernels."""
    import torch

    from bench.core.numerics import check_process

    check_process()
    torch.set_num_threads(threads)
    if parent_pid is not None:
        die_with_parent(parent_pid)


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
        return BenchError(err.message)
    except Exception as err:  # noqa: BLE001
        return RuntimeError(error_line(err))


def error_line(err: BaseException) -> str:
    """One line for a failed cell: an OS error as ``cannot write PATH: No space left on device [errno 28]``."""
    if isinstance(err, BenchError):
        return err.message
    if isinstance(err, OSError) and err.errno is not None:
        from bench.data.manifest import write_error

        return write_error(err.filename or "(unknown file)", "file", err).message
    return f"{type(err).__name__}: {err}"


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

        def done(cell, result) -> None:
            entry = entries[id(cell)]
            entry.ended = _now()
            if isinstance(result, BaseException):
                entry.error = getattr(result, "message", None) or str(result)
            finish(cell, result)

        def started(cell) -> None:
            entries[id(cell)].started = _now()
            run.save(log)

        run.cells = list(entries.values())
        run.save(log)
        try:
            with _sigterm_as_interrupt():
                if opts.jobs <= 1:
                    self._serial(cells, opts, results_dir, started, done, log)
                else:
                    self._pool(cells, opts, results_dir, started, done)
        except BaseException:
            run.interrupted = True
            for e in run.cells:
                if e.started and not e.ended:
                    e.interrupted = True
            raise
        finally:
            run.finished = not run.interrupted
            run.save(log)

    @staticmethod
    def _serial(cells, opts, results_dir, started, done, log) -> None:
        import torch

        from bench.core.numerics import check_process
        from bench.runner.plan import run_one

        check_process(opts.numerics)
        threads = torch.get_num_threads()
        torch.set_num_threads(opts.cell_threads)
        try:
            for cell in cells:
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
    def _pool(cells, opts, results_dir, started, done) -> None:
        """At most ``opts.jobs`` cells handed to the pool at a time, so a cell handed over is a cell running
        (its run-file entry says so), longest first."""
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        from bench.runner.plan import longest_first

        ctx = multiprocessing.get_context("spawn")  # no fork of a process whose OpenMP pool already runs
        queue = list(longest_first(cells))
        pool = ProcessPoolExecutor(max_workers=opts.jobs, mp_context=ctx, initializer=init_worker,
                                   initargs=(opts.cell_threads, os.getpid()))
        futures: dict = {}
        try:
            while queue or futures:
                while queue and len(futures) < opts.jobs:
                    cell = queue.pop(0)
                    started(cell)
                    futures[pool.submit(run_cell, cell, opts, results_dir)] = cell
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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = ["Executor", "LocalExecutor", "executor_for", "init_worker", "die_with_parent", "run_cell", "error_line",
           "stop_workers", "PARENT_POLL_S"]
