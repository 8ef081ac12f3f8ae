"""What the TRL-backed optimizers share: the base round, quiet CPU-friendly trainer arguments."""

from __future__ import annotations

from pathlib import Path


def trainer_args(config_class, workdir: Path, *, steps: int, batch_size: int, lr: float, **extra):
    """A TRL config for a short in-process run: no saving, no reporting, CPU unless a GPU exists."""
    import torch

    return config_class(
        output_dir=str(workdir), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, logging_steps=max(1, steps // 5), save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, disable_tqdm=True,
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
