"""SPIN, Self-Play Fine-Tuning (Chen et al. 2024), with TRL's ``DPOTrainer`` underneath.

The model learns to tell the target answers from its previous iteration's own: each iteration
freezes the current policy as the *opponent*, samples the opponent's answer to every target
prompt, and trains the policy with the DPO-style logistic loss, the target as *chosen*, the
opponent's answer as *rejected*, the opponent also the reference. ``iterations`` such steps per
round share the round's ``steps``; across rounds the previous round's checkpoint is the first
opponent, so SPIN iterates over rounds too.

The targets (``targets``): ``"labelled"`` uses the examples with a ground-truth answer
(``source == "labelled"`` or ``meta["answer"]``), as in the paper; ``"kept"`` uses every example
the selectors kept (the round's trusted self-labels as well). A prompt whose sampled answer equals
the target gives no pair (its DPO gradient is zero).

As with ``dpo``, ``sft_weight`` adds the chosen answer's negative log-likelihood (RPO): SPIN's loss
alone pushed both sides down on this model (see ``dpo.py``); ``sft_weight = 0`` is the paper's
loss. Works with any Hugging Face causal LM (the model provider's or the embedded one).
"""

from __future__ import annotations

import copy

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import OptimizeResult, within_budget

from ..refine.answers import example_budget
from ._trl_common import preference_step, train_base_round
from .dpo import pair_length


class SPIN:
    """``iterations`` self-play steps per round: target preferred over the opponent's answer."""

    def __init__(self, iterations: int = 1, steps: int = 100, batch_size: int = 16,
                 lr: float = 5e-5, beta: float = 0.1, sft_weight: float = 1.0,
                 temperature: float = 1.0, targets: str = "kept", max_prompts: int = 2000,
                 fixed_positions: bool = True, base_options: dict | None = None):
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        if targets not in ("kept", "labelled"):
            raise ValueError(f"targets must be 'kept' or 'labelled', got {targets!r}")
        self.iterations, self.steps, self.batch_size, self.lr = iterations, steps, batch_size, lr
        self.beta, self.sft_weight, self.temperature = beta, sft_weight, temperature
        self.targets, self.max_prompts, self.fixed_positions = targets, max_prompts, fixed_positions
        self.base_options = dict(base_options or {})  # rejection_sft's options for round 0

    def target_examples(self, examples):
        if self.targets == "labelled":
            examples = [e for e in examples
                        if e.source == "labelled" or e.meta.get("answer") is not None]
        return examples[-self.max_prompts:]

    def pairs(self, opponent, examples, *, generator, seed, task=None) -> list[dict[str, str]]:
        """The targets as chosen, the opponent's sampled answers (where they differ) as rejected;
        sampled within the task's budget."""
        examples = self.target_examples(examples)
        if not examples:
            return []
        sampled = generator.generate(opponent, [e.prompt for e in examples], n=1,
                                     temperature=self.temperature,
                                     max_new_tokens=example_budget(examples, task), seed=seed)
        return [{"prompt": e.prompt, "chosen": e.completion, "rejected": group[0].strip()}
                for e, group in zip(examples, sampled) if group[0].strip() != e.completion]

    def optimize(self, policy, examples, *, task, generator, rewarder, rng, workdir,
                 round_index=0, budget=None):
        if round_index == 0:
            return train_base_round(self.base_options, policy, examples, task=task,
                                    generator=generator, rewarder=rewarder, rng=rng, workdir=workdir)
        metrics: dict[str, float] = {"steps": 0.0, "pairs": 0.0}
        per_iteration = max(1, within_budget(self.steps, budget, "max_steps") // self.iterations)
        for iteration in range(self.iterations):
            opponent = copy.copy(policy)  # the previous iterate: frozen weights, same tokenizer
            opponent.model = copy.deepcopy(policy.model).eval()
            opponent.peers = []
            rows = self.pairs(opponent, examples, generator=generator, seed=rng.randrange(2**31),
                              task=task)
            metrics[f"pairs_{iteration}"] = float(len(rows))
            if not rows:
                break
            step = preference_step(policy, rows, workdir=workdir / f"spin_{iteration}",
                                   steps=per_iteration, batch_size=self.batch_size, lr=self.lr,
                                   beta=self.beta, sft_weight=self.sft_weight,
                                   fixed_positions=self.fixed_positions, reference=opponent.model,
                                   max_length=pair_length(policy.tokenizer, rows))
            metrics.update({k: v for k, v in step.items() if k != "steps"})
            metrics["steps"] += step.get("steps", 0.0)
            metrics["pairs"] += len(rows)
        metrics["iterations"] = float(self.iterations)
        return OptimizeResult(policy, metrics)


@hookimpl(trylast=True)
def register_optimizer(register):
    register("spin", SPIN, description="SPIN self-play fine-tuning (TRL DPOTrainer): target "
                                        "answers preferred over the previous iterate's own")
