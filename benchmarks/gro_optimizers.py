"""GRO optimizers at the same budget from the same round-0 checkpoint: rejection SFT, DPO, GRPO,
SPIN. Prints exact match by digits after rounds 1 and 2 (median over repeats), each round's
admission-gate verdict, and the seconds each optimizer took.

Budget: every optimizer trains on 3200 sequences a round (rejection SFT 100 steps x 32; DPO and
SPIN 100 steps x 16 pairs, chosen and rejected; GRPO 200 steps x 16 completions, 4 per prompt,
rewarded by majority_vote plus 1 for the kept label: ``target_weight``).
Everything else is the smoke config's (2 layers, width 64; labels of 1-3 digits; self-labels at
4-5 digits; its selectors; majority_vote as the label-free rewarder), without peer models. Round 2
continues from round 1's checkpoint whatever the gate said (it measures the optimizer); the gate's
verdict is printed beside it.

    python benchmarks/gro_optimizers.py --out runs/bench/base0 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import _base

BASE = {"base_steps": 700, "batch_size": 32, "lr": 3e-3}
OPTIMIZERS = {
    "rejection_sft": {"name": "rejection_sft", "options": {"base_steps": 700, "steps": 100,
                      "batch_size": 32, "lr": 3e-3, "round_lr": 1e-3, "progress": False}},
    "dpo": {"name": "dpo", "options": {"steps": 100, "batch_size": 16, "lr": 5e-5,
            "base_options": BASE}},
    "dpo (old: no NLL)": {"name": "dpo", "options": {"steps": 100, "batch_size": 16, "lr": 5e-5,
                          "sft_weight": 0.0, "fixed_positions": False, "base_options": BASE}},
    "grpo": {"name": "grpo", "options": {"steps": 200, "batch_size": 16, "generations": 4,
             "lr": 1e-5, "target_weight": 1.0, "base_options": BASE}},
    "grpo (majority reward only)": {"name": "grpo", "options": {
        "steps": 200, "batch_size": 16, "generations": 4, "lr": 1e-5, "base_options": BASE}},
    "spin": {"name": "spin", "options": {"steps": 100, "batch_size": 16, "lr": 5e-5,
             "iterations": 2, "base_options": BASE}},
    "spin (labelled targets)": {"name": "spin", "options": {
        "steps": 100, "batch_size": 16, "lr": 5e-5, "iterations": 2, "targets": "labelled",
        "base_options": BASE}},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/base0", help="round-0 run (made if missing)")
    parser.add_argument("--work", default="runs/bench/gro")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-difficulty", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=None, help="optimizer labels to run")
    args = parser.parse_args()
    _base.threads(1)
    from selfloop.core.round import draw_problems, evaluate_problems, run_round

    round0 = _base.base_checkpoint(Path(args.out))
    digits = [1, 2, 3, 4, 5, 6]
    results_path = Path(args.work) / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    labels = args.only or list(OPTIMIZERS)
    for label in labels:
        for repeat in range(args.repeats):
            key = f"{label}#{repeat}"
            if key in results:
                continue
            c = _base.components(overrides={"optimizer": OPTIMIZERS[label], "seed": repeat})
            problems = draw_problems(c.task.component, digits, args.per_difficulty, "gro-bench")
            policy, history = _base.load(round0, peers=False)
            trained = set(range(1, 4))
            rows = [{"round": 0, "acc": evaluate_problems(policy, problems, components=c)}]
            for r in range(1, args.rounds + 1):
                started = time.perf_counter()
                result = run_round(c, policy, r, history=history, seed=repeat,
                                   workdir=Path(args.work) / key.replace(" ", "_") / str(r),
                                   trained_difficulties=trained)
                policy, history = result.policy, result.training_set
                trained = set(result.report["trained_difficulties"])
                rows.append({"round": r, "acc": evaluate_problems(policy, problems, components=c),
                             "admitted": result.admitted,
                             "reason": result.report["admission"]["reason"],
                             "optimize_seconds": result.report["seconds"]["optimize"],
                             "round_seconds": time.perf_counter() - started,
                             "label_accuracy_kept": result.report["data"]["label_accuracy_kept"]})
                print(f"{key} round {r}: {_base.accuracy_row(rows[-1]['acc'], digits)} "
                      f"{'admitted' if result.admitted else 'REJECTED'} "
                      f"({rows[-1]['optimize_seconds']:.0f} s)", flush=True)
            results[key] = rows
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, default=str))
    print_table(results, labels, digits, args)


def print_table(results, labels, digits, args):
    print(f"\nGRO optimizers, same budget (3200 trained sequences a round), from one round-0 "
          f"checkpoint (smoke-sized model); exact match %, {args.per_difficulty} problems per "
          f"length, median of {args.repeats} repeats (seeds 0..{args.repeats - 1}); gate: admitted "
          f"rounds / repeats")
    print(f"{'optimizer':26s} {'round':>5s} | " + " ".join(f"{d:>4d}d" for d in digits)
          + f" | {'gate':>5s} {'opt s':>6s}")
    for label in labels:
        runs = [results[k] for k in results if k.split("#")[0] == label]
        if not runs:
            continue
        for r in range(args.rounds + 1):
            entries = [run[r] for run in runs if len(run) > r]
            acc = {d: statistics.median(e["acc"][str(d)] if str(d) in e["acc"] else e["acc"][d]
                                        for e in entries) for d in digits}
            gate = (f"{sum(bool(e['admitted']) for e in entries)}/{len(entries)}" if r else "")
            secs = (f"{statistics.median(e['optimize_seconds'] for e in entries):6.0f}" if r else "")
            print(f"{label if r == 0 else '':26s} {r:5d} | {_base.accuracy_row(acc, digits)} | "
                  f"{gate:>5s} {secs:>6s}")


if __name__ == "__main__":
    main()
