"""Helpers of the plugin tests: the embedded task, a tiny model's settings, and labelled examples."""

from __future__ import annotations

import random

from selfloop.core.config import ModelSettings
from selfloop.core.types import Example
from selfloop.plugins.tasks.reversed_addition import ReversedAddition

TASK = ReversedAddition()
TINY = ModelSettings(n_layer=1, n_embd=32, n_head=2, max_positions=32, max_position_offset=4)


def labelled(count=40, difficulty=2, seed=0):
    return [Example(p.prompt, p.answer, difficulty, "labelled", meta={"answer": p.answer})
            for p in TASK.problems(difficulty, count, random.Random(seed))]
