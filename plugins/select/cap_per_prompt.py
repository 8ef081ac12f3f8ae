"""A cap per prompt: no prompt contributes more than ``cap`` examples (the first ones seen)."""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable
from selfloop.core.types import Selection, SelectionReport

CAP = tunable(1, low=1, high=64)


class CapPerPrompt:
    """Keeps at most ``cap`` examples of each prompt."""

    def __init__(self, cap: int = CAP):
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        self.cap = cap

    def select(self, examples, *, task=None, policy=None, generator=None, round_index=0, rng=None,
               history=()):
        counts: dict[str, int] = {}
        kept = []
        for example in examples:
            counts[example.prompt] = counts.get(example.prompt, 0) + 1
            if counts[example.prompt] <= self.cap:
                kept.append(example)
        dropped = len(examples) - len(kept)
        return Selection(kept, SelectionReport("cap_per_prompt", len(kept),
                                               {"over_cap": dropped} if dropped else {}))


@hookimpl(trylast=True)
def register_selector(register):
    register("cap_per_prompt", CapPerPrompt, description="at most `cap` examples per prompt")
