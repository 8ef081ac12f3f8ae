"""Why DPO destroyed the model, and what fixes it: one round-1 pair set from the smoke-sized
round-0 checkpoint, trained with DPO variants; prints the pairs' direction (how often chosen and
rejected are right), and per variant the log-likelihood of chosen and rejected before and after,
and exact match by digits (greedy, fixed problems).

    python benchmarks/dpo_diagnosis.py --out runs/bench/base0
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import _base

VARIANTS = [  # label, preference_step options
    ("before training", None),
    ("old default: DPO lr 5e-5, 30 steps", {"steps": 30, "lr": 5e-5, "beta": 0.1, "sft_weight": 0.0,
                                               "fixed_positions": False}),
    ("  + fixed positions", {"steps": 30, "lr": 5e-5, "beta": 0.1, "sft_weight": 0.0}),
    ("  beta 0.5", {"steps": 30, "lr": 5e-5, "beta": 0.5, "sft_weight": 0.0, "fixed_positions": False}),
    ("  lr 5e-6", {"steps": 30, "lr": 5e-6, "beta": 0.1, "sft_weight": 0.0, "fixed_positions": False}),
    ("  + NLL on chosen (RPO)", {"steps": 30, "lr": 5e-5, "beta": 0.1, "sft_weight": 1.0,
                                     "fixed_positions": False}),
    ("new default: RPO + fixed, 30 steps", {"steps": 30, "lr": 5e-5, "beta": 0.1, "sft_weight": 1.0}),
    ("new default: RPO + fixed, 100 steps", {"steps": 100, "lr": 5e-5, "beta": 0.1, "sft_weight": 1.0}),
    ("plain DPO, 100 steps, lr 5e-6", {"steps": 100, "lr": 5e-6, "beta": 0.1, "sft_weight": 0.0}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/base0", help="round-0 run (made if missing)")
    parser.add_argument("--per-difficulty", type=int, default=100)
    args = parser.parse_args()
    _base.threads(1)
    from selfloop.core.round import draw_problems, evaluate_problems
    from selfloop.plugins.optimize._trl_common import preference_step, sequence_logps

    round0 = _base.base_checkpoint(Path(args.out))
    c = _base.components(Path("examples/configs/dpo.toml"))
    task, gen = c.task.component, c.generator.component
    policy, history = _base.load(round0, peers=False)
    rng = random.Random("0:1")
    acquired = [e for p in c.acquirers for e in p.component.acquire(
        task=task, policy=policy, generator=gen, round_index=1, rng=rng)]
    kept = acquired
    for part in c.selectors:
        kept = part.component.select(kept, task=task, policy=policy, generator=gen, round_index=1,
                                     rng=rng, history=history).kept
    rows = c.optimizer.component.pairs(policy, kept, task=task, generator=gen,
                                       rewarder=c.rewarder.component, seed=1)
    chosen_ok = sum(r["chosen"] == task.answer_for(r["prompt"]) for r in rows) / len(rows)
    rejected_ok = sum(r["rejected"] == task.answer_for(r["prompt"]) for r in rows) / len(rows)
    print(f"round-1 pairs from {round0}: {len(rows)} (training set {len(kept)}); chosen right "
          f"{100 * chosen_ok:.0f}%, rejected right {100 * rejected_ok:.0f}%")
    digits = [1, 2, 3, 4, 5]
    problems = draw_problems(task, digits, args.per_difficulty, "dpo-diagnosis")
    probe = rows[:300]
    print(f"smoke-sized model (2 layers, width 64), batch 16 pairs, beta 0.1 unless said; "
          f"exact match on {args.per_difficulty} problems per length; log p summed over the answer")
    print(f"{'variant':38s} {'logp chosen':>11s} {'rejected':>9s} | " + " ".join(f"{d:>4d}d" for d in digits)
          + f" | {'seconds':>7s}")
    for label, options in VARIANTS:
        policy, _ = _base.load(round0, peers=False)
        started = time.perf_counter()
        if options is not None:
            preference_step(policy, rows, workdir=Path("/tmp/selfloop-dpo-diagnosis"),
                            batch_size=16, **options)
        seconds = time.perf_counter() - started
        chosen = sum(sequence_logps(policy, probe, "chosen")) / len(probe)
        rejected = sum(sequence_logps(policy, probe, "rejected")) / len(probe)
        acc = evaluate_problems(policy, problems, components=c)
        print(f"{label:38s} {chosen:11.2f} {rejected:9.2f} | {_base.accuracy_row(acc, digits)} | "
              f"{seconds:7.1f}", flush=True)


if __name__ == "__main__":
    main()
