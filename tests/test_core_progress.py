"""Progress off a terminal: long work prints timestamped heartbeat lines, short work prints none."""

from __future__ import annotations

import io
import re

from selfloop.core import progress
from selfloop.core.progress import Heartbeat, progress_bar

LINE = re.compile(r"^\d\d:\d\d:\d\d   train: ")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_heartbeat_speaks_once_per_interval_and_at_the_end():
    clock, out = Clock(), io.StringIO()
    beat = Heartbeat("train", 700, every=60, stream=out, clock=clock)
    for _ in range(300):  # 300 steps over 150 s: lines at 60 s and 120 s, never more often
        clock.now += 0.5
        beat.advance()
    beat.finish()
    lines = out.getvalue().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert [line.split(": ", 1)[1] for line in lines] == [
        "120/700 after 60 s", "240/700 after 120 s", "done, 300/700 in 150 s"]


def test_short_work_prints_nothing():
    clock, out = Clock(), io.StringIO()
    beat = Heartbeat("train", 10, every=60, stream=out, clock=clock)
    for _ in range(10):
        clock.now += 1
        beat.advance()
    beat.finish()
    assert out.getvalue() == ""


def test_progress_bar_off_a_terminal_prints_plain_lines(capsys, monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.0)  # every step is past the interval
    with progress_bar("train", 2) as advance:
        advance()
        advance()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("   ", 1)[1] for line in lines] == [
        "train: 1/2 after 0 s", "train: 2/2 after 0 s", "train: done, 2/2 in 0 s"]
    monkeypatch.setenv("SELFLOOP_PROGRESS", "0")
    with progress_bar("train", 2) as advance:
        advance()
    assert capsys.readouterr().err == ""
