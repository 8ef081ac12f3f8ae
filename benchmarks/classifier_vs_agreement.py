"""The quality classifier against majority agreement: precision and recall of the kept self-labels,
by round, on the same candidate pools (the self-labels each round's checkpoint acquired; the truth
is the acquirer's audit, never shown to either selector except ``use_audits``).

Rounds: the smoke config's pipeline (majority agreement over samples and views, rejection SFT)
trains round 1 and round 2 from the smoke round-0 checkpoint, without peers; round 1's pool is
also judged with the round-0 checkpoint's two peer models (``+ peers``).

    python benchmarks/classifier_vs_agreement.py --out runs/bench/base0
"""

from __future__ import annotations

import argparse
import copy
import random
from pathlib import Path

import _base


def judge(selector, pool, policy, c, history, seed):
    pool = copy.deepcopy(pool)
    task, gen = c.task.component, c.generator.component
    for part in c.selectors:  # the pipeline up to the judged selector: dedup, format
        if part.name in ("majority_agreement", "cap_per_prompt", "accumulate"):
            break
        pool = part.component.select(pool, task=task, policy=policy, generator=gen,
                                     round_index=1, rng=random.Random(seed), history=history).kept
    before = list(pool)
    kept = selector.select(pool, task=task, policy=policy, generator=gen, round_index=1,
                           rng=random.Random(seed), history=history).kept
    # majority agreement relabels: a kept example is right when its (new) label is the truth
    right_before = sum(e.completion == e.meta["audit_answer"] for e in before)
    kept_self = [e for e in kept if e.unverified]
    kept_right = sum(e.completion == e.meta["audit_answer"] for e in kept_self)
    return {"pool": len(before), "pool_right": right_before / len(before),
            "kept": len(kept_self),
            "precision": kept_right / len(kept_self) if kept_self else float("nan"),
            "recall": kept_right / max(1, right_before)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/base0", help="round-0 run (made if missing)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    _base.threads(1)
    from selfloop.core.round import run_round
    from selfloop.plugins.select.majority_agreement import MajorityAgreement
    from selfloop.plugins.select.quality_classifier import QualityClassifier

    round0 = _base.base_checkpoint(Path(args.out))
    c = _base.components(overrides={"optimizer": {"name": "rejection_sft", "options": {
        "base_steps": 700, "steps": 100, "batch_size": 32, "lr": 3e-3, "round_lr": 1e-3,
        "progress": False}}})
    task, gen = c.task.component, c.generator.component
    policy, history = _base.load(round0)
    peers = policy.peers
    selectors = {
        "majority_agreement (smoke)": lambda: MajorityAgreement(votes=2, threshold=0.66,
                                                                temperature=0.5),
        "quality_classifier keep 0.5": lambda: QualityClassifier(keep_share=0.5),
        "quality_classifier keep 0.3": lambda: QualityClassifier(keep_share=0.3),
        "quality_classifier keep 0.5 +audits": lambda: QualityClassifier(keep_share=0.5,
                                                                         use_audits=True),
    }
    rows = []
    trained = {1, 2, 3}
    for r in range(1, args.rounds + 1):
        rng = random.Random(f"pool:{r}")
        pool = [e for p in c.acquirers for e in p.component.acquire(
            task=task, policy=policy, generator=gen, round_index=r, rng=rng)]
        variants = [(False, "")] + ([(True, " + peers")] if r == 1 and peers else [])
        for with_peers, suffix in variants:
            policy.peers = peers if with_peers else []
            for label, make in selectors.items():
                m = judge(make(), pool, policy, c, history, seed=r)
                rows.append((r, label + suffix, m))
                print(f"round {r} {label + suffix}: {m}", flush=True)
        policy.peers = []
        result = run_round(c, policy, r, history=history, seed=0,
                           workdir=Path("runs/bench/classifier") / str(r),
                           trained_difficulties=trained)
        policy, history = result.policy, result.training_set
        trained = set(result.report["trained_difficulties"])
    print("\nprecision / recall of kept self-labels (smoke-sized model; pools: self-labels at 4-5 "
          "digits, after dedup and format filter; truth from the acquirer's audit)")
    print(f"{'round':>5} {'selector':44s} {'pool':>5} {'pool ok':>7} {'kept':>5} "
          f"{'precision':>9} {'recall':>6}")
    for r, label, m in rows:
        print(f"{r:5d} {label:44s} {m['pool']:5d} {100 * m['pool_right']:6.0f}% {m['kept']:5d} "
              f"{100 * m['precision']:8.0f}% {100 * m['recall']:5.0f}%")


if __name__ == "__main__":
    main()
