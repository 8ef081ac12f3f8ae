"""An example third-party plugin: sort the digits of a number (difficulty = number of digits).

Install it (``pip install examples/plugin_package``) and ``selfloop plugins`` lists the task
``sorted_digits`` with source ``entrypoint``; name it in a run config as ``[task] name = "sorted_digits"``.
"""

import random

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import Problem


class SortedDigits:
    def problems(self, difficulty: int, count: int, rng: random.Random) -> list[Problem]:
        out = []
        for _ in range(count):
            digits = "".join(rng.choice("0123456789") for _ in range(difficulty))
            out.append(Problem(prompt=f"sort {digits}=", answer="".join(sorted(digits)),
                               difficulty=difficulty))
        return out

    def verify(self, problem: Problem, completion: str) -> bool:
        return completion.strip().split()[0:1] == [problem.answer]


@hookimpl
def register_task(register):
    register("sorted_digits", SortedDigits, description="sort the digits of a number")
