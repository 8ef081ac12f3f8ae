"""Format filter: a completion must give an answer, as the task reads answers, within its budget.

By default it asks the task: a completion is kept when the task extracts a non-empty answer from
it (``extract_answer``) and, with a policy to count its tokens, it fits the task's budget
(``max_new_tokens``). Two checks for a task whose answers have a known shape are off unless set:
``pattern``, a regular expression the whole completion must match (``"\\d+"``: digits only), and
``length_offset``, the completion's exact length in characters as difficulty + offset (1 for
reversed addition: an n-digit sum has n + 1 digits). Labelled examples pass through untouched.
"""

from __future__ import annotations

import re

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tasks import task_view
from selfloop.core.types import Selection, SelectionReport

from ..refine.answers import as_problem, extractor


class FormatFilter:
    """Drops empty completions, ones without an answer, over-long ones, and (when set) ones that
    miss ``pattern`` or have the wrong length."""

    def __init__(self, pattern: str | None = None, length_offset: int | None = None,
                 max_chars: int = 4096, check_labelled: bool = False):
        try:
            self.pattern = re.compile(pattern) if pattern is not None else None
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        self.length_offset, self.max_chars, self.check_labelled = length_offset, max_chars, check_labelled

    def why_dropped(self, example, extract, budget=None, tokens=None) -> str | None:
        """Why ``example`` is dropped (None: kept); ``tokens`` of its completion against ``budget``."""
        text = example.completion
        if not text:
            return "empty"
        if len(text) > self.max_chars or (self.pattern is not None and not self.pattern.fullmatch(text)):
            return "format"
        if not extract(text):
            return "no_answer"
        if budget is not None and tokens is not None and tokens > budget:
            return "over_budget"
        if self.length_offset is not None and len(text) != example.difficulty + self.length_offset:
            return "length"
        return None

    def select(self, examples, *, task=None, policy=None, generator=None, round_index=0, rng=None,
               history=()):
        judged = [e for e in examples if self.check_labelled or e.source != "labelled"]
        extract = extractor(task)
        tokens = budgets = [None] * len(judged)
        tokenizer = getattr(policy, "tokenizer", None)
        if judged and task is not None and tokenizer is not None:  # the budget counts tokens
            view = task_view(task)
            budgets = [view.max_new_tokens(as_problem(e)) for e in judged]
            tokens = [len(ids) for ids in tokenizer([e.completion for e in judged],
                                                    add_special_tokens=False)["input_ids"]]
        reasons = {id(e): self.why_dropped(e, extract, b, n)
                   for e, b, n in zip(judged, budgets, tokens)}
        kept, dropped = [], {}
        for example in examples:
            reason = reasons.get(id(example))
            if reason is None:
                kept.append(example)
            else:
                dropped[reason] = dropped.get(reason, 0) + 1
        return Selection(kept, SelectionReport("format_filter", len(kept), dropped))


@hookimpl(trylast=True)
def register_selector(register):
    register("format_filter", FormatFilter,
             description="drops completions without an answer (as the task reads them) or over "
                         "its budget; optional pattern and length checks")
