"""Which of several models writes the next proposal: UCB1 on the gain per dollar (or per token).

An arm's reward is the visible-score gain of the variants its model made over their parents, clipped
at zero as in ShinkaEvolve's asymmetric UCB (a regression is no worse than no gain: the archive
keeps the parent), divided by the model's cost per proposal relative to the arms' average. Costs are
US dollars from litellm when every model has a price, tokens otherwise.

Outcomes are learned from the proposer's ``others``: a variant whose ``operator`` is
``llm:MODEL`` was written by MODEL, so after a resume the archive's views teach the bandit again.
Costs are what this process spent. Thread-safe; deterministic under the ``rng`` passed to ``choose``.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence

from selfloop.core.types import LLMCall, VariantView

from .llm_context import visible_score

OPERATOR = "llm:"


def operator_for(model: str) -> str:
    return OPERATOR + model


class ModelBandit:
    def __init__(self, models: Sequence[str], exploration: float = 1.0):
        self.models = list(models)
        self.exploration = exploration
        self.proposals = {m: 0 for m in self.models}  # times chosen
        self.usd = {m: 0.0 for m in self.models}
        self.usd_known = {m: True for m in self.models}
        self.tokens = {m: 0 for m in self.models}
        self.gains: dict[str, list[float]] = {m: [] for m in self.models}
        self.seen: set[str] = set()  # variants whose outcome is counted
        self.lock = threading.Lock()

    def choose(self, rng: random.Random) -> str:
        with self.lock:
            if len(self.models) == 1:
                model = self.models[0]
            else:
                scores = self._ucb()
                top = max(scores.values())
                model = rng.choice([m for m in self.models if scores[m] >= top - 1e-12])
            self.proposals[model] += 1
            return model

    def spent(self, model: str, calls: Sequence[LLMCall]) -> None:
        with self.lock:
            for c in calls:
                self.tokens[model] += c.prompt_tokens + c.completion_tokens
                if c.cost_usd is None:
                    self.usd_known[model] = False
                else:
                    self.usd[model] += c.cost_usd

    def observe(self, parent: VariantView, others: Sequence[VariantView]) -> None:
        """Count the gain of every variant in view that one of the models made (once each)."""
        by_id = {v.id: v for v in [*others, parent]}
        with self.lock:
            for v in by_id.values():
                model = v.operator[len(OPERATOR):] if v.operator.startswith(OPERATOR) else None
                if model not in self.gains or v.id in self.seen:
                    continue
                base = by_id.get(v.parent)
                if v.status != "admitted":
                    gain = 0.0
                elif base is None:
                    continue  # learnt when its parent is in view
                else:
                    key = "smoke" if "smoke" in v.scores and "smoke" in base.scores else None
                    child, before = visible_score(v, key), visible_score(base, key)
                    gain = max(0.0, child - before) if None not in (child, before) else 0.0
                self.gains[model].append(gain)
                self.seen.add(v.id)

    def state(self) -> dict:
        with self.lock:
            unit, cost = self._costs()
            ucb = self._ucb()
            return {"unit": unit, "arms": {m: {
                "proposals": self.proposals[m], "outcomes": len(self.gains[m]),
                "mean_gain": round(_mean(self.gains[m]), 6), "cost_per_proposal": cost[m],
                "ucb": None if math.isinf(ucb[m]) else round(ucb[m], 6)} for m in self.models}}

    # --- under the lock ---------------------------------------------------------------------------

    def _costs(self) -> tuple[str, dict[str, float | None]]:
        usd = all(self.usd_known.values())
        spent = self.usd if usd else self.tokens
        cost = {m: (spent[m] / self.proposals[m] if self.proposals[m] and spent[m] else None)
                for m in self.models}
        return ("usd" if usd else "tokens"), cost

    def _ucb(self) -> dict[str, float]:
        _, cost = self._costs()
        known = [c for c in cost.values() if c]
        average = sum(known) / len(known) if known else 1.0
        value = {m: _mean(self.gains[m]) / ((cost[m] or average) / average) for m in self.models}
        scale = max([*value.values(), 0.0]) or 0.01  # the bonus in the rewards' own units
        total = sum(max(len(self.gains[m]), self.proposals[m]) for m in self.models)
        out = {}
        for m in self.models:
            n = max(len(self.gains[m]), self.proposals[m])
            out[m] = math.inf if n == 0 else (
                value[m] + self.exploration * scale * math.sqrt(2 * math.log(max(total, 2)) / n))
        return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0
