"""A fixed held-out set: the same problems at every evaluation (drawn once from ``seed``).

Drawn from the task's held-out part, at the difficulties the task offers (a finite part may give
fewer problems than asked); answers are verified in one batch.
"""

from __future__ import annotations

import random

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tasks import task_view
from selfloop.core.types import Evaluation

from .dynamic_benchmark import offered, score


class HeldOut:
    """``per_difficulty`` problems per difficulty from a fixed seed; prompts seen in training are
    counted as ``contaminated`` and left out of the score."""

    def __init__(self, difficulties: list[int] | None = None, min_difficulty: int = 1,
                 max_difficulty: int = 12, per_difficulty: int = 200, seed: int = 20250201):
        self.difficulties = list(difficulties or range(min_difficulty, max_difficulty + 1))
        self.per_difficulty, self.seed = per_difficulty, seed

    def evaluate(self, policy, *, task, refiner, generator, rewarder, seen_prompts, seed):
        rng = random.Random(f"held_out:{self.seed}")
        view = task_view(task)
        drawn = [p for d in offered(view, self.difficulties)
                 for p in view.problems(d, self.per_difficulty, rng, split="held_out")]
        problems = [p for p in drawn if p.prompt not in seen_prompts]
        accuracy, metrics, _ = score(policy, problems, task=task, refiner=refiner,
                                     generator=generator, rewarder=rewarder, seed=seed)
        metrics["contaminated"] = len(drawn) - len(problems)
        return Evaluation("held_out", metrics, accuracy, {"seed": self.seed, "problems": len(problems)})


@hookimpl(trylast=True)
def register_evaluator(register):
    register("held_out", HeldOut, description="a fixed held-out set (same problems every time)")
