"""Self-consistency reward: a completion scores the share of its group that gives the same answer.

Answers are what the task extracts from a completion (``extract_answer``), so two phrasings of one
answer agree; a completion without an answer scores 0. Needs no label, so it scores the model's own
answers to problems past the labelled frontier.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import Problem

from ..refine.answers import extractor


class MajorityVoteReward:
    """Score = (completions in the group with the same extracted answer) / (group size)."""

    def reward(self, problems: Sequence[Problem], completions: Sequence[Sequence[str]], *, task=None
               ) -> list[list[float]]:
        extract = extractor(task)
        scores = []
        for _, group in zip(problems, completions, strict=True):
            answers = [extract(c) for c in group]
            counts = Counter(answers)
            scores.append([counts[a] / len(answers) if a else 0.0 for a in answers])
        return scores


@hookimpl(trylast=True)
def register_rewarder(register):
    register("majority_vote", MajorityVoteReward,
             description="share of the group agreeing with each completion's answer (no labels needed)")
