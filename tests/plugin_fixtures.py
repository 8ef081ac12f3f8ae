"""Helpers of the plugin tests: the embedded task, a tiny model, labelled examples, and a word task
whose answers are no digits."""

from __future__ import annotations

import random
from typing import ClassVar

from selfloop.core.types import Example, Problem
from selfloop.plugins.tasks.reversed_addition import ReversedAddition

TASK = ReversedAddition()
TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2, "max_positions": 32, "max_position_offset": 4}


def tiny_policy(**options):
    """A fresh tiny embedded model (``options`` over ``TINY``'s)."""
    from selfloop.plugins.model.embedded import Embedded

    return Embedded(**{**TINY, **options}).create()


def labelled(count=40, difficulty=2, seed=0):
    return [Example(p.prompt, p.answer, difficulty, "labelled", meta={"answer": p.answer})
            for p in TASK.problems(difficulty, count, random.Random(seed))]


class WordTask:
    """Name the opposite: a finite task over difficulties 1, 2 and 4, its answer a word after
    ``####`` with reasoning before it (GSM8K's format), a budget of 40 tokens, and a held-out part
    smaller than most requests."""

    WORDS: ClassVar[dict] = {1: [("hot", "cold"), ("up", "down"), ("big", "small")],
                             2: [("early", "late"), ("light", "dark"), ("wet", "dry")],
                             4: [("ancient", "modern")]}

    def __init__(self):
        self.verified = []  # the batches verify_many was given

    def difficulties(self):
        return [1, 2, 4]

    def problems(self, difficulty, count, rng, split="train"):
        pairs = self.WORDS[difficulty]
        if split == "held_out":  # the last pair, once: fewer problems than asked
            pairs, count = pairs[-1:], min(count, 1)
        else:
            pairs = pairs[:-1] or pairs
        return [Problem(f"opposite of {word} is", answer, difficulty)
                for word, answer in (rng.choice(pairs) for _ in range(count))]

    def extract_answer(self, completion):
        _, mark, answer = completion.rpartition("####")
        return answer.strip() if mark else ""

    def max_new_tokens(self, problem):
        return 40

    def demonstration(self, problem):
        return f"the opposite is {problem.answer} #### {problem.answer}"

    def verify(self, problem, completion):
        return self.extract_answer(completion) == problem.answer

    def verify_many(self, problems, completions):
        self.verified.append(len(problems))
        return [self.verify(p, c) for p, c in zip(problems, completions)]


class RecordingGenerator:
    """Answers every prompt with ``answers`` (cycled), recording each call's ``max_new_tokens``."""

    def __init__(self, *answers):
        self.answers, self.budgets = list(answers) or ["#### cold"], []

    def generate(self, policy, prompts, *, n, temperature, max_new_tokens, seed):
        self.budgets.append(max_new_tokens)
        return [[self.answers[k % len(self.answers)] for k in range(n)] for _ in prompts]
