"""Greedy decoding: the model's single most likely answer, no extra test-time compute."""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl

from .answers import answer_budget


class Greedy:
    """One greedy answer per problem, within the task's token budget."""

    def refine(self, policy, problems, *, generator, rewarder=None, seed=0, task=None):
        if not problems:
            return []
        out = generator.generate(policy, [p.prompt for p in problems], n=1, temperature=0.0,
                                 max_new_tokens=answer_budget(problems, task), seed=seed)
        return [group[0].strip() for group in out]


@hookimpl(trylast=True)
def register_refiner(register):
    register("greedy", Greedy, description="greedy decoding (no test-time compute)")
