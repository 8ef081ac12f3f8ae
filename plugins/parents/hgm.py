"""The Huxley–Gödel Machine's parent selection (Wang et al. 2025): Thompson sampling over clades.

A variant's clade is the variant and all its descendants. What its members achieved is evidence of
how productive the clade is, so a parent is drawn by Thompson sampling: for every candidate,
``θ ~ Beta(α₀ + successes, β₀ + failures)`` over its clade's outcomes, and the candidate with the
largest θ is the parent (one independent draw of every θ per parent asked for).

A member's outcome (``outcome`` option):

- ``"improved"`` (the default): a success when it is admitted and its held-out score beats its
  parent's by more than ``margin``; a failure when it is admitted and does not, or when it was
  rejected. A member whose parent is not among the variants given (the round's seed, or a champion
  carried over from the previous round) has nothing to be compared with and adds no outcome.
- ``"score"``: HGM's own rule, where each member adds its pass rate as a fractional Beta update:
  ``score`` to the successes and ``1 − score`` to the failures (scores clipped to [0, 1]); a
  rejected member adds one failure.

Why ``"improved"``: within a round every variant is judged on the same checkpoint and held-out set,
so scores sit in a narrow band around the seed's. With one observation per variant (HGM has one per
benchmark task) the fractional update gives every clade nearly the same mean, and the posterior
then differs mostly in its width: the larger clades, the ones that were built on, lose the argmax.
Comparing a child with its own parent is the evidence a clade's descendants give of its potential,
whatever the round's level. ``benchmarks/parent_selectors.py`` measures both.

Rejected variants count in their ancestors' clades (a failed child is evidence about its parent)
but, as with ``dgm``, only admitted, scored variants are ever chosen. `selfloop evolve` hands the
selector only admitted variants; a rejected child then still shows in its parent's ``children``
count, and every child the variants given do not account for is counted as one failure.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from selfloop.core.clades import Clade, clades, improved
from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable
from selfloop.core.types import VariantSummary

from .dgm import candidates

OUTCOMES = ("improved", "score")
# Knobs the meta-agent may move when evolve targets parent_selector (its own search strategy).
PRIOR_SUCCESSES = tunable(1.0, low=0.1, high=10.0)  # α₀
PRIOR_FAILURES = tunable(1.0, low=0.1, high=10.0)  # β₀
MARGIN = tunable(0.0, low=0.0, high=0.05)  # a child must beat its parent by more than this


class HGMSelector:
    """Thompson sampling over each candidate's clade of outcomes."""

    def __init__(self, prior_successes: float = PRIOR_SUCCESSES, prior_failures: float = PRIOR_FAILURES,
                 outcome: str = "improved", margin: float = MARGIN):
        if prior_successes <= 0 or prior_failures <= 0:
            raise ValueError("prior_successes and prior_failures must be > 0 (a Beta's parameters)")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        self.prior_successes = float(prior_successes)  # α₀
        self.prior_failures = float(prior_failures)  # β₀
        self.outcome = outcome
        self.margin = float(margin)

    def own(self, v: VariantSummary, parent: VariantSummary | None) -> Clade:
        """The outcome a variant adds, by itself, to every clade it is a member of."""
        if not v.admitted or v.score is None:
            return Clade(0.0, 1.0, 1)
        if self.outcome == "score":
            s = min(1.0, max(0.0, v.score))
            return Clade(s, 1.0 - s, 1)
        return improved(v, parent, self.margin)

    def clades(self, variants: Sequence[VariantSummary]) -> dict[str, Clade]:
        """Every given variant's clade: its own outcome, its unseen children's, and its descendants'."""
        return clades(variants, self.own)

    def posterior(self, clade: Clade) -> tuple[float, float]:
        """The Beta parameters (α, β) of a clade's success rate."""
        return self.prior_successes + clade.successes, self.prior_failures + clade.failures

    def choose(self, variants: Sequence[VariantSummary], k: int, rng: random.Random) -> list[str]:
        pool = candidates(variants)
        if not pool:
            return []
        clades = self.clades(variants)
        params = [self.posterior(clades[v.id]) for v in pool]
        picks = []
        for _ in range(k):
            thetas = [rng.betavariate(a, b) for a, b in params]
            picks.append(pool[max(range(len(pool)), key=thetas.__getitem__)].id)
        return picks


@hookimpl(trylast=True)
def register_parent_selector(register):
    register("hgm", HGMSelector,
             description="Thompson sampling over clades (a variant and its descendants): "
                         "θ ~ Beta(α₀ + improvements, β₀ + failures), as in the Huxley–Gödel Machine")
