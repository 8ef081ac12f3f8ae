"""Multi-step arithmetic word problems in GSM8K's format: worked reasoning, then ``#### <answer>``.

A problem of difficulty n takes n steps from a starting amount (add, take away, multiply, share)::

    prompt    "Ann has 12 apples. She buys 5 more. She gives away 3. How many apples does Ann have now?"
    solution  "12 + 5 = 17\\n17 - 3 = 14\\n#### 14"
    answer    "14"

With ``chat = true`` (the default) ``messages(problem)`` gives a system and a user message for a
model with a chat template. With ``chat = false`` the prompt is plain text in the embedded char
model's alphabet (lower-case letters, digits, spaces and ``+-*/=``), and so is the worked solution,
``"12+5=17 17-3=14 #### 14"``, but for ``#``, which that tokenizer lacks: it decodes to nothing there.

``extract_answer`` reads the number after the last ``####``; a completion without one is read by
its last number (the embedded model's case, and a model that forgets the marker). Thousands
commas are dropped and a whole decimal reads as an integer (``"1,400.0"`` is ``"1400"``).
``max_new_tokens`` is ``token_slack + tokens_per_step * steps``: a worked step is about 12 chars
(a char model's tokens) or 8 BPE tokens, so the defaults leave room for short reasoning.
A problem's split (train or held-out) is a hash of its prompt, so the two never share a problem.
"""

from __future__ import annotations

import random
import re

from selfloop.core.errors import PluginError
from selfloop.core.hookspecs import hookimpl
from selfloop.core.tasks import in_held_out
from selfloop.core.types import Problem

MARKER = "####"
SYSTEM = ("Solve the arithmetic word problem. Reason step by step, one calculation per line, then "
          f"give the final answer as a number on the last line after '{MARKER} '.")
NAMES = [("ann", "she"), ("ben", "he"), ("cara", "she"), ("dev", "he"), ("eve", "she"), ("finn", "he"),
         ("gia", "she"), ("hugo", "he"), ("iris", "she"), ("jack", "he")]
ITEMS = ["apples", "marbles", "stamps", "coins", "books", "shells", "cards", "pens", "stickers", "beads"]
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
LIMIT = 999  # amounts stay below this, so every number is at most three digits


class WordArithmetic:
    """Word problems of ``difficulty`` steps; the answer is the amount left at the end."""

    def __init__(self, min_steps: int = 1, max_steps: int = 6, chat: bool = True,
                 held_out_fraction: float = 0.2, tokens_per_step: int = 24, token_slack: int = 16):
        if not 1 <= min_steps <= max_steps:
            raise PluginError(f"task 'word_arithmetic': need 1 <= min_steps <= max_steps, not {min_steps} and {max_steps}")
        if not 0 < held_out_fraction < 1:
            raise PluginError(f"task 'word_arithmetic': held_out_fraction must be in (0, 1), not {held_out_fraction}")
        self.min_steps, self.max_steps, self.chat = min_steps, max_steps, chat
        self.held_out_fraction = held_out_fraction
        self.tokens_per_step, self.token_slack = tokens_per_step, token_slack

    def difficulties(self) -> list[int]:
        return list(range(self.min_steps, self.max_steps + 1))

    def problems(self, difficulty: int, count: int, rng: random.Random, split: str = "train") -> list[Problem]:
        if difficulty not in self.difficulties():
            raise ValueError(f"difficulty {difficulty} is not one of {self.difficulties()}")
        out: list[Problem] = []
        while len(out) < count:
            problem = self.make(difficulty, rng)
            if in_held_out(problem.prompt, self.held_out_fraction) == (split == "held_out"):
                out.append(problem)
        return out

    def make(self, steps: int, rng: random.Random) -> Problem:
        name, they = rng.choice(NAMES)
        name = name.title() if self.chat else name
        item = rng.choice(ITEMS)
        value = rng.randint(2, 30)
        sentences, lines = [f"{name} has {value} {item}"], []
        for _ in range(steps):
            sentence, sign, k, after = _step(value, they, item, rng)
            sentences.append(sentence)
            lines.append((value, sign, k, after))
            value = after
        question = f"how many {item} does {name} have now"
        if self.chat:
            prompt = " ".join(f"{_sentence(s)}." for s in sentences) + f" {_sentence(question)}?"
        else:
            prompt = " ".join(sentences) + f" {question} ="
        return Problem(prompt=prompt, answer=str(value), difficulty=steps,
                       meta={"steps": [list(line) for line in lines]})

    def messages(self, problem: Problem) -> list[dict] | None:
        if not self.chat:
            return None
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": problem.prompt}]

    def demonstration(self, problem: Problem) -> str:
        """The worked solution: one calculation per step, then ``#### answer``."""
        steps = problem.meta.get("steps") or []
        if self.chat:
            lines = [f"{a} {sign} {k} = {after}" for a, sign, k, after in steps]
            return "\n".join([*lines, f"{MARKER} {problem.answer}"])
        return " ".join([*(f"{a}{sign}{k}={after}" for a, sign, k, after in steps), f"{MARKER} {problem.answer}"])

    def max_new_tokens(self, problem: Problem) -> int:
        return self.token_slack + self.tokens_per_step * problem.difficulty

    @staticmethod
    def extract_answer(completion: str) -> str:
        """The number after the last ``####``, else the completion's last number ("" if none)."""
        head, marker, tail = completion.rpartition(MARKER)
        found = NUMBER.findall(tail if marker else head + tail)
        if not found:
            return ""
        whole, _, fraction = (found[0] if marker else found[-1]).replace(",", "").partition(".")
        return f"{whole}.{fraction}" if fraction.strip("0") else whole

    def verify(self, problem: Problem, completion: str) -> bool:
        if problem.answer is None:
            raise ValueError(f"problem {problem.prompt!r} has no ground-truth answer")
        return self.extract_answer(completion) == problem.answer


def _step(value: int, they: str, item: str, rng: random.Random) -> tuple[str, str, int, int]:
    """One step from ``value``: (its sentence, the operator, the operand, the value after it)."""
    choices = ["add"]
    if value > 1:
        choices.append("take")
    if 2 * value <= LIMIT:
        choices.append("times")
    divisors = [k for k in (2, 3, 4, 5) if value % k == 0]
    if divisors:
        choices.append("share")
    kind = rng.choice(choices)
    if kind == "add":
        k = rng.randint(1, min(30, LIMIT - value))
        verb = rng.choice(["buys {k} more", "finds {k} more", "is given {k} more"])
        return f"{they} {verb.format(k=k)}", "+", k, value + k
    if kind == "take":
        k = rng.randint(1, min(30, value - 1))
        verb = rng.choice(["gives away {k}", "loses {k}", "sells {k}"])
        return f"{they} {verb.format(k=k)}", "-", k, value - k
    if kind == "times":
        k = rng.randint(2, max(2, min(5, LIMIT // value)))
        return f"{they} ends up with {k} times as many {item}", "*", k, value * k
    k = rng.choice(divisors)
    return f"{they} splits them into {k} equal groups and keeps one group", "/", k, value // k


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]



@hookimpl
def register_task(register):
    register("word_arithmetic", WordArithmetic,
             description="multi-step arithmetic word problems, GSM8K format (#### answer); difficulty = steps")
