"""A dynamic benchmark: fresh problems for every round, never seen in training.

Each evaluation draws its problems from the seed it is given (the lifecycle derives a new one for
every round from the run's seed), so every round gets fresh problems and a run with the same seed
draws the same ones again; the seed is recorded as ``draw_seed``. Problems whose prompt occurs in
the training data are redrawn; only where the training data covers (nearly) every problem of a
difficulty, as for 1-digit sums, are seen ones used to fill up, and counted (``contaminated``).
Problems come from the task's held-out part, only at difficulties the task offers (others are
listed as ``skipped_difficulties``); a finite held-out part may give fewer than asked. Answers are
verified in one batch (``verify_many``: in the sandbox for a task that runs model output).
Besides accuracy by difficulty it reports how diverse the model's answers are, so a collapse onto
a few outputs shows.
"""

from __future__ import annotations

import math
import random
from collections import Counter

from selfloop.core.hookspecs import hookimpl
from selfloop.core.kinds import call_accepting
from selfloop.core.tasks import task_view
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
    answers = call_accepting(refiner.refine, policy, problems, generator=generator,
                             rewarder=rewarder, seed=seed, task=task)
    verdicts = task_view(task).verify_many(problems, answers)
    by_difficulty: dict[int, list[bool]] = {}
    for problem, verdict in zip(problems, verdicts, strict=True):
        by_difficulty.setdefault(problem.difficulty, []).append(verdict)
    accuracy = {d: sum(v) / len(v) for d, v in sorted(by_difficulty.items())}
    correct = sum(sum(v) for v in by_difficulty.values())
    metrics = {"accuracy": correct / max(1, len(problems)), **diversity(answers)}
    return accuracy, metrics, answers


def offered(task, difficulties) -> list[int]:
    """The ones of ``difficulties`` the task offers, in order."""
    return [d for d in difficulties if d in task_view(task).difficulties]


class DynamicBenchmark:
    """``per_difficulty`` fresh problems at each difficulty in ``difficulties``."""

    def __init__(self, difficulties: list[int] | None = None, min_difficulty: int = 1,
                 max_difficulty: int = 12, per_difficulty: int = 200, redraws: int = 20):
        self.difficulties = list(difficulties or range(min_difficulty, max_difficulty + 1))
        self.per_difficulty, self.redraws = per_difficulty, redraws

    def problems(self, task, rng, seen_prompts):
        """Fresh held-out problems per offered difficulty; seen ones are redrawn, and only used to
        fill up a difficulty whose problem space the training data exhausts (counted per
        difficulty)."""
        task = task_view(task)
        problems, contaminated = [], {}
        for difficulty in offered(task, self.difficulties):
            clean: dict[str, object] = {}
            seen: dict[str, object] = {}
            for _ in range(self.redraws):
                for problem in task.problems(difficulty, self.per_difficulty, rng, split="held_out"):
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
        details = {"draw_seed": draw_seed, "problems": len(problems),
                   "contaminated_by_difficulty": contaminated}
        skipped = [d for d in self.difficulties if d not in offered(task, self.difficulties)]
        if skipped:
            details["skipped_difficulties"] = skipped
        return Evaluation("dynamic_benchmark", metrics, accuracy, details)


@hookimpl(trylast=True)
def register_evaluator(register):
    register("dynamic_benchmark", DynamicBenchmark,
             description="fresh, decontaminated problems every evaluation; accuracy by difficulty")
