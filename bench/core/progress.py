"""Progress behind one small callable, so library code never imports rich itself.

On a terminal the stages are rich progress bars. When stdout is not a terminal (a Slurm log, CI, ``| tee``) bars
would print nothing for minutes, so :class:`PlainProgress` writes plain lines instead: a stage's state
(``[progress] building builtin-ks: 120/400, 31 s elapsed``) at most every ``BENCH_PROGRESS_INTERVAL`` seconds
(default 25, so a log never goes 30 s without a line), from a heartbeat thread as well, so a stage whose steps
are long (an epoch, a cell in a worker process) still shows it is alive; ``0`` turns the lines off.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

DEFAULT_INTERVAL_S = 25.0
INTERVAL_ENV = "BENCH_PROGRESS_INTERVAL"


def progress_interval() -> float:
    """Seconds between plain progress lines (``$BENCH_PROGRESS_INTERVAL``, default 25; 0 = no lines)."""
    from bench.core.errors import BenchError

    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise BenchError(f"${INTERVAL_ENV}='{raw}' must be a number of seconds (0 turns progress lines off)")
    return value


def format_elapsed(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: whole words a log reader can grep."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class ProgressReporter:
    """``reporter(description, total)`` adds a bar and returns ``advance(n=1)``; finished bars are removed."""

    def __init__(self, progress=None):
        self.progress = progress

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        if self.progress is None:
            return lambda n=1: None
        task = self.progress.add_task(description, total=total)
        done = [0]

        def advance(n: int = 1) -> None:
            done[0] += n
            self.progress.update(task, advance=n)
            if done[0] >= total:
                self.progress.remove_task(task)

        return advance


class _Stage:
    def __init__(self, description: str, total: int, started: float):
        self.description, self.total, self.done, self.started = description, total, 0, started
        self.active = started  # when it last started or advanced
        self.reported = False


class PlainProgress:
    """The same callable as :class:`ProgressReporter`, writing plain lines (``write(line)``) for logs.

    A line names the stage, done/total and the time since the stage began. Lines come when a stage advances and
    ``interval`` has passed since the last line, and from a heartbeat thread whenever ``interval`` passes with no
    line (the stage that started or advanced last, or, between stages, the time since the run began), so the gap
    between two lines stays under ``interval`` plus the heartbeat's tick. A stage that was reported is also
    reported when it ends."""

    def __init__(self, write: Callable[[str], None], interval: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.write, self.interval, self.clock = write, float(interval), clock
        self.started = clock()
        self.last_line = self.started
        self.last_stage = ""
        self.stages: list[_Stage] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        stage = _Stage(description, total, self.clock())
        with self._lock:
            self.stages.append(stage)

        def advance(n: int = 1) -> None:
            with self._lock:
                stage.done += n
                now = stage.active = self.clock()
                if stage.done >= stage.total:
                    if stage in self.stages:
                        self.stages.remove(stage)
                        self.last_stage = stage.description
                        if stage.reported or now - self.last_line >= self.interval:
                            self._emit(stage, now, " (done)")
                elif now - self.last_line >= self.interval:
                    self._emit(stage, now)

        return advance

    def _emit(self, stage: _Stage, now: float, suffix: str = "") -> None:
        stage.reported = True
        self.last_line = now
        self.write(f"[progress] {stage.description}: {stage.done}/{stage.total}{suffix}, "
                   f"{format_elapsed(now - stage.started)} elapsed")

    def heartbeat(self) -> None:
        """Write the state of every active stage (or that the run is still working) if ``interval`` has passed
        since the last line; called by the heartbeat thread, and callable directly (tests)."""
        with self._lock:
            now = self.clock()
            if now - self.last_line < self.interval:
                return
            if self.stages:  # the stage that moved last: an outer one (cells) is quiet while an inner one runs,
                # and a stage left unfinished (training that stopped early) is not reported once another began
                self._emit(max(self.stages, key=lambda st: st.active), now)
            else:
                self.last_line = now
                after = f" (after {self.last_stage})" if self.last_stage else ""
                self.write(f"[progress] working{after}, {format_elapsed(now - self.started)} elapsed")

    def start(self) -> "PlainProgress":
        tick = min(1.0, max(self.interval / 5, 0.01))

        def beat() -> None:
            while not self._stop.wait(tick):
                self.heartbeat()

        self._thread = threading.Thread(target=beat, name="bench-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


@contextmanager
def live_progress(console=None, enabled: bool | None = None) -> Iterator[Callable[[str, int], Callable]]:
    """Progress for one command: rich bars when ``console`` writes to a terminal, else plain lines every
    ``$BENCH_PROGRESS_INTERVAL`` seconds (:class:`PlainProgress`). ``enabled=False`` turns both off."""
    if console is None:
        from rich.console import Console

        console = Console()
    if enabled is False:
        yield ProgressReporter(None)
        return
    if not console.is_terminal:
        interval = progress_interval()
        if interval <= 0:
            yield ProgressReporter(None)
            return
        plain = PlainProgress(lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
                              interval).start()
        try:
            yield plain
        finally:
            plain.stop()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as p:
        yield ProgressReporter(p)
