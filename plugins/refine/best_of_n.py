"""Best-of-N: sample N answers and return the one the rewarder scores highest."""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable

from .answers import answer_budget

N = tunable(8, low=1, high=64)
TEMPERATURE = tunable(0.7, low=0.05, high=2.0)


class BestOfN:
    """Highest-reward answer among ``n`` samples (ties: the first sampled)."""

    def __init__(self, n: int = N, temperature: float = TEMPERATURE):
        self.n, self.temperature = n, temperature

    def refine(self, policy, problems, *, generator, rewarder, seed=0, task=None):
        if not problems:
            return []
        samples = generator.generate(policy, [p.prompt for p in problems], n=self.n,
                                     temperature=self.temperature,
                                     max_new_tokens=answer_budget(problems, task), seed=seed)
        groups = [[s.strip() for s in group] for group in samples]
        scores = rewarder.reward(problems, groups, task=task)
        return [group[max(range(len(group)), key=lambda i: score[i])]
                for group, score in zip(groups, scores)]


@hookimpl(trylast=True)
def register_refiner(register):
    register("best_of_n", BestOfN,
             description="the rewarder's best of N sampled answers (use a label-free rewarder)")
