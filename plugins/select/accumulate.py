"""Accumulation across rounds: this round's examples plus everything kept before.

The original labelled data is always kept, the survey's guard against data autophagy and model
collapse: a model trained only on its own outputs drifts. The new examples get ``new_share`` of the
total sampling weight, so a few thousand fresh examples are not drowned by the history, but no new
example weighs more than ``max_upweight`` old ones: a handful of kept self-labels (some of them
wrong) must not be memorized.
"""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable
from selfloop.core.types import Selection, SelectionReport

NEW_SHARE = tunable(0.5, low=0.0, high=1.0)
MAX_UPWEIGHT = tunable(10.0, low=1.0, high=1000.0)
MAX_HISTORY = tunable(0, low=0, high=1000000)  # 0 keeps all of it


class Accumulate:
    """New examples + the labelled data + earlier rounds' examples, reweighted."""

    def __init__(self, new_share: float = NEW_SHARE, max_upweight: float = MAX_UPWEIGHT,
                 max_history: int = MAX_HISTORY):
        if not 0.0 <= new_share <= 1.0:
            raise ValueError(f"new_share must be in [0, 1], got {new_share}")
        self.new_share, self.max_upweight, self.max_history = new_share, max_upweight, max_history

    def select(self, examples, *, task=None, policy=None, generator=None, round_index=0, rng=None,
               history=()):
        new_keys = {(e.prompt, e.completion) for e in examples}
        old = [e for e in history if (e.prompt, e.completion) not in new_keys]
        labelled = [e for e in old if e.source == "labelled"]
        earlier = [e for e in old if e.source != "labelled"]
        dropped = {}
        if self.max_history and len(earlier) > self.max_history:
            dropped["history_cap"] = len(earlier) - self.max_history
            earlier = earlier[-self.max_history:]  # the most recent rounds
        kept_old = labelled + earlier
        examples = [_copy(e) for e in examples]
        kept_old = [_copy(e, weight=1.0) for e in kept_old]  # history is uniform: no compounding
        if examples and kept_old and 0.0 < self.new_share < 1.0:
            new_weight = sum(e.weight for e in examples)
            old_weight = sum(e.weight for e in kept_old)
            scale = (self.new_share / (1 - self.new_share)) * old_weight / new_weight
            scale = min(scale, self.max_upweight)
            for e in examples:
                e.weight *= scale
        kept = kept_old + examples
        return Selection(kept, SelectionReport("accumulate", len(kept), dropped))


def _copy(example, **changes):
    from dataclasses import replace

    return replace(example, meta=dict(example.meta), **changes)


@hookimpl(trylast=True)
def register_selector(register):
    register("accumulate", Accumulate,
             description="adds the labelled data and earlier rounds' examples; weights new ones")
