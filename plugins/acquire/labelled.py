"""The labelled seed data: the task's own problems, with ground-truth answers, up to a difficulty.

Each example teaches the task's worked solution (``demonstration``: reasoning, then the answer;
by default the bare answer), and records the answer itself as ``meta["answer"]``. Only the
difficulties the task offers between ``min_difficulty`` and ``max_difficulty`` are drawn, from
its training part.

Only the base round (round 0) acquires them; later rounds keep them through the ``accumulate``
selector, so the original labels are never lost.
"""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tasks import task_view
from selfloop.core.tunable import tunable
from selfloop.core.types import Example, within_budget

PER_DIFFICULTY = tunable(4000, low=10, high=1000000)


class LabelledProblems:
    """``per_difficulty`` labelled problems at each difficulty from ``min_difficulty`` to ``max_difficulty``."""

    def __init__(self, min_difficulty: int = 1, max_difficulty: int = 5,
                 per_difficulty: int = PER_DIFFICULTY, every_round: bool = False):
        if max_difficulty < min_difficulty:
            raise ValueError(f"max_difficulty {max_difficulty} < min_difficulty {min_difficulty}")
        self.min_difficulty, self.max_difficulty = min_difficulty, max_difficulty
        self.per_difficulty, self.every_round = per_difficulty, every_round

    def acquire(self, *, task, policy, generator, round_index, rng, budget=None):
        if round_index > 0 and not self.every_round:
            return []
        task = task_view(task)
        examples = []
        per_difficulty = within_budget(self.per_difficulty, budget, "max_problems")
        for difficulty in task.difficulties.up_to(self.max_difficulty):
            if difficulty < self.min_difficulty:
                continue
            for problem in task.problems(difficulty, per_difficulty, rng, split="train"):
                demonstration = task.demonstration(problem)
                if demonstration is not None:
                    examples.append(Example(problem.prompt, demonstration, difficulty, "labelled",
                                            meta={"answer": problem.answer}))
        return examples


@hookimpl(trylast=True)
def register_acquirer(register):
    register("labelled", LabelledProblems,
             description="the task's labelled problems up to a difficulty (the seed data, round 0)")
