"""Self-Refine (Madaan et al. 2023) with an LLM as the critic and reviser of the policy's answers.

The policy answers greedily; the LLM is shown the problem and the answer and either confirms it
(replies ``OK``) or replies with a corrected answer. ``rounds`` such exchanges at most.
"""

from __future__ import annotations

import os

from selfloop.core.hookspecs import hookimpl

from .greedy import Greedy

PROMPT = (
    "Problem: {prompt}\nProposed answer: {answer}\nIf the answer is correct reply with exactly OK. "
    "Otherwise reply with only the corrected answer."
)


class SelfRefine:
    """Greedy answer, then up to ``rounds`` LLM critiques and revisions per problem."""

    def __init__(self, model: str | None = None, api_base: str | None = None, rounds: int = 1,
                 mock_response=None):
        from selfloop.core.llm import LLM

        model = model or os.environ.get("SELFLOOP_LLM_MODEL")
        if not model:
            raise ValueError("self_refine needs an LLM: set its `model` option or SELFLOOP_LLM_MODEL")
        self.llm = LLM(model=model, api_base=api_base or os.environ.get("SELFLOOP_LLM_API_BASE"),
                       temperature=0.0, max_tokens=64, mock_response=mock_response)
        self.rounds = rounds

    def refine(self, policy, problems, *, generator, rewarder=None, seed=0, task=None):
        answers = Greedy().refine(policy, problems, generator=generator, seed=seed, task=task)
        for i, problem in enumerate(problems):
            for _ in range(self.rounds):
                reply = self.llm.complete([{"role": "user", "content": PROMPT.format(
                    prompt=problem.prompt, answer=answers[i])}]).strip()
                if not reply or reply.upper() == "OK":
                    break
                answers[i] = reply  # the whole reply: an answer may be reasoning, then the answer
        return answers


@hookimpl(trylast=True)
def register_refiner(register):
    register("self_refine", SelfRefine,
             description="an LLM critiques and revises the policy's greedy answers (Self-Refine)")
