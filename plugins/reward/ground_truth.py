"""Reward 1.0 for a completion the task's verifier accepts, else 0.0."""

from __future__ import annotations

from collections.abc import Sequence

from selfloop.core.hookspecs import hookimpl
from selfloop.core.kinds import Task
from selfloop.core.tasks import task_view
from selfloop.core.types import Problem


class GroundTruthReward:
    """Scores completions against the ground-truth answer of each problem (one batched verify)."""

    def reward(
        self, problems: Sequence[Problem], completions: Sequence[Sequence[str]], *, task: Task
    ) -> list[list[float]]:
        pairs = [(problem, c) for problem, group in zip(problems, completions, strict=True)
                 for c in group]
        verdicts = iter(task_view(task).verify_many([p for p, _ in pairs], [c for _, c in pairs]))
        return [[1.0 if next(verdicts) else 0.0 for _ in group] for group in completions]


@hookimpl(trylast=True)
def register_rewarder(register):
    register("ground_truth", GroundTruthReward,
             description="1.0 if the task's verifier accepts the completion, else 0.0")
