"""Self-consistency reward: a completion scores the share of its group that gives the same answer.

Needs no label, so it scores the model's own answers to problems past the labelled frontier.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import Problem


class MajorityVoteReward:
    """Score = (completions in the group with the same stripped text) / (group size)."""

    def reward(self, problems: Sequence[Problem], completions: Sequence[Sequence[str]], *, task=None
               ) -> list[list[float]]:
        scores = []
        for _, group in zip(problems, completions, strict=True):
            answers = [c.strip() for c in group]
            counts = Counter(answers)
            scores.append([counts[a] / len(answers) for a in answers])
        return scores


@hookimpl(trylast=True)
def register_rewarder(register):
    register("majority_vote", MajorityVoteReward,
             description="share of the group agreeing with each completion (no labels needed)")
