"""Tree-of-Thought against self-consistency at equal generated tokens, at the frontier: the
round-0 checkpoint of the smoke config on the lengths where it is neither always right nor always
wrong. Prints accuracy by digits and the decoding steps spent per problem (every model, every
sampled, rolled-out or expanded token).

    python benchmarks/tot_vs_self_consistency.py --out runs/bench/base0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _base


class CountingGenerator:
    """The run's generator, counting the tokens it produced (EOS included, up to the budget)."""

    def __init__(self, inner, tokenizer):
        self.inner, self.tokenizer, self.tokens = inner, tokenizer, 0

    def generate(self, policy, prompts, *, n, temperature, max_new_tokens, seed):
        out = self.inner.generate(policy, prompts, n=n, temperature=temperature,
                                  max_new_tokens=max_new_tokens, seed=seed)
        for group in out:
            for text in group:
                self.tokens += min(max_new_tokens,
                                   len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1)
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/base0", help="round-0 run (made if missing)")
    parser.add_argument("--digits", type=int, nargs="*", default=[4, 5, 6])
    parser.add_argument("--per-difficulty", type=int, default=200)
    args = parser.parse_args()
    _base.threads(1)
    from selfloop.core.round import draw_problems
    from selfloop.plugins.refine.greedy import Greedy
    from selfloop.plugins.refine.self_consistency import SelfConsistency
    from selfloop.plugins.refine.tree_of_thought import TreeOfThought

    round0 = _base.base_checkpoint(Path(args.out))
    c = _base.components()
    task, rewarder = c.task.component, c.rewarder.component
    policy, _ = _base.load(round0)
    problems = draw_problems(task, args.digits, args.per_difficulty, "tot-bench")
    refiners = [("greedy", Greedy())]
    refiners += [(f"self_consistency k={k}", SelfConsistency(samples=k - 1)) for k in (2, 3, 4, 8)]
    refiners += [(f"tot confidence beam={b} width={w}", TreeOfThought(beam=b, width=w))
                 for b, w in ((1, 2), (2, 2), (3, 3), (4, 3), (8, 3))]
    refiners += [("tot rewarder beam=2 width=2", TreeOfThought(beam=2, width=2, value="rewarder")),
                 ("tot rewarder beam=3 width=3", TreeOfThought(beam=3, width=3, value="rewarder")),
                 (f"tot peers beam=3 width=3 ({len(policy.peers)} peers)",
                  TreeOfThought(beam=3, width=3, value="peers"))]
    print(f"ToT vs self-consistency on the smoke config's round-0 checkpoint (2 layers, width 64, "
          f"labels of 1-3 digits), {args.per_difficulty} problems per length; rewarder "
          f"{c.rewarder.name}; tokens = decoding steps per problem")
    print(f"{'refiner':40s} | " + " ".join(f"{d:>4d}d" for d in args.digits)
          + f" | {'tokens':>6s} {'seconds':>7s}")
    for label, refiner in refiners:
        generator = CountingGenerator(c.generator.component, policy.tokenizer)
        started = time.perf_counter()
        answers = refiner.refine(policy, problems, generator=generator, rewarder=rewarder, seed=0)
        seconds = time.perf_counter() - started
        tokens = sum(getattr(refiner, "last_tokens", [])) or generator.tokens
        by: dict[int, list[bool]] = {}
        for p, a in zip(problems, answers):
            by.setdefault(p.difficulty, []).append(task.verify(p, a))
        acc = {d: sum(v) / len(v) for d, v in by.items()}
        print(f"{label:40s} | {_base.accuracy_row(acc, args.digits)} | "
              f"{tokens / len(problems):6.1f} {seconds:7.1f}", flush=True)


if __name__ == "__main__":
    main()
