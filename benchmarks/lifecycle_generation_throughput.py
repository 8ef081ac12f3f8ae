"""Generation throughput: selfloop's batched generator vs transformers' ``generate`` on the whole
batch (left-padded, with an attention mask), same trained model, same prompts, greedy, same budget.

The generator's default path on this (Llama-shaped) model is its lean forward (plugins/generate/
lean.py) over a preallocated cache, prompts prefilled by length without padding, ended rows
dropped; ``--compile`` times the stock forward compiled instead. The headline is
``speed-up vs batched generate (median)``, and outputs must not differ (``differ`` 0).

The model is the embedded one after a short base round of rejection SFT (``--steps`` steps on 1-5
digit reversed additions), cached in ``--checkpoint`` so repeats don't retrain; random weights
would make near-ties that float noise breaks. Prompts mix 1 to ``--max-digits`` digits. Each
repeat runs every generator once, interleaved; "cold" is a generator's first call, the median is
over the rest. Tokens/s counts generated tokens up to and including the end token (or the budget).
The outputs of our generator and of whole-batch ``generate`` are compared prompt by prompt.
``generate`` one prompt at a time is a second, slower row (``--single-repeats`` calls).
``--compile`` adds a row for the generator with ``compile=True`` (its cold call compiles).

The embedded model computes abacus positions from the input ids (pads are non-digits, and their
keys are masked), so ``generate`` on a left-padded batch answers as it does per prompt.

    python benchmarks/lifecycle_generation_throughput.py --prompts 256 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path


def checkpoint(path: Path, steps: int, device: str):
    """The trained policy at ``path``, trained there first when missing."""
    from selfloop.core.models import load_policy, save_policy
    from selfloop.core.types import Example
    from selfloop.plugins.model.embedded import Embedded
    from selfloop.plugins.optimize.rejection_sft import train
    from selfloop.plugins.tasks.reversed_addition import ReversedAddition

    if not (path / "config.json").exists():
        task, rng = ReversedAddition(), random.Random(0)
        examples = [Example(p.prompt, p.answer, d, "labelled")
                    for d in range(1, 6) for p in task.problems(d, 2000, rng)]
        policy = Embedded(device=device).create()
        started = time.perf_counter()
        metrics = train(policy, examples, steps=steps, batch_size=64, lr=1e-3,
                        offset_warmup_steps=int(0.4 * steps), seed=0, progress=False)
        print(f"trained {steps} steps in {time.perf_counter() - started:.0f} s, "
              f"loss {metrics['loss']:.4f}; saved to {path}")
        save_policy(policy, path)
    policy = load_policy(path)
    policy.model.to(device).eval()
    return policy


def ours(policy, prompts, budget, compile=False):
    from selfloop.plugins.generate.batched import BatchedGenerator

    return [g[0] for g in BatchedGenerator(progress=False, compile=compile).generate(
        policy, prompts, n=1, temperature=0.0, max_new_tokens=budget, seed=0)]


def ours_compiled(policy, prompts, budget):
    return ours(policy, prompts, budget, compile=True)


def whole_batch(policy, prompts, budget):
    """transformers' generate on all prompts at once: left-padded, with the attention mask."""
    import torch
    from selfloop.plugins.generate.batched import end_token_ids

    tok, model = policy.tokenizer, policy.model
    tok.padding_side = "left"
    enc = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=budget, pad_token_id=tok.pad_token_id,
                             eos_token_id=end_token_ids(policy))
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def one_at_a_time(policy, prompts, budget):
    import torch
    from selfloop.plugins.generate.batched import end_token_ids

    tok, model = policy.tokenizer, policy.model
    texts = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tok([prompt], add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=budget, pad_token_id=tok.pad_token_id,
                                 eos_token_id=end_token_ids(policy))
            texts.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-digits", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--single-repeats", type=int, default=1, help="calls of the one-at-a-time row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000, help="training steps of the checkpoint")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the trained model's directory (made when missing)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--compile", action="store_true",
                        help="also time the generator with compile=True (its cold call compiles)")
    args = parser.parse_args()

    import torch
    from selfloop.plugins.tasks.reversed_addition import ReversedAddition

    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    path = args.checkpoint or Path(tempfile.gettempdir()) / f"selfloop-generation-bench-{args.steps}"
    policy = checkpoint(path, args.steps, device)
    task, rng = ReversedAddition(), random.Random(0)
    problems = [p for i in range(args.prompts)
                for p in task.problems(1 + i % args.max_digits, 1, rng)]
    prompts = [p.prompt for p in problems]
    budget = args.max_digits + 3  # the task's budget for the longest problems

    load = os.getloadavg()[0]
    rows = {"selfloop batched": (ours, args.repeats),
            "transformers generate, whole batch": (whole_batch, args.repeats),
            "transformers generate, 1 at a time": (one_at_a_time, args.single_repeats)}
    if args.compile:
        rows = {"selfloop batched, compile=True": (ours_compiled, args.repeats), **rows}
    seconds = {name: [] for name in rows}
    outputs = {}
    for repeat in range(max(args.repeats, args.single_repeats) + 1):  # +1: the cold call
        for name, (fn, calls) in rows.items():
            if repeat <= calls:
                took, outputs[name] = timed(fn, policy, prompts, budget)
                seconds[name].append(took)
    ref = outputs["selfloop batched"]
    tokens = sum(min(budget, len(policy.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1)
                 for t in ref)
    differ = {name: sum(a != b for a, b in zip(ref, out)) for name, out in outputs.items()}
    scored = [(p.difficulty, task.verify(p, a)) for p, a in zip(problems, ref)]
    exact = [sum(r for d, r in scored if d == digits) / max(1, sum(d == digits for d, _ in scored))
             for digits in range(1, args.max_digits + 1)]

    print(f"generation throughput: {args.prompts} prompts of 1-{args.max_digits}-digit reversed "
          f"addition, greedy, budget {budget} tokens, {args.repeats} repeats, {args.threads} "
          f"thread(s), {device}, load {load:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"model: {path} (exact match by digits: "
          f"{' '.join(f'{e:.0%}' for e in exact)}); {tokens} tokens generated")
    print(f"{'generator':<36}{'cold s':>9}{'median s':>10}{'min s':>9}{'tokens/s':>10}{'differ':>8}")
    for name, values in seconds.items():
        warm = values[1:] or values
        print(f"{name:<36}{values[0]:>9.3f}{statistics.median(warm):>10.3f}{min(warm):>9.3f}"
              f"{tokens / statistics.median(warm):>10.0f}{differ[name]:>8}")
    median = {name: statistics.median(v[1:] or v) for name, v in seconds.items()}
    print(f"outputs that differ from whole-batch generate: {differ['transformers generate, whole batch']}"
          f" of {len(prompts)}")
    print(f"speed-up vs batched generate (median): "
          f"{median['transformers generate, whole batch'] / median['selfloop batched']:.1f}x")
    print(f"speed-up vs one-at-a-time generate (median): "
          f"{median['transformers generate, 1 at a time'] / median['selfloop batched']:.1f}x")
    if args.compile:
        name = "selfloop batched, compile=True"
        print(f"compile=True: speed-up vs batched generate (median) "
              f"{median['transformers generate, whole batch'] / median[name]:.1f}x; its cold call "
              f"{seconds[name][0]:.1f} s, {seconds[name][0] - median[name]:.1f} s over a warm one")


if __name__ == "__main__":
    main()
