"""Training throughput: the embedded rejection-sampling fine-tuning loop vs TRL's SFTTrainer.

Same model (the default config: Llama 4 x 128, abacus positions), same labelled data (1-5 digit
reversed addition, 400 a digit count), same batch size and learning rate, same torch threads, no
gradient checkpointing, in one run; each configuration runs ``--steps`` optimizer steps
``--repeats`` times on a fresh model, interleaved, so a busy machine slows all alike.

Rows:
- ``selfloop compiled``: ``train(..., compile=True)``, what a round of ``--steps`` >= 300 steps
  runs (``compile="auto"``). Torch compiles once per process; a fresh model reuses the graphs, so
  the rows are warm, and the compile is timed apart, by a short warm-up training before the timed
  runs, and printed as its own line, with its share of the default 2000-step base round.
- ``selfloop eager``: ``compile=False``, what a shorter round runs.
- TRL: fp32; its own ``bf16=True`` (autocast); ``group_by_length`` (batches of similar lengths,
  less padding); and, with ``--trl-compile``, its own ``torch_compile=True`` (off by default: it
  compiles inside its timed ``trainer.train()``; 154 tokens/s over 40 steps, measured once).
The speed-up is ``selfloop compiled``'s median over the best TRL configuration's median.

Tokens per second counts the prompt + completion + EOS tokens of the examples consumed (padding
excluded), over the time of the training loop alone (TRL: ``trainer.train()``; set-up and
dataset tokenization excluded). The share of the fp32 peak takes 6 x parameters x tokens as the
FLOPs and 2 FMA units x 16 fp32 lanes x 2 flops x the clock (``/proc/cpuinfo``) x threads as the
peak (AVX-512). Most of a compiled step is the model's small matrix products (width 128, about 800
tokens a batch), which MKL runs at about half to two thirds of that peak here (so the whole step
can hardly pass that); the rest is attention, element-wise work and per-operation overhead, which
compiling fuses.

    python benchmarks/lifecycle_training_throughput.py --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

BASE_ROUND_STEPS = 2000  # rejection_sft.BASE_STEPS, the default base round


def data(count_per_difficulty: int):
    from selfloop.core.types import Example
    from selfloop.plugins.tasks.reversed_addition import ReversedAddition

    task, rng = ReversedAddition(), random.Random(0)
    return [Example(p.prompt, p.answer, d, "labelled")
            for d in range(1, 6) for p in task.problems(d, count_per_difficulty, rng)]


def run_selfloop(examples, settings, steps, batch, compile=False):
    from selfloop.plugins.optimize.rejection_sft import train

    policy = settings.create()
    metrics = train(policy, examples, steps=steps, batch_size=batch, lr=1e-3, warmup=10,
                    progress=False, compile=compile)
    return metrics


def run_trl(examples, settings, steps, batch, **options):
    import datasets
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    policy = settings.create()
    tok = policy.tokenizer
    eos = tok.eos_token
    rows = [{"prompt": e.prompt, "completion": e.completion + eos} for e in examples]
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch,
                         learning_rate=1e-3, warmup_steps=10, logging_steps=steps,
                         save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                         dataloader_num_workers=0, seed=0,
                         # TRL's default gradient checkpointing only slows a model this small.
                         gradient_checkpointing=False, **options)
        trainer = SFTTrainer(model=policy.model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tok)
        trainer.remove_callback(PrinterCallback)
        mean_tokens = sum(len(e.prompt) + len(e.completion) + 1 for e in examples) / len(examples)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"tokens_per_second": steps * batch * mean_tokens / seconds}


def fp32_peak_gflops(threads: int) -> float | None:
    """2 AVX-512 FMA units x 16 fp32 lanes x 2 flops per cycle, at the clock /proc/cpuinfo gives."""
    try:
        with open("/proc/cpuinfo") as f:
            mhz = next(float(line.split(":")[1]) for line in f if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None
    return 2 * 16 * 2 * mhz / 1000 * threads


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-difficulty", type=int, default=400, help="examples per digit count")
    parser.add_argument("--trl-compile", action="store_true", help="add TRL with torch_compile=True")
    args = parser.parse_args()

    import os

    import torch
    from selfloop.plugins.model.embedded import Embedded

    torch.set_num_threads(args.threads)
    provider = Embedded()  # the default model's provider
    examples = data(args.per_difficulty)
    params = sum(p.numel() for p in provider.create().model.parameters())
    steps, batch = args.steps, args.batch
    # The compile, timed apart: the first step of a short warm-up run compiles.
    warmup = run_selfloop(examples, provider, 3, batch, compile=True)
    runs = {"selfloop compiled": lambda: run_selfloop(examples, provider, steps, batch, compile=True),
            "selfloop eager": lambda: run_selfloop(examples, provider, steps, batch),
            "TRL SFTTrainer fp32": lambda: run_trl(examples, provider, steps, batch),
            "TRL SFTTrainer bf16": lambda: run_trl(examples, provider, steps, batch, bf16=True),
            "TRL group_by_length": lambda: run_trl(examples, provider, steps, batch,
                                                   train_sampling_strategy="group_by_length")}
    if args.trl_compile:
        runs["TRL torch_compile"] = lambda: run_trl(examples, provider, steps, batch, torch_compile=True)
    results = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so a busy machine hurts all alike
        for name, run in runs.items():
            results[name].append(run()["tokens_per_second"])
    s = provider.settings
    print(f"training throughput: {s.architecture} {s.n_layer}x{s.n_embd} ({params / 1e6:.2f}M parameters), "
          f"batch {batch}, {steps} steps x {args.repeats} repeats, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    peak = fp32_peak_gflops(args.threads)
    print(f"{'trainer':<24}{'median tokens/s':>16}{'min':>10}{'max':>10}{'GFLOP/s':>10}{'% fp32 peak':>13}")
    for name, values in results.items():
        median = statistics.median(values)
        gflops = 6 * params * median / 1e9
        share = f"{100 * gflops / peak:.0f}%" if peak else "?"
        print(f"{name:<24}{median:>16.0f}{min(values):>10.0f}{max(values):>10.0f}{gflops:>10.1f}{share:>13}")
    compiled = statistics.median(results["selfloop compiled"])
    base_round = BASE_ROUND_STEPS * batch * sum(len(e.prompt) + len(e.completion) + 1 for e in examples) \
        / len(examples) / compiled
    print(f"compile (once per process, not in the rows): {warmup['compile_seconds']:.1f} s, "
          f"{100 * warmup['compile_seconds'] / (base_round + warmup['compile_seconds']):.0f}% of a "
          f"{BASE_ROUND_STEPS}-step base round at the compiled rate")
    best_trl = max((n for n in results if n.startswith("TRL")), key=lambda n: statistics.median(results[n]))
    print(f"best TRL configuration: {best_trl}")
    print(f"speed-up (median): {compiled / statistics.median(results[best_trl]):.2f}x")
    print(f"speed-up, eager (median): "
          f"{statistics.median(results['selfloop eager']) / statistics.median(results[best_trl]):.2f}x")


if __name__ == "__main__":
    main()
