"""The evaluators draw their problems from the seed they are given: a seeded run repeats."""

from __future__ import annotations

from selfloop.plugins.evaluate.dynamic_benchmark import DynamicBenchmark
from selfloop.plugins.tasks.reversed_addition import ReversedAddition


class Recording:
    """A refiner that answers nothing and remembers what it was asked."""

    def __init__(self):
        self.prompts = []

    def refine(self, policy, problems, *, generator, rewarder=None, seed=0):
        self.prompts.append([p.prompt for p in problems])
        return [""] * len(problems)


def drawn(seed: int, seen=frozenset()) -> tuple[list[str], dict]:
    refiner = Recording()
    result = DynamicBenchmark(difficulties=[2, 4], per_difficulty=30).evaluate(
        None, task=ReversedAddition(), refiner=refiner, generator=None, rewarder=None,
        seen_prompts=set(seen), seed=seed)
    return refiner.prompts[0], result.details


def test_dynamic_benchmark_draws_the_same_problems_from_the_same_seed():
    first, details = drawn(7)
    again, details_again = drawn(7)
    assert first == again and details == details_again and details["draw_seed"] == "dynamic_benchmark:7"
    other, _ = drawn(8)
    assert len(other) == len(first) == 60 and other != first


def test_dynamic_benchmark_still_leaves_out_what_was_trained_on():
    first, _ = drawn(7)
    seen = set(first[30:40])  # ten of the 4-digit problems it would draw
    fresh, details = drawn(7, seen)
    assert not seen & set(fresh) and len(fresh) == 60 and details["contaminated_by_difficulty"] == {}
