"""Self-labelling: the current model answers problems harder than any it has labels for.

Round r (r >= 1) poses unlabelled problems at the difficulties just past the frontier: the newest
is ``start_difficulty + (r - 1) * step + ahead``, and the ``window - 1`` difficulties before it
(down to ``start_difficulty``) are posed again, so a difficulty the model has not mastered yet
keeps getting fresh, better labels while the next one starts. The steps are over the difficulties
the task offers: with a finite list, ``start_difficulty`` is the first offered one at or above it,
a step is the next offered one, and the newest never goes past the last. Each problem is labelled
with the model's greedy completion within the task's budget, kept whole (reasoning and answer);
``meta["extracted_answer"]`` is the answer the task finds in it. What to trust is the selection
stage's job (format, agreement, caps).
"""

from __future__ import annotations

from dataclasses import replace

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tasks import Difficulties, task_view
from selfloop.core.tunable import tunable
from selfloop.core.types import Example, within_budget

from ..refine.answers import answer_budget

COUNT = tunable(1500, low=10, high=1000000)
STEP = tunable(1, low=1, high=8)
WINDOW = tunable(3, low=1, high=8)
AHEAD = tunable(1, low=0, high=4)
OPEN = Difficulties()  # every difficulty from 1


class SelfLabel:
    """Labels ``count`` fresh problems per difficulty with the policy's own greedy answers."""

    def __init__(self, start_difficulty: int = 6, count: int = COUNT, step: int = STEP,
                 window: int = WINDOW, ahead: int = AHEAD):
        if window < 1 or step < 1 or ahead < 0:
            raise ValueError("window and step must be at least 1, ahead at least 0")
        self.ahead = ahead
        self.start_difficulty, self.count, self.step = start_difficulty, count, step
        self.window = window

    def difficulties(self, round_index: int, offered: Difficulties = OPEN) -> list[int]:
        """The difficulties round ``round_index`` labels, among those the task ``offered``."""
        newest = (round_index - 1) * self.step + self.ahead  # steps past the start
        first = max(0, newest - self.window + 1)
        if not offered.finite:
            start = max(self.start_difficulty, offered.low)
            return list(range(start + first, start + newest + 1))
        values = offered.values
        start = next((i for i, d in enumerate(values) if d >= self.start_difficulty), len(values) - 1)
        last = len(values) - 1
        return list(values[min(start + first, last):min(start + newest, last) + 1])

    def acquire(self, *, task, policy, generator, round_index, rng, budget=None):
        if round_index < 1:
            return []
        task = task_view(task)
        count = within_budget(self.count, budget, "max_problems")
        truths = [p for d in self.difficulties(round_index, task.difficulties)
                  for p in task.problems(d, count, rng, split="train")]
        if not truths:
            return []
        problems = [replace(p, answer=None) for p in truths]
        answers = generator.generate(policy, [p.prompt for p in problems], n=1, temperature=0.0,
                                     max_new_tokens=answer_budget(problems, task),
                                     seed=rng.randrange(2**31))
        # The hidden true answer rides along for the round's report only (how clean the kept data
        # is); no selector may read it, and the meta-agent's judge never provides it.
        labels = [group[0].strip() for group in answers]
        return [Example(p.prompt, label, p.difficulty, "self_label",
                        meta={"audit_answer": truth.answer,
                              "extracted_answer": task.extract_answer(label)})
                for p, truth, label in zip(problems, truths, labels)]


@hookimpl(trylast=True)
def register_acquirer(register):
    register("self_label", SelfLabel,
             description="the model labels fresh problems one step past its frontier (greedy)")
