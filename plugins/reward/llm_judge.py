"""LLM-as-judge: a language model (through selfloop.core.llm) scores each completion from 0 to 1."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import Problem

PROMPT = (
    "You grade answers. Problem: {prompt}\nProposed answer: {completion}\n"
    "Reply with one number between 0 and 1: how likely the answer is correct."
)


class LLMJudgeReward:
    """Asks the configured LLM to grade each completion; the first number of its reply is the score."""

    def __init__(self, model: str | None = None, api_base: str | None = None,
                 temperature: float = 0.0, mock_response=None):
        from selfloop.core.llm import LLM

        model = model or os.environ.get("SELFLOOP_LLM_MODEL")
        if not model:
            raise ValueError("llm_judge needs an LLM: set its `model` option or SELFLOOP_LLM_MODEL")
        self.llm = LLM(model=model, api_base=api_base or os.environ.get("SELFLOOP_LLM_API_BASE"),
                       temperature=temperature, max_tokens=16, mock_response=mock_response)

    def reward(self, problems: Sequence[Problem], completions: Sequence[Sequence[str]], *, task=None
               ) -> list[list[float]]:
        return [[self.grade(problem, c) for c in group]
                for problem, group in zip(problems, completions, strict=True)]

    def grade(self, problem: Problem, completion: str) -> float:
        reply = self.llm.complete([{"role": "user", "content": PROMPT.format(
            prompt=problem.prompt, completion=completion)}])
        match = re.search(r"\d+(?:\.\d+)?", reply)
        return min(1.0, max(0.0, float(match.group()))) if match else 0.0


@hookimpl(trylast=True)
def register_rewarder(register):
    register("llm_judge", LLMJudgeReward,
             description="an LLM grades each completion 0..1 (litellm; needs a configured model)")
