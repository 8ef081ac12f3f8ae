"""A dynamic benchmark: fresh problems for every round, never seen in training.

Each evaluation draws its problems from the seed it is given (the lifecycle derives a new one for
every round from the run's seed), so every round gets fresh problems and a run with the same seed
draws the same ones again; the seed is recorded as ``draw_seed``. Problems whose prompt occurs in
the training data are redrawn; only where the training data covers (nearly) every problem of a
difficulty, as for 1-digit sums, are seen ones used to fill up, and counted (``contaminated``).
Besides accuracy by difficulty it reports how diverse the model's answers are, so a collapse onto
a few outputs shows.
"""

from __future__ import annotations

import math
import random
from collections import Counter

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import Evaluation


def diversity(texts: list[str]) -> dict[str, float]:
    """Share of distinct texts, and the entropy (bits) of their characters."""
    if not texts:
        return {"distinct_ratio": 0.0, "char_entropy_bits": 0.0}
    chars = Counter("".join(texts))
    total = sum(chars.values()) or 1
    entropy = -sum(c / total * math.log2(c / total) for c in chars.values())
    return {"distinct_ratio": len(set(texts)) / len(texts), "char_entropy_bits": entropy}


def score(policy, problems, *, task, refiner, generator, rewarder, seed):
    """Accuracy by difficulty of ``refiner``'s answers, overall accuracy, and answer diversity."""
    answers = refiner.refine(policy, problems, generator=generator, rewarder=rewarder, seed=seed)
    by_difficulty: dict[int, list[bool]] = {}
    for problem, answer in zip(problems, answers, strict=True):
        by_difficulty.setdefault(problem.difficulty, []).append(task.verify(problem, answer))
    accuracy = {d: sum(v) / len(v) for d, v in sorted(by_difficulty.items())}
    correct = sum(sum(v) for v in by_difficulty.values())
    metrics = {"accuracy": correct / max(1, len(problems)), **diversity(answers)}
    return accuracy, metrics, answers


class DynamicBenchmark:
    """``per_difficulty`` fresh problems at each difficulty in ``difficulties``."""

    def __init__(self, difficulties: list[int] | None = None, min_difficulty: int = 1,
                 max_difficulty: int = 12, per_difficulty: int = 200, redraws: int = 20):
        self.difficulties = list(difficulties or range(min_difficulty, max_difficulty + 1))
        self.per_difficulty, self.redraws = per_difficulty, redraws

    def problems(self, task, rng, seen_prompts):
        """Fresh problems per difficulty; seen ones are redrawn, and only used to fill up a
        difficulty whose problem space the training data exhausts (counted per difficulty)."""
        problems, contaminated = [], {}
        for difficulty in self.difficulties:
            clean: dict[str, object] = {}
            seen: dict[str, object] = {}
            for _ in range(self.redraws):
                for problem in task.problems(difficulty, self.per_difficulty, rng):
                    (seen if problem.prompt in seen_prompts else clean).setdefault(problem.prompt, problem)
                    if len(clean) >= self.per_difficulty:
                        break
                if len(clean) >= self.per_difficulty:
                    break
            chosen = list(clean.values())
            filler = list(seen.values())[: self.per_difficulty - len(chosen)]
            if filler:
                contaminated[difficulty] = len(filler)
            problems += chosen + filler
        return problems, contaminated

    def evaluate(self, policy, *, task, refiner, generator, rewarder, seen_prompts, seed):
        draw_seed = f"dynamic_benchmark:{seed}"
        problems, contaminated = self.problems(task, random.Random(draw_seed), seen_prompts)
        accuracy, metrics, _ = score(policy, problems, task=task, refiner=refiner,
                                     generator=generator, rewarder=rewarder, seed=seed)
        metrics["contaminated"] = sum(contaminated.values())
        return Evaluation("dynamic_benchmark", metrics, accuracy,
                          {"draw_seed": draw_seed, "problems": len(problems),
                           "contaminated_by_difficulty": contaminated})


@hookimpl(trylast=True)
def register_evaluator(register):
    register("dynamic_benchmark", DynamicBenchmark,
             description="fresh, decontaminated problems every evaluation; accuracy by difficulty")
