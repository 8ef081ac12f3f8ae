"""Rejection-sampling fine-tuning (STaR / ReST-EM), the embedded optimizer.

The E-step of ReST-EM (sample, score, keep what the reward accepts) is the round's acquire and
select stages; this is the M-step: fine-tune on the kept examples with the usual next-token loss on
the completion only. It reads like nanoGPT's loop: sample a batch, forward, backward, step.

Why it is fast on a CPU: examples are bucketed by token length and every batch is drawn from one
bucket, so no batch carries padding or needs an attention mask; a bucket is picked with
probability proportional to its examples' total weight, then examples by weight within it.
Before an update, examples that claim a ground-truth answer (``meta["answer"]``, e.g. an LLM's
problems) are checked against the task's own answer when the task can compute one, and dropped
when wrong: the rejection step for labels of doubtful origin.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from pathlib import Path

from selfloop.core.hookspecs import hookimpl
from selfloop.core.progress import progress_bar
from selfloop.core.tunable import tunable
from selfloop.core.types import Example, OptimizeResult, Policy, Problem

BASE_STEPS = tunable(2000, low=0, high=100000)
ROUND_STEPS = tunable(500, low=0, high=100000)
BATCH_SIZE = tunable(64, low=4, high=1024)
LEARNING_RATE = tunable(1e-3, low=1e-5, high=1e-2)
ROUND_LEARNING_RATE = tunable(5e-4, low=1e-5, high=1e-2)
OFFSET_WARMUP = tunable(0.4, low=0.0, high=1.0)  # share of the base round the offset range grows over


class RejectionSFT:
    """Fine-tunes a policy on examples (weighted), base round and later rounds with own budgets."""

    def __init__(self, base_steps: int = BASE_STEPS, steps: int = ROUND_STEPS,
                 batch_size: int = BATCH_SIZE, lr: float = LEARNING_RATE,
                 round_lr: float = ROUND_LEARNING_RATE, warmup: int = 50,
                 weight_decay: float = 0.01, max_seconds: float | None = None,
                 reject_labelled: bool = True, offset_warmup: float = OFFSET_WARMUP,
                 progress: bool = True):
        self.base_steps, self.steps = base_steps, steps
        self.batch_size, self.lr, self.round_lr = batch_size, lr, round_lr
        self.warmup, self.weight_decay, self.max_seconds = warmup, weight_decay, max_seconds
        self.reject_labelled, self.progress = reject_labelled, progress
        self.offset_warmup = offset_warmup

    def optimize(self, policy: Policy, examples: list[Example], *, task, generator, rewarder, rng,
                 workdir: Path, round_index: int = 0) -> OptimizeResult:
        rejected = 0
        if self.reject_labelled:
            examples, rejected = _reject_wrong_labels(examples, task)
        steps = self.base_steps if round_index == 0 else self.steps
        lr = self.lr if round_index == 0 else self.round_lr
        offset_warmup_steps = int(self.offset_warmup * steps) if round_index == 0 else 0
        metrics = train(policy, examples, steps=steps, batch_size=self.batch_size, lr=lr,
                        warmup=self.warmup, weight_decay=self.weight_decay,
                        offset_warmup_steps=offset_warmup_steps,
                        max_seconds=self.max_seconds, seed=rng.randrange(2**31),
                        progress=self.progress, label=f"round {round_index}: optimize")
        metrics["rejected"] = rejected
        return OptimizeResult(policy=policy, metrics=metrics)


def _reject_wrong_labels(examples, task):
    """Drop examples claiming a ground-truth answer (``meta["answer"]``) that the truth refutes.

    The truth comes from the task's optional ``answer_for(prompt)``; a task without it is trusted.
    """
    solve = getattr(task, "answer_for", None)
    if solve is None:
        return examples, 0
    kept = []
    for e in examples:
        if e.meta.get("answer") is not None and e.source != "labelled":
            truth = solve(e.prompt)
            if truth is None or not task.verify(Problem(e.prompt, truth, e.difficulty), e.completion):
                continue
        kept.append(e)
    return kept, len(examples) - len(kept)


def tokenize_examples(tokenizer, examples: list[Example]):
    """Token ids of prompt + completion + EOS, and the number of prompt tokens, per example."""
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + c + [eos], len(p)) for p, c in zip(prompts, completions)]


def train(policy: Policy, examples: list[Example], *, steps: int, batch_size: int, lr: float,
          warmup: int = 50, weight_decay: float = 0.01, max_seconds: float | None = None,
          offset_warmup_steps: int = 0, seed: int = 0, progress: bool = True,
          label: str = "train") -> dict[str, float]:
    """Train for ``steps`` steps (or ``max_seconds``); returns loss, tokens/s and steps done.

    Over the first ``offset_warmup_steps`` steps the range of random position offsets (models with
    abacus positions) grows linearly from 0 to the model's maximum.
    """
    import torch

    examples = [e for e in examples if e.weight > 0]
    if steps <= 0 or not examples:
        return {"steps": 0, "loss": float("nan"), "tokens_per_second": 0.0, "seconds": 0.0}
    buckets: dict[int, list[int]] = defaultdict(list)
    tokenized = tokenize_examples(policy.tokenizer, examples)
    for index, (ids, _) in enumerate(tokenized):
        buckets[len(ids)].append(index)
    lengths = sorted(buckets)
    bucket_weight = [sum(examples[i].weight for i in buckets[n]) for n in lengths]
    # Each bucket as tensors once: ids, and the loss mask (completion tokens only).
    tensors = {}
    for n in lengths:
        ids = torch.tensor([tokenized[i][0] for i in buckets[n]], dtype=torch.long)
        starts = torch.tensor([tokenized[i][1] for i in buckets[n]])
        mask = torch.arange(n)[None, :] >= starts[:, None]
        weights = torch.tensor([examples[i].weight for i in buckets[n]], dtype=torch.float)
        tensors[n] = (ids, mask, weights)

    model = policy.model
    model.train()
    decay = [p for name, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for name, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98),
    )
    rng = random.Random(seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    tokens = 0
    losses = []
    done = 0
    max_offset = getattr(model, "selfloop_max_offset", None)
    try:
        with progress_bar(label, steps, enabled=progress) as advance:
            for step in range(steps):
                if max_offset is not None:
                    model.selfloop_max_offset = (max_offset if step >= offset_warmup_steps else
                                                 max_offset * step // offset_warmup_steps)
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    break
                loss, count = _step(model, optimizer, tensors, lengths, bucket_weight, rng,
                                    batch_size, _schedule(step, steps, warmup, lr))
                tokens += count
                losses.append(loss)
                done += 1
                advance(description=f"{label} loss {loss:.3f}")
    finally:
        if max_offset is not None:
            model.selfloop_max_offset = max_offset
    model.eval()
    seconds = time.perf_counter() - started
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": done, "loss": sum(tail) / len(tail), "tokens_per_second": tokens / seconds,
            "seconds": seconds, "examples": len(examples)}


def _step(model, optimizer, tensors, lengths, bucket_weight, rng, batch_size, lr):
    """One update on a batch drawn from one length bucket; returns the loss and the tokens seen."""
    import torch

    n = rng.choices(lengths, weights=bucket_weight)[0]
    ids, mask, weights = tensors[n]
    pick = torch.multinomial(weights, min(batch_size, len(weights)),
                             replacement=len(weights) < batch_size)
    batch, batch_mask = ids[pick], mask[pick]
    for group in optimizer.param_groups:
        group["lr"] = lr
    logits = model(input_ids=batch).logits[:, :-1]
    targets = batch[:, 1:].masked_fill(~batch_mask[:, 1:], -100)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item(), batch.numel()


def _schedule(step: int, steps: int, warmup: int, lr: float) -> float:
    """Linear warmup, then cosine decay to a tenth of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@hookimpl(trylast=True)
def register_optimizer(register):
    register("rejection_sft", RejectionSFT,
             description="rejection-sampling fine-tuning (ReST-EM M-step), length-bucketed batches")
