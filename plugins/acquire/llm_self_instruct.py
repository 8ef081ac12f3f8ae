"""Self-Instruct-style acquisition (Wang et al. 2023) through a language model.

The LLM is shown a few of the task's labelled problems and asked for new ones in the same format
with their answers, one ``problem answer`` per line (separated by a space). Lines that do not parse are skipped; the
LLM's answers are recorded as ``meta["answer"]``, so the optimizer's rejection step checks them
with the task's verifier before any is learned.
"""

from __future__ import annotations

import os
import re

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tasks import task_view
from selfloop.core.types import Example, within_budget

INSTRUCTION = (
    "Here are example problems with answers, one per line as `problem answer`:\n{examples}\n"
    "Write {count} new, different problems of difficulty {difficulty} in exactly the same format, "
    "one per line, nothing else."
)
LINE = re.compile(r"^\s*(?P<prompt>\S+)\s+(?P<answer>\S+)\s*$")


class LLMSelfInstruct:
    """Asks an LLM (litellm through selfloop.core.llm) for new labelled problems each round."""

    def __init__(self, model: str | None = None, api_base: str | None = None, count: int = 20,
                 difficulties: list[int] | None = None, shots: int = 5, every_round: bool = True,
                 temperature: float = 0.7, mock_response=None):
        from selfloop.core.llm import LLM

        model = model or os.environ.get("SELFLOOP_LLM_MODEL")
        if not model:
            raise ValueError("llm_self_instruct needs an LLM: set its `model` option or "
                             "SELFLOOP_LLM_MODEL")
        self.llm = LLM(model=model, api_base=api_base or os.environ.get("SELFLOOP_LLM_API_BASE"),
                       temperature=temperature, mock_response=mock_response)
        self.count, self.shots, self.every_round = count, shots, every_round
        self.difficulties = list(difficulties or [3])

    def acquire(self, *, task, policy, generator, round_index, rng, budget=None):
        if round_index > 0 and not self.every_round:
            return []
        examples = []
        count = within_budget(self.count, budget, "max_problems")
        for difficulty in self.difficulties:
            shots = task_view(task).problems(difficulty, self.shots, rng, split="train")
            text = self.llm.complete([{"role": "user", "content": INSTRUCTION.format(
                examples="\n".join(f"{p.prompt} {p.answer}" for p in shots),
                count=count, difficulty=difficulty)}])
            written = [Example(m["prompt"], m["answer"], difficulty, "llm", meta={"answer": m["answer"]})
                       for m in map(LINE.match, text.splitlines()) if m]
            examples += written[:count] if budget else written  # a probe keeps to its budget
        return examples


@hookimpl(trylast=True)
def register_acquirer(register):
    register("llm_self_instruct", LLMSelfInstruct,
             description="an LLM writes new labelled problems from a few examples (Self-Instruct)")
