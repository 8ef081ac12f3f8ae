"""Self-labelling: the current model answers problems harder than any it has labels for.

Round r (r >= 1) poses unlabelled problems at the difficulties just past the frontier: the newest
is ``start_difficulty + (r - 1) * step + ahead``, and the ``window - 1`` difficulties before it
(down to ``start_difficulty``) are posed again, so a length the model has not mastered yet keeps getting
fresh, better labels while the next one starts. Each problem is labelled with the model's greedy
answer; what to trust is the selection stage's job (format, agreement, caps).
"""

from __future__ import annotations

from dataclasses import replace

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable
from selfloop.core.types import Example

COUNT = tunable(1500, low=10, high=1000000)
STEP = tunable(1, low=1, high=8)
WINDOW = tunable(3, low=1, high=8)
AHEAD = tunable(1, low=0, high=4)


class SelfLabel:
    """Labels ``count`` fresh problems per difficulty with the policy's own greedy answers."""

    def __init__(self, start_difficulty: int = 6, count: int = COUNT, step: int = STEP,
                 window: int = WINDOW, slack_tokens: int = 2, ahead: int = AHEAD):
        if window < 1 or step < 1 or ahead < 0:
            raise ValueError("window and step must be at least 1, ahead at least 0")
        self.ahead = ahead
        self.start_difficulty, self.count, self.step = start_difficulty, count, step
        self.window, self.slack_tokens = window, slack_tokens

    def difficulties(self, round_index: int) -> list[int]:
        newest = self.start_difficulty + (round_index - 1) * self.step + self.ahead
        return list(range(max(self.start_difficulty, newest - self.window + 1), newest + 1))

    def acquire(self, *, task, policy, generator, round_index, rng):
        if round_index < 1:
            return []
        truths = [p for d in self.difficulties(round_index) for p in task.problems(d, self.count, rng)]
        problems = [replace(p, answer=None) for p in truths]
        longest = max(p.difficulty for p in problems) + 1 + self.slack_tokens
        answers = generator.generate(policy, [p.prompt for p in problems], n=1, temperature=0.0,
                                     max_new_tokens=longest, seed=rng.randrange(2**31))
        # The hidden true answer rides along for the round's report only (how clean the kept data
        # is); no selector may read it, and the meta-agent's judge never provides it.
        return [Example(p.prompt, group[0].strip(), p.difficulty, "self_label",
                        meta={"audit_answer": truth.answer})
                for p, truth, group in zip(problems, truths, answers)]


@hookimpl(trylast=True)
def register_acquirer(register):
    register("self_label", SelfLabel,
             description="the model labels fresh problems one step past its frontier (greedy)")
