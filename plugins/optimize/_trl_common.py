"""What the TRL-backed optimizers share: the base round, quiet trainer arguments (on the model's
device), and the preference step DPO and SPIN both run.

Two things every TRL run here guards against (measured on the smoke-sized model, see
``benchmarks/dpo_diagnosis.py``):

- TRL leaves ``config.use_cache = False`` on the model it trained (and saves it so). A model with
  abacus positions then breaks in every later forward without an attention mask or cache (the
  embedded SFT loop, confidence scores): transformers reads position ids that restart at every
  non-digit as *packed sequences* and lets each token attend only inside its own number.
  ``trained_in_place`` restores the setting.
- In train mode the abacus hook draws a random position offset per sequence, in eval mode it uses
  the inference offset. A preference loss then compares the policy's chosen and rejected at two
  unrelated offsets, and both against a reference at a third: ``fixed_positions`` (default on)
  trains at the inference offset, where the policy is evaluated and the reference sits.
- transformers 5's ``generate()`` hands the KV cache to the model as ``cache=``, and the abacus
  hook (``selfloop.plugins.model.abacus``) looks for ``past_key_values``: it takes every decoding
  step for a new sequence and restarts the positions, so TRL's GRPO sampled garbage ("977878" for
  "970"; the embedded generator passes ``past_key_values`` and was never affected).
  ``trained_in_place`` puts a pre-hook in front that passes the cache under the name the hook reads.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

from selfloop.core.models import completion_logprobs, model_device


def trainer_args(config_class, workdir: Path, *, steps: int, batch_size: int, lr: float,
                 model=None, **extra):
    """A TRL config for a short in-process run: no saving, no reporting, on the CPU when ``model``
    is there (without a model: when no GPU exists), else on the GPU."""
    import torch

    on_cpu = model_device(model).type == "cpu" if model is not None else not torch.cuda.is_available()
    return config_class(
        output_dir=str(workdir), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, logging_steps=max(1, steps // 5), save_strategy="no", report_to="none",
        use_cpu=on_cpu, bf16=False, fp16=False, disable_tqdm=True,
        gradient_checkpointing=False,  # a small model: recomputing activations only costs time
        dataloader_num_workers=0, seed=0, **extra,
    )


def log_metrics(trainer) -> dict[str, float]:
    """The last logged value of each numeric metric of a finished trainer."""
    out: dict[str, float] = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if isinstance(value, (int, float)):
                out[key] = float(value)
    out["steps"] = float(trainer.state.global_step)
    return out


def quiet(trainer):
    """Drop the trainer's stdout printer (metrics go to the round report instead)."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def train_base_round(base_options: dict, policy, examples, **kwargs):
    """Round 0 has nothing to prefer between yet: the base model learns by rejection SFT."""
    from .rejection_sft import RejectionSFT

    return RejectionSFT(**base_options).optimize(policy, examples, round_index=0, **kwargs)


@contextmanager
def trained_in_place(model, *, fixed_positions: bool = True):
    """Around a TRL run on ``model``: positions at the inference offset (``fixed_positions``), and
    afterwards the model's ``use_cache`` as it was and eval mode."""
    use_cache = getattr(model.config, "use_cache", True)
    max_offset = getattr(model, "selfloop_max_offset", None)
    if fixed_positions and max_offset is not None:
        model.selfloop_max_offset = 0  # the hook then uses the inference offset in train mode too
    alias = model.register_forward_pre_hook(_cache_alias, with_kwargs=True, prepend=True)
    try:
        yield model
    finally:
        alias.remove()
        model.config.use_cache = use_cache
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.use_cache = use_cache
        if max_offset is not None:
            model.selfloop_max_offset = max_offset
        model.eval()


def _cache_alias(module, args, kwargs):
    """``cache=`` (transformers 5's ``generate``) passed on as ``past_key_values=``."""
    if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
        kwargs = dict(kwargs)
        kwargs["past_key_values"] = kwargs.pop("cache")
        return args, kwargs
    return None


def preference_step(policy, rows, *, workdir: Path, steps: int, batch_size: int, lr: float,
                    beta: float, sft_weight: float, fixed_positions: bool = True,
                    reference=None, max_length: int = 128) -> dict[str, float]:
    """TRL's DPOTrainer on ``rows`` (``prompt``/``chosen``/``rejected``), the policy in place.

    ``sft_weight`` > 0 adds the negative log-likelihood of the chosen completion (RPO, Pang et al.
    2024: TRL's ``loss_type=["sigmoid", "sft"]``): without it the margin grows by pushing *both*
    sides down, and the model loses the answers it had. ``reference`` defaults to a frozen copy of
    the policy as it is now.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float(sft_weight)]} \
        if sft_weight > 0 else {"loss_type": ["sigmoid"]}
    args = trainer_args(DPOConfig, workdir, steps=steps, batch_size=batch_size, lr=lr, beta=beta,
                        max_length=max_length, model=policy.model, **losses)
    reference = copy.deepcopy(policy.model) if reference is None else reference
    reference.eval()
    with trained_in_place(policy.model, fixed_positions=fixed_positions):
        trainer = DPOTrainer(model=policy.model, ref_model=reference, args=args,
                             train_dataset=Dataset.from_list(rows),
                             processing_class=policy.tokenizer)
        quiet(trainer).train()
    return log_metrics(trainer)


def sequence_logps(policy, rows, key: str, batch_size: int = 256) -> list[float]:
    """log p(row[key] + EOS | row["prompt"]) under the policy, for each row (eval mode)."""
    tok = policy.tokenizer
    prompts = tok([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
    answers = tok([r[key] for r in rows], add_special_tokens=False)["input_ids"]
    return [sum(row) for row in completion_logprobs(
        policy, prompts, [a + [tok.eos_token_id] for a in answers], batch_size=batch_size)]
