"""Rejection-sampling fine-tuning (STaR / ReST-EM), the embedded optimizer.

The E-step of ReST-EM (sample, score, keep what the reward accepts) is the round's acquire and
select stages; this is the M-step: fine-tune on the kept examples with the usual next-token loss on
the completion only. It reads like nanoGPT's loop: sample a batch, forward, backward, step.

Batches (``batching``):
- ``"length"``: examples are bucketed by token length and every batch is drawn from one bucket, so
  no batch carries padding; a bucket is picked with probability proportional to its examples'
  total weight, then examples by weight within it. Fast on a CPU, and right when buckets are big
  (the embedded char model: a difficulty's sequences all have one length).
- ``"padded"``: examples are drawn by weight from all of them and right-padded, with an attention
  mask, the loss on completion tokens only (prompt and padding masked). For a BPE model, whose
  prompts and answers have all kinds of lengths, one-length buckets are tiny and a batch would
  repeat a few examples.
- ``"auto"`` (default): ``"length"`` when a drawn bucket holds on average at least a batch of
  examples, else ``"padded"``.

A sequence is the prompt's tokens, the completion's and the tokenizer's EOS, encoded without the
tokenizer's special tokens, as the generators encode prompts (a BOS a chat template writes is part
of the prompt text). The learning rates suit the embedded model trained from scratch; a pretrained
model wants far smaller ones (about 1e-5).

Before an update, examples that claim a ground-truth answer (``meta["answer"]``, e.g. an LLM's
problems) are checked against the task's own answer when the task can compute one
(``answer_for(prompt)``, optional), and dropped when wrong: the rejection step for labels of
doubtful origin. A task without ``answer_for`` is trusted.

``compile`` (default ``"auto"``): the forward and the loss run under ``torch.compile`` (dynamic
shapes, so the buckets' lengths share one graph; the backward is compiled with them), when the
budget is at least ``COMPILE_MIN_STEPS`` steps: compiling costs about 25-45 s once per process and
model (less with inductor's on-disk cache), and fusing the model's small element-wise operations
saves about a third of a step on the embedded model (``benchmarks/lifecycle_training_throughput.py``).
``True`` compiles for any budget, ``False`` never. A failing compile (no C compiler, say) warns once
and the step is redone eagerly; data-parallel training stays eager. Only a function is compiled:
``policy.model`` stays the plain model, so it saves, loads and generates as before.

``processes = N`` (> 1) trains data-parallel: the round's policy and examples are saved, this file
is launched N times by ``torch.distributed.run`` (DDP through accelerate; gloo on a CPU, NCCL on
GPUs, one GPU per process), rank 0 saves the result and the weights are loaded back in place. The
rest of the round stays in this one process, so nothing else writes twice.
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from collections import defaultdict
from pathlib import Path

from selfloop.core.hookspecs import hookimpl
from selfloop.core.progress import progress_bar
from selfloop.core.tasks import task_view
from selfloop.core.tunable import tunable
from selfloop.core.types import Example, OptimizeResult, Policy, Problem, within_budget

BASE_STEPS = tunable(2000, low=0, high=100000)
STEPS = tunable(500, low=0, high=100000)
BATCH_SIZE = tunable(64, low=4, high=1024)
LR = tunable(1e-3, low=1e-5, high=1e-2)
ROUND_LR = tunable(5e-4, low=1e-5, high=1e-2)
OFFSET_WARMUP = tunable(0.4, low=0.0, high=1.0)  # share of the base round the offset range grows over
BATCHING = ("auto", "length", "padded")
COMPILE_MIN_STEPS = 300  # "auto" compiles from this budget on: below it the compile costs more than it saves


class RejectionSFT:
    """Fine-tunes a policy on examples (weighted), base round and later rounds with own budgets."""

    def __init__(self, base_steps: int = BASE_STEPS, steps: int = STEPS,
                 batch_size: int = BATCH_SIZE, lr: float = LR,
                 round_lr: float = ROUND_LR, warmup: int = 50,
                 weight_decay: float = 0.01, max_seconds: float | None = None,
                 reject_labelled: bool = True, offset_warmup: float = OFFSET_WARMUP,
                 batching: str = "auto", progress: bool = True, processes: int = 1,
                 compile: bool | str = "auto"):
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.processes = processes
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
        self.base_steps, self.steps = base_steps, steps
        self.batch_size, self.lr, self.round_lr = batch_size, lr, round_lr
        self.warmup, self.weight_decay, self.max_seconds = warmup, weight_decay, max_seconds
        self.reject_labelled, self.progress = reject_labelled, progress
        self.offset_warmup, self.batching = offset_warmup, batching
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be true, false or \"auto\", got {compile!r}")
        self.compile = compile

    def optimize(self, policy: Policy, examples: list[Example], *, task, generator, rewarder, rng,
                 workdir: Path, round_index: int = 0, budget: dict | None = None) -> OptimizeResult:
        rejected = 0
        if self.reject_labelled:
            examples, rejected = _reject_wrong_labels(examples, task)
        steps = self.base_steps if round_index == 0 else self.steps
        steps = within_budget(steps, budget, "max_steps")
        lr = self.lr if round_index == 0 else self.round_lr
        offset_warmup_steps = int(self.offset_warmup * steps) if round_index == 0 else 0
        settings = {"steps": steps, "batch_size": self.batch_size, "lr": lr, "warmup": self.warmup,
                    "weight_decay": self.weight_decay, "offset_warmup_steps": offset_warmup_steps,
                    "batching": self.batching, "max_seconds": self.max_seconds, "seed": rng.randrange(2**31),
                    "progress": self.progress, "compile": self.compile,
                    "label": f"round {round_index}: optimize"}
        if self.processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            metrics = train_launched(policy, examples, processes=self.processes, workdir=workdir, **settings)
        else:
            metrics = train(policy, examples, **settings)
        metrics["rejected"] = rejected
        return OptimizeResult(policy=policy, metrics=metrics)


def train_launched(policy: Policy, examples: list[Example], *, processes: int, workdir: Path,
                   **settings) -> dict[str, float]:
    """``train`` in ``processes`` processes started by torchrun; the weights come back in place."""
    import json
    import subprocess
    import sys

    import torch
    from selfloop.core.errors import SelfloopError
    from selfloop.core.models import load_policy, save_policy
    from selfloop.core.rundir import save_examples

    job_dir = Path(workdir) / "data_parallel"
    job_dir.mkdir(parents=True, exist_ok=True)
    job = {"model": str(save_policy(policy, job_dir / "model_in")), "examples": str(job_dir / "examples.jsonl"),
           "out": str(job_dir / "model_out"), "metrics": str(job_dir / "metrics.json"), "settings": settings}
    save_examples(examples, Path(job["examples"]))
    (job_dir / "job.json").write_text(json.dumps(job))
    threads = max(1, torch.get_num_threads() // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    # This file, not its installed module: an evolved variant of it trains with its own code.
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", str(processes), __file__, str(job_dir / "job.json")],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SelfloopError(f"data-parallel training ({processes} processes) failed: {tail[0][:300]}")
    trained = load_policy(job["out"])
    policy.model.load_state_dict(trained.model.state_dict())
    return {**json.loads(Path(job["metrics"]).read_text()), "processes": float(processes)}


def _launched_worker(job_path: str) -> None:
    """One rank of ``train_launched``: load, train data-parallel, rank 0 saves."""
    import json

    import torch
    from selfloop.core.models import load_policy, save_policy
    from selfloop.core.rundir import load_examples

    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    policy = load_policy(job["model"])
    rank = int(os.environ.get("RANK", "0"))
    settings = {**job["settings"], "progress": job["settings"]["progress"] and rank == 0}
    metrics = train(policy, load_examples(Path(job["examples"])), **settings)
    if rank == 0:
        save_policy(policy, job["out"])
        Path(job["metrics"]).write_text(json.dumps(metrics))


def _reject_wrong_labels(examples, task):
    """Drop examples claiming a ground-truth answer (``meta["answer"]``) that the truth refutes.

    The truth comes from the task's optional ``answer_for(prompt)``; a task without it is trusted.
    The claims are verified in one batch.
    """
    solve = getattr(task, "answer_for", None)
    if not callable(solve):
        return examples, 0
    claims = [i for i, e in enumerate(examples)
              if e.meta.get("answer") is not None and e.source != "labelled"]
    truths = {i: solve(examples[i].prompt) for i in claims}
    checked = [i for i in claims if truths[i] is not None]
    verdicts = dict(zip(checked, task_view(task).verify_many(
        [Problem(examples[i].prompt, truths[i], examples[i].difficulty) for i in checked],
        [examples[i].completion for i in checked])))
    wrong = {i for i in claims if not verdicts.get(i, False)}
    return [e for i, e in enumerate(examples) if i not in wrong], len(wrong)


def tokenize_examples(tokenizer, examples: list[Example]):
    """Token ids of prompt + completion + EOS, and the number of prompt tokens, per example.

    No special tokens are added (the generators encode prompts so too); the EOS is appended.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: a completion would never learn to end")
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    return [(p + c + [eos], len(p)) for p, c in zip(prompts, completions)]


