"""The optimizers really train: the embedded loop, and TRL's DPO and GRPO for a few CPU steps."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from plugin_fixtures import TASK, labelled, tiny_policy
from selfloop.core.types import Example
from selfloop.plugins.generate.batched import BatchedGenerator
from selfloop.plugins.optimize.dpo import DPO
from selfloop.plugins.optimize.grpo import GRPO, reward_function
from selfloop.plugins.optimize.rejection_sft import RejectionSFT
from selfloop.plugins.reward.ground_truth import GroundTruthReward
from selfloop.plugins.reward.majority_vote import MajorityVoteReward


def completion_loss(policy, examples):
    tok = policy.tokenizer
    total = 0.0
    with torch.no_grad():
        for e in examples:
            prompt = tok(e.prompt, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + tok(e.completion, add_special_tokens=False)["input_ids"]
                                + [tok.eos_token_id]])
            logits = policy.model(input_ids=ids).logits[0, len(prompt) - 1:-1]
            total += torch.nn.functional.cross_entropy(logits, ids[0, len(prompt):]).item()
    return total / len(examples)


def test_rejection_sft_lowers_the_loss_and_rejects_wrong_labels(tmp_path):
    policy = tiny_policy()
    data = labelled()
    before = completion_loss(policy, data)
    wrong = Example("11+11=", "999", 2, "llm", meta={"answer": "999"})  # the verifier rejects it
    result = RejectionSFT(base_steps=60, batch_size=16, lr=3e-3, progress=False).optimize(
        policy, data + [wrong], task=TASK, generator=BatchedGenerator(),
        rewarder=GroundTruthReward(), rng=random.Random(0), workdir=tmp_path, round_index=0)
    assert result.metrics["rejected"] == 1 and result.metrics["steps"] == 60
    assert result.metrics["tokens_per_second"] > 0
    assert result.metrics["compile_seconds"] == 0  # "auto": too few steps to compile for
    assert completion_loss(policy, data) < before - 0.3
    assert not policy.model.training


def test_rejection_sft_uses_the_round_budget_after_round_0(tmp_path):
    policy = tiny_policy()
    result = RejectionSFT(base_steps=50, steps=3, batch_size=8, progress=False).optimize(
        policy, labelled(10), task=TASK, generator=BatchedGenerator(),
        rewarder=GroundTruthReward(), rng=random.Random(0), workdir=tmp_path, round_index=2)
    assert result.metrics["steps"] == 3


def test_grpo_reward_function_groups_completions_by_prompt():
    f = reward_function(MajorityVoteReward(), TASK, lambda prompt: 2)
    scores = f(prompts=["a=", "a=", "b=", "b="], completions=["1", "1", "2", "3"])
    assert scores == [1.0, 1.0, 0.5, 0.5]
    g = reward_function(GroundTruthReward(), TASK, lambda prompt: 2)
    assert g(prompts=["12+34=", "12+34="], completions=["460", "461"],
             answer=["460", "460"]) == [1.0, 0.0]


@pytest.mark.slow
def test_dpo_trains_a_few_steps(tmp_path):
    policy = tiny_policy()
    before = [p.detach().clone() for p in policy.model.parameters()]
    result = DPO(steps=3, batch_size=8, samples=2).optimize(
        policy, labelled(16), task=TASK, generator=BatchedGenerator(),
        rewarder=GroundTruthReward(), rng=random.Random(0), workdir=tmp_path, round_index=1)
    assert result.metrics["steps"] == 3 and result.metrics["pairs"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.model.parameters()))


@pytest.mark.slow
def test_grpo_trains_a_few_steps(tmp_path):
    policy = tiny_policy()
    result = GRPO(steps=2, batch_size=8, generations=4).optimize(
        policy, labelled(16), task=TASK, generator=BatchedGenerator(),
        rewarder=GroundTruthReward(), rng=random.Random(0), workdir=tmp_path, round_index=1)
    assert result.metrics["steps"] == 2
    assert "reward" in result.metrics


def test_task_computes_true_answers_for_rejection():
    assert TASK.answer_for("21+43=") == "640"
    assert TASK.answer_for("99+99=") == "891"
    assert TASK.answer_for("1+22=") is None and TASK.answer_for("ab+cd=") is None


def test_offset_range_grows_over_the_warmup_then_is_restored():
    from selfloop.plugins.optimize.rejection_sft import train

    policy = tiny_policy()
    seen = []
    handle = policy.model.register_forward_pre_hook(
        lambda module, args: seen.append(module.selfloop_max_offset))
    train(policy, labelled(), steps=8, batch_size=8, lr=1e-3, offset_warmup_steps=4, progress=False)
    handle.remove()
    assert seen == [0, 1, 2, 3, 4, 4, 4, 4]
    assert policy.model.selfloop_max_offset == 4


DDP_WORKER = """
import json, os, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from plugin_fixtures import labelled, tiny_policy
from test_plugins_optimize import completion_loss
from selfloop.plugins.optimize.rejection_sft import train

