"""Progress bars for long work (training steps, generated sequences), one helper for every stage.

Bars are transient and drawn on stderr only when it is a terminal, so logs and captured output stay
clean; nested bars (a generator's inside a round's) are fine. ``SELFLOOP_PROGRESS=0`` turns them off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(label: str, total: int, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, description=None)`` for a bar of ``total`` units."""
    console = _terminal(enabled, total)
    if console is None:
        yield lambda n=1, description=None: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), transient=True, console=console)
    task = bar.add_task(label, total=total)

    def advance(n: int = 1, description: str | None = None) -> None:
        bar.update(task, advance=n, **({"description": description} if description else {}))

    with bar:
        yield advance


def _terminal(enabled: bool, total: int):
    """The stderr console to draw on, or None: bars off, nothing to count, or no terminal (a log
    file or a pipe, where rich would leave blank lines)."""
    if not enabled or total <= 0 or os.environ.get("SELFLOOP_PROGRESS", "1") == "0":
        return None
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else None
