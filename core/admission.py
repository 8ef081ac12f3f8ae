"""Round admission: a round's checkpoint replaces the previous one only if it loses no accuracy
where the model was already trained (the lifecycle's gate in DESIGN.md, "Trust").

The evidence. Both checkpoints answer the same fresh problems, ``n`` per difficulty, drawn from a
seed no training draw uses, at every difficulty either of them was trained on. The base round has
nothing to compare with and is always admitted.

The test, per difficulty: one-sided, "after is worse than before", by the Agresti–Caffo
two-proportion interval. Each sample gets one success and one failure added,
``p̃ = (correct + 1) / (n + 2)``, so a 0% or 100% cell still has a variance (100% of 200 is not
proof that the model never errs) and the level stays near nominal at small ``n``. The drop is
significant when ``p̃_before − p̃_after > z · sqrt((p̃_b(1−p̃_b) + p̃_a(1−p̃_a)) / (n + 2))``; the
margin reported is that bound in raw accuracy, ``× (n + 2) / n``, so "drop > margin" is the decision
exactly. ``z`` is the normal quantile at ``1 − alpha / k``: a Bonferroni correction over the ``k``
difficulties compared, so a round that changed nothing is rejected by chance at most ``alpha`` of
the time, however many difficulties it is checked at. The two samples are the same problems, so
they are positively correlated; the unpaired test ignores that and errs toward admitting. (McNemar's
paired test was no stronger on seed 1's round 1 below, z = 2.3 at difficulty 7: the two checkpoints
disagree on many problems in both directions.)

Sizes: at the default 1000 problems per difficulty, alpha 0.05 and 7 difficulties (z = 2.45), the
margin is 0.3 points for a checkpoint at 100% that stays there and 0.8 against one at 99% (so
100% → 99% is rejected), 3.3 points at 90% and 5.4 at 60%. 200 problems are enough for the drops
the issue reported (96% → 66% at difficulty 1 after a DPO round), not for the quieter one seed 1 of the
default run shows: round 1 took difficulty 7 from 62.5% to 52.5% (and 8, untrained, from 52% to
32%), inside the 12-point margin of 200 problems, outside the 5.4-point margin of 1000 on two
fresh draws. The price: one checkpoint answers 7 × 1000 problems greedily in about 10 s on one
shared CPU thread (the default model), 20 s per round for both, beside minutes of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

BASE_ROUND = "base round: nothing to compare with"


@dataclass
class Admission:
    """The gate's decision on one round, with the numbers it rests on per difficulty."""

    admitted: bool
    reason: str
    by_difficulty: dict[int, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"admitted": self.admitted, "reason": self.reason,
                "by_difficulty": {str(d): v for d, v in sorted(self.by_difficulty.items())}}


def drop_margin(correct_before: int, correct_after: int, n: int, z: float) -> float:
    """The largest drop in accuracy (raw, of ``n`` problems) that is still noise at quantile ``z``."""
    before, after = (correct_before + 1) / (n + 2), (correct_after + 1) / (n + 2)
    se = math.sqrt((before * (1 - before) + after * (1 - after)) / (n + 2))
    return z * se * (n + 2) / n


def admit(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
          alpha: float) -> Admission:
    """Admit unless accuracy drops beyond its margin at some difficulty.

    ``before``/``after`` map a difficulty to (correct, problems), measured on the same problems.
    """
    if set(before) != set(after):
        raise ValueError(f"measured at different difficulties: {sorted(before)} vs {sorted(after)}")
    if not before:
        return Admission(True, "nothing to compare: no difficulty trained on")
    z = NormalDist().inv_cdf(1 - alpha / len(before))
    rows, drops = {}, []
    for d in sorted(before):
        (correct_before, n), (correct_after, n_after) = before[d], after[d]
        if n != n_after or n < 1:
            raise ValueError(f"difficulty {d}: {n} problems before but {n_after} after")
        margin = drop_margin(correct_before, correct_after, n, z)
        row = {"before": correct_before / n, "after": correct_after / n, "n": n, "margin": margin}
        rows[d] = row
        if row["before"] - row["after"] > margin:
            drops.append(f"difficulty {d}: {row['before']:.0%} -> {row['after']:.0%} "
                         f"(margin {margin:.1%})")
    if drops:
        return Admission(False, "accuracy dropped beyond its margin at " + "; ".join(drops), rows)
    span = f"{min(rows)}-{max(rows)}" if len(rows) > 1 else str(min(rows))
    return Admission(True, f"no drop beyond its margin at difficulties {span} "
                           f"(n={min(r['n'] for r in rows.values())}, alpha={alpha:g})", rows)
