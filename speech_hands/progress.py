"""The one progress-bar style of the command line: description, bar, done/total, elapsed, remaining."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(console: Console | None = None, *, disable: bool = False, transient: bool = False) -> Progress:
    """A rich progress bar on ``console`` (stderr by default, so stdout stays clean for ``--json``)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=disable,
        transient=transient,
    )
