"""DPO (Rafailov et al. 2023) with TRL's ``DPOTrainer``: prefer the kept label over a sampled one.

Pairs: for each kept example (up to ``max_pairs``), ``samples`` completions are drawn from the
policy; the example's own completion is *chosen*, the sampled completion the rewarder scores lowest
(and that differs from it) is *rejected*. Prompts whose samples all agree with the label give no
pair.
"""

from __future__ import annotations

import copy

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import OptimizeResult, Problem

from ._trl_common import log_metrics, quiet, train_base_round, trainer_args


class DPO:
    """A few hundred DPO steps on preference pairs built from the kept examples."""

    def __init__(self, steps: int = 100, batch_size: int = 16, lr: float = 5e-5, beta: float = 0.1,
                 samples: int = 4, temperature: float = 1.0, max_pairs: int = 2000,
                 base_options: dict | None = None):
        self.base_options = dict(base_options or {})  # rejection_sft's options for round 0
        self.steps, self.batch_size, self.lr, self.beta = steps, batch_size, lr, beta
        self.samples, self.temperature, self.max_pairs = samples, temperature, max_pairs

    def pairs(self, policy, examples, *, task, generator, rewarder, seed):
        examples = examples[-self.max_pairs:]
        budget = max(e.difficulty for e in examples) + 3
        sampled = generator.generate(policy, [e.prompt for e in examples], n=self.samples,
                                     temperature=self.temperature, max_new_tokens=budget, seed=seed)
        problems = [Problem(e.prompt, e.meta.get("answer"), e.difficulty) for e in examples]
        groups = [[s.strip() for s in group] for group in sampled]
        scores = rewarder.reward(problems, groups, task=task)
        rows = []
        for example, group, score in zip(examples, groups, scores):
            wrong = [(s, c) for s, c in zip(score, group) if c != example.completion]
            if wrong:
                rejected = min(wrong)[1]
                rows.append({"prompt": example.prompt, "chosen": example.completion,
                             "rejected": rejected})
        return rows

    def optimize(self, policy, examples, *, task, generator, rewarder, rng, workdir,
                 round_index=0):
        if round_index == 0:
            return train_base_round(self.base_options, policy, examples, task=task,
                                    generator=generator, rewarder=rewarder, rng=rng, workdir=workdir)
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        rows = self.pairs(policy, examples, task=task, generator=generator, rewarder=rewarder,
                          seed=rng.randrange(2**31))
        if not rows:
            return OptimizeResult(policy, {"steps": 0.0, "pairs": 0.0})
        args = trainer_args(DPOConfig, workdir, steps=self.steps, batch_size=self.batch_size,
                            lr=self.lr, beta=self.beta, max_length=128)
        reference = copy.deepcopy(policy.model).eval()  # the frozen reference policy
        trainer = DPOTrainer(model=policy.model, ref_model=reference, args=args,
                             train_dataset=Dataset.from_list(rows), processing_class=policy.tokenizer)
        quiet(trainer).train()
        policy.model.eval()
        return OptimizeResult(policy, {**log_metrics(trainer), "pairs": float(len(rows))})


@hookimpl(trylast=True)
def register_optimizer(register):
    register("dpo", DPO, description="TRL DPOTrainer: kept label preferred over a sampled answer")
