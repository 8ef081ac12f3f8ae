"""How much of a score is sampling noise: the statistics behind the judge's two tests.

An evaluation's score is ``W · refine accuracy + (1 − W) · F0.5(selection)`` over two disjoint sets
of problems (``selfloop.core.judge``), so its variance is the sum of the two parts':

- refine accuracy is a binomial proportion. Its per-problem variance is ``p̃(1 − p̃)`` with the
  add-one (Laplace) estimate ``p̃ = (k + 1)/(n + 2)``, so a set that is all right or all wrong still
  has a variance: 128 correct answers out of 128 do not prove the next 128 will all be right.
- F0.5 is a ratio of counts, far noisier than a proportion when few labels are correct (the frontier
  of a checkpoint with a cliff). Its variance is estimated by a bootstrap over the selection
  problems (``BOOTSTRAP`` resamples, a fixed seed), floored by the add-one binomial variance of F.

Both are kept per problem (``Noise``), so the same estimate gives the variance of a score on a set of
another size: the visible set a variant scores itself on is smaller than the held-out set, and its
own account of its noise is not trusted, only its sizes, which the host chose.

A difference ``a − b`` is significant when it exceeds ``z · sqrt(var a + var b)``: a one-sided test
at the normal approximation. The default ``z = 3`` (p ≈ 0.0013 per test) keeps the chance that any
of a run's few dozen evaluations is flagged by noise alone to a few percent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

BOOTSTRAP = 200
DEFAULT_Z = 3.0


@dataclass(frozen=True)
class SelectionOutcome:
    """One selection problem: was the model's label right, was the problem kept, was what was kept right."""

    label_correct: bool
    kept: bool
    kept_correct: bool


@dataclass(frozen=True)
class Outcomes:
    """Per-problem results of one evaluation, as the host's verifier saw them."""

    refine: list[bool]
    select: list[SelectionOutcome]


@dataclass(frozen=True)
class Noise:
    """Per-problem variances of the two parts of a score (divide by a set's size to get its variance)."""

    refine: float
    select: float

    def variance(self, n_refine: int, n_select: int, refine_weight: float) -> float:
        """The variance of a score measured on ``n_refine`` refinement and ``n_select`` selection problems."""
        w = refine_weight
        return (w**2 * self.refine / max(1, n_refine)) + ((1 - w)**2 * self.select / max(1, n_select))


def add_one_variance(successes: float, n: int) -> float:
    """Per-trial variance of a proportion, with the add-one estimate (never 0)."""
    p = (successes + 1) / (n + 2)
    return p * (1 - p)


def f_beta(outcomes: Sequence[SelectionOutcome], beta: float) -> float:
    kept = sum(o.kept for o in outcomes)
    kept_correct = sum(o.kept_correct for o in outcomes)
    # A selector may relabel what it keeps, so it can keep more correct labels than the model gave.
    correct = max(sum(o.label_correct for o in outcomes), kept_correct)
    precision = kept_correct / kept if kept else 0.0
    recall = kept_correct / correct if correct else 0.0
    b2 = beta**2
    return (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall else 0.0


def noise(outcomes: Outcomes, beta: float, *, seed: int = 0) -> Noise:
    """Per-problem variances of an evaluation's refine accuracy and selection F (see the module doc)."""
    refine = add_one_variance(sum(outcomes.refine), len(outcomes.refine))
    select = outcomes.select
    n = len(select)
    if n == 0:
        return Noise(refine=refine, select=0.25)
    f = f_beta(select, beta)
    floor = add_one_variance(f * n, n)
    rng = random.Random(seed)
    draws = [f_beta([select[rng.randrange(n)] for _ in range(n)], beta) for _ in range(BOOTSTRAP)]
    mean = sum(draws) / len(draws)
    bootstrap = sum((d - mean) ** 2 for d in draws) / (len(draws) - 1)
    return Noise(refine=refine, select=max(floor, bootstrap * n))


@dataclass(frozen=True)
class Comparison:
    """``a − b`` against its noise: ``significant`` when the difference exceeds ``margin``."""

    difference: float
    margin: float
    z: float

    @property
    def significant(self) -> bool:
        return self.difference > self.margin

    def describe(self) -> str:
        return f"{self.difference:+.3f}, margin {self.margin:.3f} at z={self.z:g}"


def compare(a: float, var_a: float, b: float, var_b: float, z: float = DEFAULT_Z) -> Comparison:
    """Is ``a`` above ``b`` by more than ``z`` standard errors of their difference?"""
    return Comparison(difference=a - b, margin=z * math.sqrt(max(0.0, var_a + var_b)), z=z)
