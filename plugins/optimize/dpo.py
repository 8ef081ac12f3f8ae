"""DPO (Rafailov et al. 2023) with TRL's ``DPOTrainer``: prefer the kept label over a sampled one.

Pairs: for each kept example (up to ``max_pairs``), ``samples`` completions are drawn from the
policy; the example's own completion is *chosen*, the sampled completion the rewarder scores lowest
(and whose answer, as the task extracts it, differs from the label's) is *rejected*. Prompts whose
samples all agree with the label give no pair. Samples are drawn within the task's budget, and
the trainer's ``max_length`` is the longest pair's, so no pair is cut.

Why plain DPO destroyed the model here (``benchmarks/dpo_diagnosis.py``, smoke-sized model, 969
pairs, every chosen right and every rejected wrong, so the direction was never the problem): the
loss only asks for a wider margin, and on pairs that differ in one digit the model widened it by
pushing *both* answers down. 30 steps at lr 5e-5 took the chosen log-likelihood from -0.49 to
-1.95 (rejected -2.37 to -5.1) and exact match at 1-5 digits from 90/91/87/86/46 to
28/10/1/0/0; beta 0.5 kept 57/65/62/44/33, lr 5e-6 did no harm and no good. The fix is RPO's
(Pang et al. 2024): add the chosen answer's negative log-likelihood (``sft_weight``; TRL's
``loss_type=["sigmoid", "sft"]``), which keeps the chosen answer's likelihood where it was and
lets the margin grow on the rejected side only. Also fixed: the policy trains at the inference
position offset, where the reference sits (``fixed_positions``), and the model's ``use_cache`` is
restored after TRL (see ``_trl_common``).
"""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import OptimizeResult, Problem, within_budget

from ..refine.answers import example_budget, extractor
from ._trl_common import preference_step, train_base_round


class DPO:
    """DPO steps on preference pairs built from the kept examples (with RPO's NLL term)."""

    def __init__(self, steps: int = 100, batch_size: int = 16, lr: float = 5e-5, beta: float = 0.1,
                 samples: int = 4, temperature: float = 1.0, max_pairs: int = 2000,
                 sft_weight: float = 1.0, fixed_positions: bool = True,
                 base_options: dict | None = None):
        self.base_options = dict(base_options or {})  # rejection_sft's options for round 0
        self.steps, self.batch_size, self.lr, self.beta = steps, batch_size, lr, beta
        self.samples, self.temperature, self.max_pairs = samples, temperature, max_pairs
        self.sft_weight, self.fixed_positions = sft_weight, fixed_positions

    def pairs(self, policy, examples, *, task, generator, rewarder, seed):
        examples = examples[-self.max_pairs:]
        if not examples:
            return []
        sampled = generator.generate(policy, [e.prompt for e in examples], n=self.samples,
                                     temperature=self.temperature,
                                     max_new_tokens=example_budget(examples, task), seed=seed)
        problems = [Problem(e.prompt, e.meta.get("answer"), e.difficulty) for e in examples]
        groups = [[s.strip() for s in group] for group in sampled]
        scores = rewarder.reward(problems, groups, task=task)
        extract = extractor(task)
        rows = []
        for example, group, score in zip(examples, groups, scores):
            label = extract(example.completion)
            wrong = [(s, c) for s, c in zip(score, group) if extract(c) != label]
            if wrong:
                rejected = min(wrong)[1]
                rows.append({"prompt": example.prompt, "chosen": example.completion,
                             "rejected": rejected})
        return rows

    def optimize(self, policy, examples, *, task, generator, rewarder, rng, workdir,
                 round_index=0, budget=None):
        if round_index == 0:
            return train_base_round(self.base_options, policy, examples, task=task,
                                    generator=generator, rewarder=rewarder, rng=rng, workdir=workdir)
        rows = self.pairs(policy, examples, task=task, generator=generator, rewarder=rewarder,
                          seed=rng.randrange(2**31))
        if not rows:
            return OptimizeResult(policy, {"steps": 0.0, "pairs": 0.0})
        metrics = preference_step(policy, rows, workdir=workdir,
                                  steps=within_budget(self.steps, budget, "max_steps"),
                                  batch_size=self.batch_size, lr=self.lr, beta=self.beta,
                                  sft_weight=self.sft_weight, fixed_positions=self.fixed_positions,
                                  max_length=pair_length(policy.tokenizer, rows))
        return OptimizeResult(policy, {**metrics, "pairs": float(len(rows))})


def pair_length(tokenizer, rows) -> int:
    """Tokens of the longest prompt + completion of ``rows`` (and two for BOS and EOS)."""
    def count(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    prompts = count([r["prompt"] for r in rows])
    chosen, rejected = count([r["chosen"] for r in rows]), count([r["rejected"] for r in rows])
    return max(len(p) + max(len(c), len(r)) for p, c, r in zip(prompts, chosen, rejected)) + 2


@hookimpl(trylast=True)
def register_optimizer(register):
    register("dpo", DPO, description="TRL DPOTrainer (+ RPO's NLL on chosen): kept label preferred "
                                     "over a sampled answer")