policy, data = tiny_policy(), labelled(64)
before = completion_loss(policy, data)
batches = []  # what this rank trained on: the ranks must have drawn different batches
hook = policy.model.register_forward_pre_hook(
    lambda module, args, kwargs: batches.append(kwargs["input_ids"].tolist()), with_kwargs=True)
metrics = train(policy, data, steps=40, batch_size=16, lr=3e-3, warmup=5, progress=False)
hook.remove()
rank = int(os.environ["RANK"])
torch.save([p.detach() for p in policy.model.parameters()], f"{{sys.argv[1]}}/weights{{rank}}.pt")
with open(f"{{sys.argv[1]}}/rank{{rank}}.json", "w") as f:
    json.dump({{"before": before, "after": completion_loss(policy, data), "metrics": metrics,
               "world": int(os.environ["WORLD_SIZE"]), "batches": batches}}, f)
"""


@pytest.mark.slow
def test_rejection_sft_trains_data_parallel_on_two_cpu_processes(tmp_path):
    """torchrun, 2 processes, gloo: one run of train(), the ranks end with the same weights."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = tmp_path / "worker.py"
    worker.write_text(DDP_WORKER.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(worker), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [torch.load(tmp_path / f"weights{r}.pt") for r in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    fresh = [p.detach() for p in tiny_policy().model.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(fresh, weights[0]))
    assert ranks[0]["batches"] != ranks[1]["batches"]  # different data, same weights: DDP
    for one in ranks:
        assert one["world"] == 2 and one["metrics"]["steps"] == 40
        assert all(len(batch) == 8 for batch in one["batches"])  # half the batch each
        assert one["after"] < one["before"] - 0.3


@pytest.mark.slow
def test_rejection_sft_with_processes_trains_data_parallel_and_brings_the_weights_back(tmp_path):
    """``processes = 2``: the optimizer launches torchrun itself; the round's policy is trained in place."""
    policy, data = tiny_policy(), labelled(64)
    before_weights = [p.detach().clone() for p in policy.model.parameters()]
    before = completion_loss(policy, data)
    result = RejectionSFT(base_steps=40, batch_size=16, lr=3e-3, warmup=5, progress=False, processes=2).optimize(
        policy, data, task=TASK, generator=BatchedGenerator(), rewarder=GroundTruthReward(),
        rng=random.Random(0), workdir=tmp_path, round_index=0)
    assert result.policy is policy and result.metrics["processes"] == 2 and result.metrics["steps"] == 40
    assert not all(torch.equal(a, b) for a, b in zip(before_weights, policy.model.parameters()))
    assert completion_loss(policy, data) < before - 0.3


def test_rejection_sft_refuses_no_processes():
    with pytest.raises(ValueError, match="processes must be at least 1"):
        RejectionSFT(processes=0)


def test_rejection_sft_refuses_an_unknown_compile_option():
    with pytest.raises(ValueError, match="compile must be"):
        RejectionSFT(compile="yes")


def test_a_failing_compile_warns_and_trains_eagerly(monkeypatch):
    """No C compiler (as in a bare sandbox image): one warning, every step still trained."""
    import torch._dynamo
    import torch._functorch.config
    import torch._inductor.config
    from selfloop.plugins.optimize.rejection_sft import train

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(torch._inductor.config, "fx_graph_cache", False)  # a cached graph needs no compiler
    monkeypatch.setattr(torch._functorch.config, "enable_autograd_cache", False)
    policy, data = tiny_policy(), labelled()
    before = completion_loss(policy, data)
    torch._dynamo.reset()
    try:
        with pytest.warns(RuntimeWarning, match="torch.compile failed"):
            metrics = train(policy, data, steps=30, batch_size=16, lr=3e-3, progress=False, compile=True)
    finally:
        torch._dynamo.reset()
    assert metrics["steps"] == 30
    assert completion_loss(policy, data) < before - 0.3


@pytest.mark.slow
def test_compiled_training_matches_eager_and_the_model_stays_plain(tmp_path):
    """compile=True trains the same weights as eager (up to float rounding), and the policy's
    model is still the plain HF model: it saves and loads as a standard checkpoint."""
    from selfloop.core.models import load_policy, save_policy
    from selfloop.plugins.optimize.rejection_sft import train

    trained = []
    for compile in (False, True):
        policy = tiny_policy()
        metrics = train(policy, labelled(), steps=20, batch_size=16, lr=3e-3, progress=False,
                        offset_warmup_steps=10, compile=compile)
        trained.append((policy, metrics))
    (eager, eager_metrics), (compiled, compiled_metrics) = trained
    assert eager_metrics["compile_seconds"] == 0 < compiled_metrics["compile_seconds"]
    assert abs(eager_metrics["loss"] - compiled_metrics["loss"]) < 1e-3
    for a, b in zip(eager.model.parameters(), compiled.model.parameters()):
        assert torch.allclose(a, b, atol=1e-4)
    assert type(compiled.model).__name__ == "LlamaForCausalLM"
    loaded = load_policy(save_policy(compiled, tmp_path / "model"))
    ids = torch.tensor([loaded.tokenizer("12+34=", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(loaded.model(input_ids=ids).logits, compiled.model(input_ids=ids).logits)


def test_every_shipped_acquirer_and_optimizer_takes_the_probe_budget():
    """A training probe trains every variant within one budget: a shipped component that ignored
    it would train at its own size and win (or lose) by that alone."""
    import inspect

    from selfloop.core.registry import load_registry

    registry = load_registry(entry_points=False)
    method = {"acquirer": "acquire", "optimizer": "optimize"}
    shipped = [r for r in registry.all() if r.kind in method and r.source == "builtin"]
    assert {r.kind for r in shipped} == set(method)
    for registration in shipped:
        parameters = inspect.signature(getattr(registration.factory, method[registration.kind])).parameters
        assert "budget" in parameters, f"{registration.kind} {registration.name} ignores the probe budget"


def test_the_probe_budget_caps_steps_and_problems(tmp_path):
    from selfloop.plugins.acquire.labelled import LabelledProblems

    budget = {"max_steps": 2, "max_problems": 3}
    result = RejectionSFT(base_steps=50, steps=9, batch_size=8, progress=False).optimize(
        tiny_policy(), labelled(10), task=TASK, generator=BatchedGenerator(),
        rewarder=GroundTruthReward(), rng=random.Random(0), workdir=tmp_path, round_index=2,
        budget=budget)
    assert result.metrics["steps"] == 2
    examples = LabelledProblems(max_difficulty=2, per_difficulty=20).acquire(
        task=TASK, policy=None, generator=None, round_index=0, rng=random.Random(0), budget=budget)
    assert sorted(e.difficulty for e in examples) == [1, 1, 1, 2, 2, 2]
