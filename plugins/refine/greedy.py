"""Greedy decoding: the model's single most likely answer, no extra test-time compute."""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl


def answer_budget(problems, slack_tokens: int = 2) -> int:
    """Tokens to allow for an answer: the largest difficulty, its carry digit, and some slack."""
    return max((p.difficulty for p in problems), default=0) + 1 + slack_tokens


class Greedy:
    """One greedy answer per problem."""

    def refine(self, policy, problems, *, generator, rewarder=None, seed=0):
        if not problems:
            return []
        out = generator.generate(policy, [p.prompt for p in problems], n=1, temperature=0.0,
                                 max_new_tokens=answer_budget(problems), seed=seed)
        return [group[0].strip() for group in out]


@hookimpl(trylast=True)
def register_refiner(register):
    register("greedy", Greedy, description="greedy decoding (no test-time compute)")
