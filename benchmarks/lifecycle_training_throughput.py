"""Training throughput: the embedded rejection-sampling fine-tuning loop vs TRL's SFTTrainer.

Same model (the default config: Llama, abacus positions), same labelled data (1-5 digit reversed
addition), same batch size and learning rate, same torch threads, fp32 and no gradient
checkpointing for both (TRL's defaults, bf16 and checkpointing, are far slower on this CPU), in one
run; each trainer runs
``--steps`` optimizer steps ``--repeats`` times on a fresh model. Tokens per second counts the
prompt + completion + EOS tokens of the examples consumed (padding excluded), over the time of the
training loop alone (TRL: ``trainer.train()``; set-up and dataset tokenization excluded).

    python benchmarks/lifecycle_training_throughput.py --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time


def data(count_per_difficulty: int):
    from selfloop.core.types import Example
    from selfloop.plugins.tasks.reversed_addition import ReversedAddition

    task, rng = ReversedAddition(), random.Random(0)
    return [Example(p.prompt, p.answer, d, "labelled")
            for d in range(1, 6) for p in task.problems(d, count_per_difficulty, rng)]


def run_selfloop(examples, settings, steps, batch):
    from selfloop.plugins.optimize.rejection_sft import train

    policy = settings.create()
    metrics = train(policy, examples, steps=steps, batch_size=batch, lr=1e-3, warmup=10,
                    progress=False)
    return metrics["tokens_per_second"]


def run_trl(examples, settings, steps, batch):
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
                         # TRL's defaults are bf16 autocast and gradient checkpointing; on a CPU
                         # without bf16 units both only slow it down: compare like with like.
                         bf16=False, gradient_checkpointing=False)
        trainer = SFTTrainer(model=policy.model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tok)
        trainer.remove_callback(PrinterCallback)
        mean_tokens = sum(len(e.prompt) + len(e.completion) + 1 for e in examples) / len(examples)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return steps * batch * mean_tokens / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--per-difficulty", type=int, default=400, help="examples per digit count")
    args = parser.parse_args()

    import torch
    from selfloop.plugins.model.embedded import Embedded

    torch.set_num_threads(args.threads)
    settings = Embedded()  # the default model's provider
    examples = data(args.per_difficulty)
    results = {"selfloop rejection_sft": [], "TRL SFTTrainer": []}
    for _ in range(args.repeats):  # interleaved, so a busy machine hurts both alike
        results["selfloop rejection_sft"].append(run_selfloop(examples, settings, args.steps, args.batch))
        results["TRL SFTTrainer"].append(run_trl(examples, settings, args.steps, args.batch))
    print(f"training throughput: {settings.architecture} {settings.n_layer}x{settings.n_embd}, batch {args.batch}, "
          f"{args.steps} steps x {args.repeats} repeats, {args.threads} thread(s)")
    print(f"{'trainer':<26}{'median tokens/s':>16}{'min':>10}{'max':>10}")
    for name, values in results.items():
        print(f"{name:<26}{statistics.median(values):>16.0f}{min(values):>10.0f}{max(values):>10.0f}")
    ratio = statistics.median(results["selfloop rejection_sft"]) / statistics.median(results["TRL SFTTrainer"])
    print(f"speed-up (median): {ratio:.2f}x")


if __name__ == "__main__":
    main()
