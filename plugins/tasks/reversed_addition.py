"""Reversed multi-digit addition (Lee et al. 2025): digits least-significant first.

A problem of difficulty n adds two n-digit numbers. Operands are zero-padded to n digits and the
sum to n + 1, all written reversed, so the model emits the carry in the order it computes it::

    prompt  "4321+8765="   (1234 + 5678)
    answer  "21896"        (6912, reversed and padded to 5 digits)
"""

from __future__ import annotations

import random

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import Problem


class ReversedAddition:
    """Problems ``a+b=`` with reversed digits; the answer is the reversed, padded sum."""

    def __init__(self, min_difficulty: int = 1):
        self.min_difficulty = min_difficulty

    def problems(self, difficulty: int, count: int, rng: random.Random) -> list[Problem]:
        if difficulty < self.min_difficulty:
            raise ValueError(f"difficulty {difficulty} is below the minimum {self.min_difficulty}")
        out = []
        for _ in range(count):
            a = rng.randrange(10 ** (difficulty - 1) if difficulty > 1 else 0, 10**difficulty)
            b = rng.randrange(10 ** (difficulty - 1) if difficulty > 1 else 0, 10**difficulty)
            out.append(self.make(a, b, difficulty))
        return out

    @staticmethod
    def make(a: int, b: int, digits: int) -> Problem:
        prompt = f"{str(a).zfill(digits)[::-1]}+{str(b).zfill(digits)[::-1]}="
        answer = str(a + b).zfill(digits + 1)[::-1]
        return Problem(prompt=prompt, answer=answer, difficulty=digits)

    def difficulties(self):
        from selfloop.core.tasks import Difficulties

        return Difficulties(low=self.min_difficulty)

    @staticmethod
    def max_new_tokens(problem: Problem) -> int:
        """The sum's digits (one more than an operand's), and two tokens of slack."""
        return problem.difficulty + 1 + 2

    @staticmethod
    def extract_answer(completion: str) -> str:
        """The answer part of a completion: its leading digits."""
        digits = []
        for ch in completion.strip():
            if not ch.isdigit():
                break
            digits.append(ch)
        return "".join(digits)

    extract = extract_answer  # the name it had before the Protocol named it

    @staticmethod
    def answer_for(prompt: str) -> str | None:
        """The true answer of a prompt in this task's format, or None when it is not one.

        Lets data of doubtful origin (an LLM's problems and answers) be checked against the truth.
        """
        left, plus, right = prompt.rstrip("=").partition("+")
        if not (plus and prompt.endswith("=") and left.isdigit() and right.isdigit()
                and len(left) == len(right)):
            return None
        digits = len(left)
        return str(int(left[::-1]) + int(right[::-1])).zfill(digits + 1)[::-1]

    def verify(self, problem: Problem, completion: str) -> bool:
        if problem.answer is None:
            raise ValueError(f"problem {problem.prompt!r} has no ground-truth answer")
        return self.extract_answer(completion) == problem.answer


@hookimpl(trylast=True)
def register_task(register):
    register("reversed_addition", ReversedAddition,
             description="reversed multi-digit addition; difficulty = digits per operand")
