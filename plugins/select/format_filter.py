"""Length and format filter: a completion must look like an answer of its problem's size.

For reversed addition of n-digit numbers the answer is exactly n + 1 digits, so the defaults are a
digits-only pattern and ``length_offset = 1``. Labelled examples pass through untouched.
"""

from __future__ import annotations

import re

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable
from selfloop.core.types import Selection, SelectionReport

LENGTH_OFFSET = tunable(1, low=-4, high=8)


class FormatFilter:
    """Drops empty completions, completions not matching ``pattern``, and wrong lengths."""

    def __init__(self, pattern: str = r"\d+", length_offset: int | None = LENGTH_OFFSET,
                 max_chars: int = 4096, check_labelled: bool = False):
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        self.length_offset, self.max_chars, self.check_labelled = length_offset, max_chars, check_labelled

    def why_dropped(self, example) -> str | None:
        text = example.completion
        if not text:
            return "empty"
        if len(text) > self.max_chars or not self.pattern.fullmatch(text):
            return "format"
        if self.length_offset is not None and len(text) != example.difficulty + self.length_offset:
            return "length"
        return None

    def select(self, examples, *, task=None, policy=None, generator=None, round_index=0, rng=None,
               history=()):
        kept, dropped = [], {}
        for example in examples:
            reason = None
            if self.check_labelled or example.source != "labelled":
                reason = self.why_dropped(example)
            if reason is None:
                kept.append(example)
            else:
                dropped[reason] = dropped.get(reason, 0) + 1
        return Selection(kept, SelectionReport("format_filter", len(kept), dropped))


@hookimpl(trylast=True)
def register_selector(register):
    register("format_filter", FormatFilter,
             description="drops empty, malformed or wrong-length completions")
