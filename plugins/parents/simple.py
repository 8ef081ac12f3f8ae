"""Baseline parent selectors: uniformly at random, always the best, always the latest."""

from __future__ import annotations

import random
from collections.abc import Sequence

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import VariantSummary

from .dgm import candidates


class RandomSelector:
    """Any admitted variant, uniformly, with replacement."""

    def choose(self, variants: Sequence[VariantSummary], k: int, rng: random.Random) -> list[str]:
        pool = [v.id for v in candidates(variants)]
        return [rng.choice(pool) for _ in range(k)] if pool else []


class BestSelector:
    """The ``k`` best-scoring variants (the best again when there are fewer); ties go to the older."""

    def choose(self, variants: Sequence[VariantSummary], k: int, rng: random.Random) -> list[str]:
        ranked = [v.id for v in sorted(candidates(variants), key=lambda v: -v.score)]
        return [ranked[i] if i < len(ranked) else ranked[0] for i in range(k)] if ranked else []


class LatestSelector:
    """The ``k`` most recently admitted variants (the latest again when there are fewer)."""

    def choose(self, variants: Sequence[VariantSummary], k: int, rng: random.Random) -> list[str]:
        recent = [v.id for v in reversed(candidates(variants))]
        return [recent[i] if i < len(recent) else recent[0] for i in range(k)] if recent else []


@hookimpl(trylast=True)
def register_parent_selector(register):
    register("random", RandomSelector, description="any admitted variant, uniformly")
    register("best", BestSelector, description="the best-scoring admitted variants (pure exploitation)")
    register("latest", LatestSelector, description="the most recent admitted variants (a hill-climbing chain)")
