"""Data autophagy (Shumailov et al. 2024): the embedded lifecycle for N rounds with self-labelled
data *replacing* the training set, against *accumulating* it (the default). Prints accuracy by
digits and answer diversity per round for both, and writes a PNG with both side by side.

Both arms: the smoke config's model and round 0 (labels of 1-3 digits); every later round the
model labels 200 fresh problems per length from 1 digit to two past the labels (one more each
round), kept after dedup and the format filter only (no agreement, no peers); rejection SFT. The
accumulate arm adds the labelled data and earlier rounds' examples (``accumulate``); the replace
arm trains on the round's self-labels alone. The admission gate is off in both (it would refuse
the collapsing rounds, which is what it is for, but here the collapse is the thing to see).
Diversity: on fixed prompts (100 per length), 8 answers sampled at temperature 1; distinct answers
per prompt and the entropy (bits) of their distribution, averaged.

    python benchmarks/autophagy.py --rounds 5 --out runs/bench/autophagy --png autophagy.png
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import _base

DIGITS = [1, 2, 3, 4, 5]


def arm_config(accumulate: bool, rounds: int) -> dict:
    select = [{"name": "dedup"}, {"name": "format_filter"}]
    if accumulate:
        select.append({"name": "accumulate", "options": {"new_share": 0.5}})
    return {
        "seed": 0,
        "acquire": [
            {"name": "labelled", "options": {"min_difficulty": 1, "max_difficulty": 3,
                                             "per_difficulty": 600}},
            {"name": "self_label", "options": {"start_difficulty": 1, "count": 200,
                                               "window": 8, "ahead": 2}},
        ],
        "select": select,
        "optimizer": {"name": "rejection_sft", "options": {
            "base_steps": 700, "steps": 100, "batch_size": 32, "lr": 3e-3, "round_lr": 1e-3}},
        "evaluate": [{"name": "dynamic_benchmark", "options": {
            "min_difficulty": 1, "max_difficulty": 5, "per_difficulty": 100}}],
        "model": {"n_layer": 2, "n_embd": 64, "n_head": 4, "max_positions": 48,
                  "max_position_offset": 5, "inference_offset": 0, "peers": 0},
        "lifecycle": {"rounds": rounds, "threads": 1, "admission": False,
                      "keep_checkpoints": True, "plot": False},
    }


def run_arm(out: Path, accumulate: bool, rounds: int) -> dict:
    from selfloop.core.config import to_toml

    if not (out / "report.json").is_file() or not json.loads(
            (out / "report.json").read_text()).get("finished"):
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(to_toml(arm_config(accumulate, rounds)))
        selfloop = Path(sys.executable).parent / "selfloop"
        subprocess.run([str(selfloop), "run", "--config", f.name, "--rounds", str(rounds),
                        "--out", str(out)], check=True)
    return json.loads((out / "report.json").read_text())


def diversity(model_dir: Path, problems, generator) -> tuple[float, float]:
    from selfloop.core.models import load_policy

    policy = load_policy(model_dir)
    groups = generator.generate(policy, [p.prompt for p in problems], n=8, temperature=1.0,
                                max_new_tokens=max(DIGITS) + 3, seed=0)
    distinct, entropy = [], []
    for group in groups:
        counts = Counter(s.strip() for s in group)
        distinct.append(len(counts))
        entropy.append(-sum(c / 8 * math.log2(c / 8) for c in counts.values()))
    return sum(distinct) / len(distinct), sum(entropy) / len(entropy)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="runs/bench/autophagy")
    parser.add_argument("--png", default="runs/bench/autophagy/autophagy.png")
    args = parser.parse_args()
    _base.threads(1)
    from selfloop.core.round import draw_problems
    from selfloop.plugins.generate.batched import BatchedGenerator
    from selfloop.plugins.tasks.reversed_addition import ReversedAddition

    problems = draw_problems(ReversedAddition(), DIGITS, 100, "autophagy-diversity")
    generator = BatchedGenerator(progress=False)
    arms = {}
    for name, accumulate in (("replace", False), ("accumulate", True)):
        out = Path(args.out) / name
        report = run_arm(out, accumulate, args.rounds)
        rows = []
        for entry in report["rounds"]:
            model = out / entry["checkpoint"]
            d, h = diversity(model, problems, generator) if model.is_dir() else (math.nan, math.nan)
            rows.append({"round": entry["round"],
                         "acc": {int(k): v for k, v in entry["accuracy_by_digits"].items()},
                         "training_set": entry["data"]["training_set"],
                         "label_ok": entry["data"]["label_accuracy_kept"],
                         "distinct": d, "entropy": h})
        arms[name] = rows
    print("autophagy: smoke-sized model (2 layers, width 64), labels of 1-3 digits in round 0, "
          "then self-labels of 1..(frontier) digits; admission gate off; exact match % on 100 "
          "problems per length; diversity: 8 samples at T=1 on 500 fixed prompts")
    print(f"{'arm':10s} {'round':>5} | " + " ".join(f"{d:>4d}d" for d in DIGITS)
          + f" | {'train':>6s} {'label ok':>8s} {'distinct':>8s} {'entropy':>7s}")
    for name, rows in arms.items():
        for r in rows:
            ok = f"{100 * r['label_ok']:7.0f}%" if r["label_ok"] is not None else "       -"
            print(f"{name:10s} {r['round']:5d} | {_base.accuracy_row(r['acc'], DIGITS)} | "
                  f"{r['training_set']:6d} {ok} {r['distinct']:8.2f} {r['entropy']:7.2f}")
    plot(arms, Path(args.png))
    print(f"plot: {args.png}")


def plot(arms, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, name in zip(axes[:2], ("replace", "accumulate")):
        rows = arms[name]
        cmap = plt.get_cmap("viridis")
        for k, r in enumerate(rows):
            ax.plot(DIGITS, [r["acc"].get(d, math.nan) for d in DIGITS], marker="o",
                    color=cmap(k / max(1, len(rows) - 1)), label=f"round {r['round']}")
        ax.set_title(f"{name}: accuracy by length")
        ax.set_xlabel("digits per operand")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(DIGITS)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("exact match")
    axes[1].legend(fontsize=7)
    ax = axes[2]
    for name, style in (("replace", "-"), ("accumulate", "--")):
        rows = arms[name]
        ax.plot([r["round"] for r in rows], [r["entropy"] for r in rows], style, marker="o",
                label=f"{name}: answer entropy (bits)")
        ax.plot([r["round"] for r in rows], [r["distinct"] for r in rows], style, marker="s",
                label=f"{name}: distinct answers (of 8)")
    ax.set_title("diversity per round (8 samples, T=1)")
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
