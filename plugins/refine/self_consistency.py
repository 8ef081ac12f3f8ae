"""Self-consistency (Wang et al. 2023): the most common answer over ``samples`` samples.

The greedy answer is one of the votes when ``include_greedy`` is set, which breaks ties toward it.
"""

from __future__ import annotations

from collections import Counter

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable

from .greedy import answer_budget

SAMPLES = tunable(5, low=1, high=64)
TEMPERATURE = tunable(0.5, low=0.05, high=2.0)
INCLUDE_GREEDY = tunable(True, choices=(False, True))


class SelfConsistency:
    """Majority answer over sampled completions."""

    def __init__(self, samples: int = SAMPLES, temperature: float = TEMPERATURE,
                 include_greedy: bool = INCLUDE_GREEDY):
        self.samples, self.temperature, self.include_greedy = samples, temperature, include_greedy

    def refine(self, policy, problems, *, generator, rewarder=None, seed=0):
        if not problems:
            return []
        prompts, budget = [p.prompt for p in problems], answer_budget(problems)
        votes = [[] for _ in problems]
        if self.include_greedy:
            for ballot, group in zip(votes, generator.generate(
                    policy, prompts, n=1, temperature=0.0, max_new_tokens=budget, seed=seed)):
                ballot.append(group[0].strip())
        if self.samples > 0:
            for ballot, group in zip(votes, generator.generate(
                    policy, prompts, n=self.samples, temperature=self.temperature,
                    max_new_tokens=budget, seed=seed)):
                ballot.extend(s.strip() for s in group)
        # Counter.most_common keeps first-seen order on ties, so the greedy answer wins a tie.
        return [Counter(ballot).most_common(1)[0][0] for ballot in votes]


@hookimpl(trylast=True)
def register_refiner(register):
    register("self_consistency", SelfConsistency,
             description="majority answer over k sampled completions")
