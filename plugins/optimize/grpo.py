"""GRPO (Shao et al. 2024) with TRL's ``GRPOTrainer``; the configured rewarder is the reward.

The prompts of the kept examples are the training prompts; each gets ``generations`` sampled
completions per step, scored by the run's rewarder (wrapped as a TRL reward function: TRL passes
a flat list, grouped here by prompt), with the example's label as the problem's answer when it has
a ground-truth one. Completions are as long as the task's budget allows (``max_new_tokens``).

Rollouts come from vLLM when ``vllm`` says so (TRL's ``use_vllm``): ``"colocate"`` runs vLLM in
the trainer's own processes on their GPUs; ``"server"`` asks a ``trl vllm-serve`` server at
``vllm_server`` (``http://HOST:PORT``); ``"auto"`` (the default) is colocate when vLLM is installed
and torch sees a GPU, else the trainer's own ``generate``. Under ``accelerate launch`` the trainer
is data-parallel over the launched processes, as every TRL trainer is.
"""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import OptimizeResult, Problem, within_budget

from ..refine.answers import example_budget, extractor
from ._trl_common import (
    log_metrics,
    quiet,
    train_base_round,
    trained_in_place,
    trainer_args,
)


def reward_function(rewarder, task, difficulty_of, target_weight: float = 0.0):
    """The rewarder as a TRL reward function ``f(prompts, completions, **columns) -> floats``;
    ``target_weight`` is added where a completion's answer is its row's ``target``'s (the kept
    label's, as the task extracts answers)."""
    extract = extractor(task)

    def rewards(prompts, completions, answer=None, target=None, **_):
        answers = answer or [None] * len(prompts)
        groups: list[tuple[str, str | None, list[int]]] = []
        for i, prompt in enumerate(prompts):
            if groups and groups[-1][0] == prompt:
                groups[-1][2].append(i)
            else:
                groups.append((prompt, answers[i], [i]))
        problems = [Problem(p, a, difficulty_of(p)) for p, a, _ in groups]
        texts = [[str(completions[i]).strip() for i in idx] for _, _, idx in groups]
        scores = rewarder.reward(problems, texts, task=task)
        flat = [0.0] * len(prompts)
        for (_, _, idx), group_scores in zip(groups, scores):
            for i, s in zip(idx, group_scores):
                flat[i] = float(s)
        if target_weight and target is not None:
            for i, completion in enumerate(completions):
                if target[i] is not None and extract(str(completion)) == extract(target[i]):
                    flat[i] += target_weight
        return flat

    rewards.__name__ = type(rewarder).__name__
    return rewards


class GRPO:
    """A few GRPO steps on the kept examples' prompts."""

    def __init__(self, steps: int = 20, batch_size: int = 16, generations: int = 4,
                 lr: float = 1e-5, beta: float = 0.0, temperature: float = 1.0,
                 max_prompts: int = 1000, fixed_positions: bool = True,
                 target_weight: float = 0.0, vllm: str = "auto", vllm_server: str | None = None,
                 base_options: dict | None = None):
        if vllm not in VLLM_MODES:
            raise ValueError(f"vllm {vllm!r}: one of {', '.join(VLLM_MODES)}")
        if vllm == "server" and not vllm_server:
            raise ValueError("vllm = 'server' needs vllm_server (the `trl vllm-serve` URL, http://HOST:PORT)")
        self.vllm, self.vllm_server = vllm, vllm_server
        self.base_options = dict(base_options or {})  # rejection_sft's options for round 0
        self.steps, self.batch_size, self.generations = steps, batch_size, generations
        self.lr, self.beta, self.temperature, self.max_prompts = lr, beta, temperature, max_prompts
        self.fixed_positions = fixed_positions  # sample and score at the inference offset
        self.target_weight = target_weight  # reward for reproducing the kept example's label

    def optimize(self, policy, examples, *, task, generator, rewarder, rng, workdir,
                 round_index=0, budget=None):
        if round_index == 0:
            return train_base_round(self.base_options, policy, examples, task=task,
                                    generator=generator, rewarder=rewarder, rng=rng, workdir=workdir)
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        examples = examples[-self.max_prompts:]
        if not examples:
            return OptimizeResult(policy, {"steps": 0.0})
        difficulty = {e.prompt: e.difficulty for e in examples}
        rows = [{"prompt": e.prompt, "answer": e.meta.get("answer"), "target": e.completion}
                for e in examples]
        args = trainer_args(
            GRPOConfig, workdir, steps=within_budget(self.steps, budget, "max_steps"), batch_size=self.batch_size, lr=self.lr,
            model=policy.model, num_generations=self.generations, beta=self.beta, temperature=self.temperature,
            max_completion_length=example_budget(examples, task), **vllm_args(self.vllm, self.vllm_server))
        with trained_in_place(policy.model, fixed_positions=self.fixed_positions):
            trainer = GRPOTrainer(
                model=policy.model, reward_funcs=[reward_function(rewarder, task, difficulty.get,
                                              self.target_weight)],
                args=args, train_dataset=Dataset.from_list(rows), processing_class=policy.tokenizer)
            quiet(trainer).train()
        return OptimizeResult(policy, log_metrics(trainer))


VLLM_MODES = ("auto", "off", "colocate", "server")


def vllm_args(mode: str, server: str | None) -> dict:
    """GRPOConfig's vLLM fields for ``mode`` (see the module's docstring)."""
    if mode == "auto":
        import importlib.util

        import torch

        mode = "colocate" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "off"
    if mode == "off":
        return {"use_vllm": False}
    if mode == "server":
        return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": server}
    return {"use_vllm": True, "vllm_mode": "colocate"}


@hookimpl(trylast=True)
def register_optimizer(register):
    register("grpo", GRPO, description="TRL GRPOTrainer with the run's rewarder as reward function")
