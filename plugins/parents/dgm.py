"""The Darwin Gödel Machine's parent selection (Zhang et al. 2025).

Each admitted, scored variant is drawn with probability proportional to
``sigmoid(λ·(score − α₀)) × 1 / (1 + children)``: good variants are favoured, but the more children
a variant already has, the less it is picked, so the search keeps exploring stepping stones.
Parents are drawn with replacement.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable
from selfloop.core.types import VariantSummary

# Knobs the meta-agent may move when evolve targets parent_selector (its own search strategy).
SHARPNESS = tunable(10.0, low=1.0, high=50.0)  # λ: how strongly a higher score is favoured
MIDPOINT = tunable(0.5, low=0.0, high=1.0)  # α₀: the score at which the sigmoid is one half


def candidates(variants: Sequence[VariantSummary]) -> list[VariantSummary]:
    """The variants a parent may be chosen from: admitted ones with a score, oldest first."""
    return sorted((v for v in variants if v.admitted and v.score is not None), key=lambda v: (v.created, v.id))


class DGMSelector:
    """Score-and-novelty weighted sampling of parents."""

    def __init__(self, sharpness: float = SHARPNESS, midpoint: float = MIDPOINT):
        self.sharpness = sharpness  # λ
        self.midpoint = midpoint  # α₀

    def weights(self, variants: Sequence[VariantSummary]) -> dict[str, float]:
        """The (unnormalized) selection weight of every candidate variant."""
        out = {}
        for v in candidates(variants):
            z = self.sharpness * (v.score - self.midpoint)
            sigmoid = 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
            out[v.id] = sigmoid / (1 + v.children)
        return out

    def choose(self, variants: Sequence[VariantSummary], k: int, rng: random.Random) -> list[str]:
        weights = self.weights(variants)
        if not weights:
            return []
        ids = list(weights)
        if sum(weights.values()) <= 0:  # every score so low the sigmoid underflowed: uniform
            return [rng.choice(ids) for _ in range(k)]
        return rng.choices(ids, weights=[weights[i] for i in ids], k=k)


@hookimpl(trylast=True)
def register_parent_selector(register):
    register("dgm", DGMSelector,
             description="p ∝ sigmoid(λ·(score − α₀)) / (1 + children), as in the Darwin Gödel Machine")
