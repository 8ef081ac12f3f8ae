"""Exact deduplication: one copy of each (prompt, completion) pair, the first one seen."""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import Selection, SelectionReport


class Dedup:
    """Drops exact repeats of a (prompt, completion) pair."""

    def select(self, examples, *, task=None, policy=None, generator=None, round_index=0, rng=None,
               history=()):
        seen, kept = set(), []
        for example in examples:
            key = (example.prompt, example.completion)
            if key not in seen:
                seen.add(key)
                kept.append(example)
        dropped = len(examples) - len(kept)
        return Selection(kept, SelectionReport("dedup", len(kept), {"duplicate": dropped} if dropped else {}))


@hookimpl(trylast=True)
def register_selector(register):
    register("dedup", Dedup, description="exact deduplication of (prompt, completion) pairs")