def train(policy: Policy, examples: list[Example], *, steps: int, batch_size: int, lr: float,
          warmup: int = 50, weight_decay: float = 0.01, max_seconds: float | None = None,
          offset_warmup_steps: int = 0, batching: str = "auto", seed: int = 0,
          progress: bool = True, label: str = "train", accelerator=None,
          compile: bool | str = False) -> dict[str, float]:
    """Train for ``steps`` steps (or ``max_seconds``); returns loss, tokens/s and steps done.

    ``compile``: True, False or ``"auto"`` (``COMPILE_MIN_STEPS`` steps or more), as the module
    docstring says; never under data-parallel training. ``compile_seconds`` in the result is the
    time of the first compiled step (it compiles), counted in ``seconds`` too.

    Over the first ``offset_warmup_steps`` steps the range of random position offsets (models with
    abacus positions) grows linearly from 0 to the model's maximum.

    Data-parallel: launched by ``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu
    --num_processes N`` (``WORLD_SIZE`` > 1; on a CPU too, where accelerate's ``--cpu`` starts one
    process unless MPI is set up), or given an ``accelerator``, it trains through HF accelerate
    (DDP; gloo on a CPU). Each of the N processes draws ``batch_size / N`` examples of its own per
    step, so a step still learns from ``batch_size`` examples; the gradients are averaged and every
    rank ends with the same weights in ``policy.model``. The caller writes checkpoints from the main
    process only (``is_main_process``). A single process without a launcher never imports accelerate.
    """
    import torch

    examples = [e for e in examples if e.weight > 0]
    if steps <= 0 or not examples:
        return {"steps": 0, "loss": float("nan"), "tokens_per_second": 0.0, "seconds": 0.0}
    if accelerator is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=next(policy.model.parameters()).device.type == "cpu")
    ranks, rank = (1, 0) if accelerator is None else (accelerator.num_processes, accelerator.process_index)
    model = policy.model
    if accelerator is not None:
        model.to(accelerator.device)
    device = next(model.parameters()).device
    tokenized = tokenize_examples(policy.tokenizer, examples)
    weights = [e.weight for e in examples]
    batches = LengthBuckets(tokenized, weights)
    if batching == "padded" or (batching == "auto" and batches.mean_bucket_size() < batch_size):
        pad = policy.tokenizer.pad_token_id
        batches = PaddedBatches(tokenized, weights, policy.tokenizer.eos_token_id if pad is None else pad)
        batching = "padded"
    else:
        batching = "length"

    model.train()
    decay = [p for name, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for name, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98),
        # One fused kernel for all parameters instead of a dozen passes over them (CPU and CUDA).
        fused=device.type in ("cpu", "cuda"),
    )
    forward, backward = model, torch.Tensor.backward
    if accelerator is not None:
        forward, optimizer = accelerator.prepare(model, optimizer)  # DDP: forward syncs gradients
        backward = accelerator.backward
    loss_of = completion_loss
    if accelerator is None and (compile is True or (compile == "auto" and steps >= COMPILE_MIN_STEPS)):
        loss_of = _compiled(completion_loss)
    # Rank 0 draws what a single process draws; other ranks draw other examples and offsets.
    rng = random.Random(seed + 7919 * rank)
    torch.manual_seed(seed + 7919 * rank)
    local_batch = max(1, batch_size // ranks)
    started = time.perf_counter()
    tokens = 0
    losses = []
    done = 0
    compile_seconds = 0.0
    max_offset = getattr(model, "selfloop_max_offset", None)
    try:
        with progress_bar(label, steps, enabled=progress and rank == 0) as advance:
            for step in range(steps):
                if max_offset is not None:
                    model.selfloop_max_offset = (max_offset if step >= offset_warmup_steps else
                                                 max_offset * step // offset_warmup_steps)
                if _out_of_time(started, max_seconds, accelerator):
                    break
                began = time.perf_counter()
                loss, count = _step(loss_of, forward, backward, optimizer, batches.draw(rng, local_batch, device),
                                    _schedule(step, steps, warmup, lr))
                if step == 0 and loss_of is not completion_loss:
                    compile_seconds = time.perf_counter() - began  # the first call compiles
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
    loss = sum(tail) / len(tail)
    if accelerator is not None:  # all ranks' tokens, their mean loss
        total = accelerator.reduce(torch.tensor([float(tokens), loss], device=device), "sum")
        tokens, loss = total[0].item(), total[1].item() / ranks
        accelerator.free_memory()  # drop accelerate's references to the DDP wrapper and optimizer
    return {"steps": done, "loss": loss, "tokens_per_second": tokens / seconds,
            "seconds": seconds, "examples": len(examples), "padded_batches": float(batching == "padded"),
            "compile_seconds": compile_seconds}


def _out_of_time(started, max_seconds, accelerator) -> bool:
    """Whether ``max_seconds`` have passed; under DDP rank 0's clock decides for all ranks (a rank
    that stopped alone would leave the others waiting for its gradients)."""
    if max_seconds is None:
        return False
    over = time.perf_counter() - started > max_seconds
    if accelerator is None:
        return over
    import torch

    flag = torch.tensor([float(over and accelerator.is_main_process)], device=accelerator.device)
    return accelerator.reduce(flag, "sum").item() > 0


class LengthBuckets:
    """Batches of one token length each: a bucket by its total weight, then examples by weight."""

    def __init__(self, tokenized: list[tuple[list[int], int]], weights: list[float]):
        import torch

        buckets: dict[int, list[int]] = defaultdict(list)
        for index, (ids, _) in enumerate(tokenized):
            buckets[len(ids)].append(index)
        self.lengths = sorted(buckets)
        self.bucket_weight = [sum(weights[i] for i in buckets[n]) for n in self.lengths]
        self.sizes = [len(buckets[n]) for n in self.lengths]
        # Each bucket as tensors once: ids, and the loss mask (completion tokens only).
        self.tensors = {}
        for n in self.lengths:
            ids = torch.tensor([tokenized[i][0] for i in buckets[n]], dtype=torch.long)
            starts = torch.tensor([tokenized[i][1] for i in buckets[n]])
            mask = torch.arange(n)[None, :] >= starts[:, None]
            self.tensors[n] = (ids, mask, torch.tensor([weights[i] for i in buckets[n]],
                                                       dtype=torch.float))

    def mean_bucket_size(self) -> float:
        """The expected number of examples in the bucket a batch is drawn from."""
        return sum(w * n for w, n in zip(self.bucket_weight, self.sizes)) / sum(self.bucket_weight)

    def draw(self, rng, batch_size, device):
        import torch

        n = rng.choices(self.lengths, weights=self.bucket_weight)[0]
        ids, mask, weights = self.tensors[n]
        pick = torch.multinomial(weights, min(batch_size, len(weights)),
                                 replacement=len(weights) < batch_size)
        return ids[pick].to(device), mask[pick].to(device), None


class PaddedBatches:
    """Batches drawn by weight from every example, right-padded to the batch's longest sequence:
    an attention mask over the real tokens, the loss on completion tokens only."""

    def __init__(self, tokenized: list[tuple[list[int], int]], weights: list[float], pad_id: int):
        import torch

        self.tokenized, self.pad_id = tokenized, pad_id
        self.weights = torch.tensor(weights, dtype=torch.float)

    def draw(self, rng, batch_size, device):
        import torch

        count = len(self.tokenized)
        pick = torch.multinomial(self.weights, min(batch_size, count), replacement=count < batch_size)
        rows = [self.tokenized[i] for i in pick.tolist()]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, (seq, start) in enumerate(rows):
            ids[r, :len(seq)] = torch.tensor(seq)
            attention[r, :len(seq)] = 1
            loss_mask[r, start:len(seq)] = True
        return ids.to(device), loss_mask.to(device), attention.to(device)


def completion_loss(forward, ids, loss_mask, attention):
    """The mean next-token loss on completion tokens (``loss_mask``) of a batch; ``forward`` is
    the model or its DDP wrapper, ``attention`` the padding mask or None."""
    import torch

    inputs = {"input_ids": ids} if attention is None else {"input_ids": ids, "attention_mask": attention}
    logits = forward(**inputs).logits[:, :-1]
    targets = ids[:, 1:].masked_fill(~loss_mask[:, 1:], -100)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def _step(loss_of, forward, backward, optimizer, batch, lr):
    """One update on a batch (ids, loss mask, attention mask or None); returns the loss and the
    tokens seen. ``loss_of`` is ``completion_loss`` or its compiled form, ``forward`` the model or
    its DDP wrapper, ``backward(loss)`` accelerate's or torch's."""
    import torch

    ids, loss_mask, attention = batch
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = loss_of(forward, ids, loss_mask, attention)
    optimizer.zero_grad(set_to_none=True)
    backward(loss)
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], 1.0)
    optimizer.step()
    return loss.item(), int(ids.numel() if attention is None else attention.sum())


def _compiled(function):
    """``function`` under ``torch.compile`` with dynamic shapes (one graph for every bucket length),
    or, once compiling fails (no C compiler, say), ``function`` itself, after a warning."""
    import torch

    compiled = torch.compile(function, dynamic=True)

    def call(*args):
        nonlocal compiled
        if compiled is not None:
            try:
                return compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as error:
                warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                              "training without it", RuntimeWarning, stacklevel=2)
                compiled = None
        return function(*args)

    return call


def _schedule(step: int, steps: int, warmup: int, lr: float) -> float:
    """Linear warmup, then cosine decay to a tenth of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@hookimpl(trylast=True)
def register_optimizer(register):
    register("rejection_sft", RejectionSFT,
             description="rejection-sampling fine-tuning (ReST-EM M-step), length-bucketed or "
                         "padded batches")


if __name__ == "__main__":  # a rank started by train_launched
    import sys

    _launched_worker(sys.argv[1])
