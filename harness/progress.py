"""Progress reporting: silent for library calls, rich progress bars in the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[[int], None]


class Reporter(Protocol):
    def task(self, description: str, total: int | None) -> AbstractContextManager[Advance]:
        """A context manager yielding a function that advances the task by n units."""
        ...

    def log(self, message: str) -> None: ...


class NullReporter:
    """Reports nothing (the default for library calls and tests)."""

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        yield lambda n: None

    def log(self, message: str) -> None:
        pass


class TaskAdvance:
    """Advances one rich progress task; `set_total` gives it a total found out late (a
    trainer knows its step count only once it starts), which turns on the ETA."""

    def __init__(self, progress: Progress, task_id: TaskID):
        self.progress = progress
        self.task_id = task_id

    def __call__(self, n: int) -> None:
        self.progress.advance(self.task_id, n)

    def set_total(self, total: int) -> None:
        self.progress.update(self.task_id, total=total)


class RichReporter:
    """Progress bars and log lines on a rich console (stderr in the CLI)."""

    def __init__(self, console: Console):
        self.console = console

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        columns = [
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=self.console, transient=False) as progress:
            yield TaskAdvance(progress, progress.add_task(description, total=total))

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)
