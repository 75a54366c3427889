"""rich progress bars behind one small callable, so library code never imports rich itself."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


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


@contextmanager
def live_progress(console=None, enabled: bool = True) -> Iterator[ProgressReporter]:
    if not enabled:
        yield ProgressReporter(None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as p:
        yield ProgressReporter(p)
