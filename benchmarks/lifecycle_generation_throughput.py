"""Generation throughput: the batched KV-cached generator vs transformers' ``generate`` called one
prompt at a time, same model, same prompts, greedy, in one run.

Tokens per second counts generated tokens up to and including the first EOS (or the budget).

    python benchmarks/lifecycle_generation_throughput.py --prompts 256 --repeats 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def run_batched(policy, prompts, budget):
    from selfloop.plugins.generate.batched import BatchedGenerator

    started = time.perf_counter()
    out = BatchedGenerator().generate(policy, prompts, n=1, temperature=0.0,
                                      max_new_tokens=budget, seed=0)
    seconds = time.perf_counter() - started
    tokens = sum(min(budget, len(group[0]) + 1) for group in out)  # + EOS unless cut by budget
    return tokens / seconds, [g[0] for g in out]


def run_one_at_a_time(policy, prompts, budget):
    import torch

    tok, model = policy.tokenizer, policy.model.eval()
    tokens, texts = 0, []
    started = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            ids = tok([prompt], add_special_tokens=False, return_tensors="pt")["input_ids"]
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=budget, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
            new = out[0, ids.shape[1]:].tolist()
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id) + 1]
            tokens += len(new)
            texts.append(tok.decode(new, skip_special_tokens=True))
    return tokens / (time.perf_counter() - started), texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--digits", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="a model directory (default: a fresh model)")
    args = parser.parse_args()

    import torch
    from selfloop.core.models import load_policy
    from selfloop.plugins.model.embedded import Embedded
    from selfloop.plugins.tasks.reversed_addition import ReversedAddition

    torch.set_num_threads(args.threads)
    policy = load_policy(args.model) if args.model else Embedded().create()
    prompts = [p.prompt for p in ReversedAddition().problems(args.digits, args.prompts, random.Random(0))]
    budget = args.digits + 2
    results = {"selfloop batched (KV cache)": [], "transformers generate, 1 at a time": []}
    same = None
    for _ in range(args.repeats):
        rate, ours = run_batched(policy, prompts, budget)
        results["selfloop batched (KV cache)"].append(rate)
        rate, theirs = run_one_at_a_time(policy, prompts, budget)
        results["transformers generate, 1 at a time"].append(rate)
        same = ours == theirs
    print(f"generation throughput: {args.prompts} prompts of {args.digits}-digit addition, greedy, "
          f"budget {budget} tokens, {args.repeats} repeats, {args.threads} thread(s)")
    print(f"{'generator':<38}{'median tokens/s':>16}{'min':>10}{'max':>10}")
    for name, values in results.items():
        print(f"{name:<38}{statistics.median(values):>16.0f}{min(values):>10.0f}{max(values):>10.0f}")
    values = list(results.values())
    print(f"speed-up (median): {statistics.median(values[0]) / statistics.median(values[1]):.1f}x; "
          f"identical outputs: {same}")


if __name__ == "__main__":
    main()
