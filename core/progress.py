"""Progress for long work (training steps, generated sequences), one helper for every stage.

On a terminal, a transient bar on stderr; nested bars (a generator's inside a round's) are fine.
Off one (a log file, a pipe), where a bar would leave blank lines, work that runs longer than
``HEARTBEAT_S`` prints a plain timestamped line on stderr every ``HEARTBEAT_S`` seconds and one when
it ends, so a log never goes silent for minutes; short work prints nothing.
``SELFLOOP_PROGRESS=0`` turns both off.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

HEARTBEAT_S = 60.0


@contextmanager
def progress_bar(label: str, total: int, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n=1, description=None)`` for a bar of ``total`` units."""
    if not enabled or total <= 0 or os.environ.get("SELFLOOP_PROGRESS", "1") == "0":
        yield lambda n=1, description=None: None
        return
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        heartbeat = Heartbeat(label, total)
        yield heartbeat.advance
        heartbeat.finish()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), transient=True, console=console)
    task = bar.add_task(label, total=total)

    def advance(n: int = 1, description: str | None = None) -> None:
        bar.update(task, advance=n, **({"description": description} if description else {}))

    with bar:
        yield advance


class Heartbeat:
    """Plain progress lines off a terminal: ``HH:MM:SS   LABEL: DONE/TOTAL after S s``."""

    def __init__(self, label: str, total: int, *, every: float | None = None, stream=None,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.clock = label, total, clock
        self.every = HEARTBEAT_S if every is None else every
        self.stream = stream or sys.stderr
        self.done, self.started = 0, clock()
        self.next_line, self.spoke = self.started + self.every, False

    def advance(self, n: int = 1, description: str | None = None) -> None:
        self.done += n
        if description:
            self.label = description
        now = self.clock()
        if now >= self.next_line:
            self._line(f"{self.done}/{self.total} after {now - self.started:.0f} s")
            self.next_line = now + self.every

    def finish(self) -> None:
        if self.spoke:  # only long work ends with a line: short work said nothing to end
            self._line(f"done, {self.done}/{self.total} in {self.clock() - self.started:.0f} s")

    def _line(self, text: str) -> None:
        self.spoke = True
        print(f"{time.strftime('%H:%M:%S')}   {self.label}: {text}", file=self.stream, flush=True)
