"""Clades: a variant and all its descendants, and what their outcomes say of it (Huxley–Gödel
Machine). The ``hgm`` parent selector samples parents by them; evolve's self-referential targets
(a proposer or parent selector edited by the loop) are scored by them, since what such an edit
changes is what its descendants achieve; ``selfloop archive list --json`` shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .types import VariantSummary


@dataclass(frozen=True)
class Clade:
    """The aggregated outcomes of a variant and its descendants."""

    successes: float = 0.0
    failures: float = 0.0
    members: int = 0  # archived members (itself and its descendants) plus unseen children

    def __add__(self, other: Clade) -> Clade:
        return Clade(self.successes + other.successes, self.failures + other.failures,
                     self.members + other.members)

    @property
    def rate(self) -> float:
        """The posterior mean success rate under a uniform prior, Beta(1, 1)."""
        return (self.successes + 1.0) / (self.successes + self.failures + 2.0)

    def to_dict(self) -> dict[str, float]:
        return {"successes": self.successes, "failures": self.failures, "members": self.members,
                "rate": round(self.rate, 4)}


def improved(v: VariantSummary, parent: VariantSummary | None, margin: float = 0.0) -> Clade:
    """A variant's own outcome: a success when admitted and scoring above its parent by more than
    ``margin``; a failure when admitted and not, or rejected; nothing when it has no scored parent
    among those given (a round's seed)."""
    if not v.admitted or v.score is None:
        return Clade(0.0, 1.0, 1)
    if parent is None or parent.score is None:
        return Clade(0.0, 0.0, 1)
    better = v.score > parent.score + margin
    return Clade(float(better), float(not better), 1)


def clades(variants: Sequence[VariantSummary],
           own: Callable[[VariantSummary, VariantSummary | None], Clade] = improved) -> dict[str, Clade]:
    """Every given variant's clade: its own outcome, its unseen children's (each a failure: e.g.
    rejected children left out), and its descendants'."""
    by_id = {v.id: v for v in variants}
    kids: dict[str, list[str]] = {vid: [] for vid in by_id}
    for v in variants:
        if v.parent in by_id and v.parent != v.id:
            kids[v.parent].append(v.id)
    mine = {}
    for v in variants:
        unseen = max(0, v.children - len(kids[v.id]))
        mine[v.id] = own(v, by_id.get(v.parent)) + Clade(0.0, float(unseen), unseen)
    out: dict[str, Clade] = {}
    for root in by_id:  # post-order, iteratively (deep trees), each node once
        if root in out:
            continue
        stack, entered = [root], set()
        while stack:
            node = stack[-1]
            if node not in entered:
                entered.add(node)
                stack.extend(c for c in kids[node] if c not in out and c not in entered)
                continue
            stack.pop()
            if node not in out:
                total = mine[node]
                for c in kids[node]:
                    total = total + out.get(c, Clade())
                out[node] = total
    return out
