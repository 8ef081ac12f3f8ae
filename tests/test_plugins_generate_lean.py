"""The lean decode path (plugins/generate/lean.py): its logits equal the stock transformers forward
(prefill and decode steps, with the embedded model's abacus positions and on tiny BPE Qwen2 and
Llama models with grouped-query attention), the generator's greedy outputs are the same with and
without it, and models it does not mirror exactly (GPT-2, sliding windows, hooks) fall back."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from selfloop.core.types import Example
from selfloop.plugins.generate import kv_cache, lean
from selfloop.plugins.generate.batched import BatchedGenerator
from selfloop.plugins.model.pretrained import Pretrained
from selfloop.plugins.optimize.rejection_sft import train
from selfloop.plugins.tasks.reversed_addition import ReversedAddition
from selfloop.testing import tiny_bpe_model_dir, tiny_embedded_policy
from transformers import DynamicCache

TASK = ReversedAddition()


@pytest.fixture(scope="module")
def embedded():
    """A small embedded (abacus positions) model after a few steps of training (a few seconds)."""
    torch.manual_seed(0)
    rng = random.Random(0)
    policy = tiny_embedded_policy(n_layer=2, n_embd=64, n_head=4, max_positions=48)
    examples = [Example(p.prompt, p.answer, d, "labelled")
                for d in range(1, 4) for p in TASK.problems(d, 200, rng)]
    train(policy, examples, steps=100, batch_size=64, lr=3e-3, offset_warmup_steps=30,
          seed=0, progress=False)
    return policy


def bpe_policy(architecture, tmp_path_factory):
    path = tiny_bpe_model_dir(tmp_path_factory.mktemp(architecture) / "m", architecture=architecture)
    return Pretrained(path=str(path), device="cpu").create()


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return bpe_policy("qwen2", tmp_path_factory)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return bpe_policy("llama", tmp_path_factory)


def same_length_prompts(policy, count=5):
    """Token ids of ``count`` prompts of one length (the lean prefill takes one length at a time)."""
    rng = random.Random(3)
    encode = lambda text: policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    texts = [p.prompt for p in TASK.problems(3, 50, rng)] + \
        [f"What is {a} plus {b}?" for a, b in zip(range(100, 150), range(300, 350))]
    by_length = {}
    for text in texts:
        by_length.setdefault(len(encode(text)), []).append(encode(text))
    return torch.tensor(max(by_length.values(), key=len)[:count])


def tensors(state):
    """The tensors of a (nested tuple) row state, in order."""
    if state is None:
        return []
    return [t for part in state for t in tensors(part)] if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("model", ["embedded", "qwen2", "llama"])
def test_lean_logits_equal_the_stock_forward(model, request):
    policy = request.getfixturevalue(model)
    net = policy.model.eval()
    step = lean.lean_step(net)
    assert step is not None
    ids = same_length_prompts(policy)
    rows, width = ids.shape
    mask = kv_cache.padding_mask(torch.full((rows,), width), width, width + 4)
    mask[:, width:] = True
    with torch.inference_mode():
        cache = DynamicCache()  # the stock forward first, all steps (they share the row state)
        stock = [net(input_ids=ids, attention_mask=torch.ones_like(ids), cache=cache).logits[:, -1]]
        states = [tensors(kv_cache.row_state(net))]
        for t in range(3):
            stock.append(net(input_ids=stock[-1].argmax(-1)[:, None], attention_mask=mask[:, :width + t + 1],
                             cache=cache, position_ids=torch.full((rows, 1), width + t)).logits[:, -1])
            states.append(tensors(kv_cache.row_state(net)))
        cache = step.cache(rows, width + 4, width)
        ours = [step.prefill(ids, cache, slice(0, rows), None, width)]
        assert all(torch.equal(a, b) for a, b in zip(tensors(kv_cache.row_state(net)), states[0]))
        for t in range(3):
            ours.append(step.step(stock[t].argmax(-1), mask[:, :width + t + 1], cache,
                                  torch.full((rows,), width + t)))
            assert all(torch.equal(a, b) for a, b in zip(tensors(kv_cache.row_state(net)), states[t + 1]))
    for a, b in zip(ours, stock):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert (model == "embedded") == bool(states[0])  # the abacus state was checked


def greedy(policy, prompts, budget, **options):
    return [g[0] for g in BatchedGenerator(progress=False, **options).generate(
        policy, prompts, max_new_tokens=budget)]


@pytest.mark.parametrize("model", ["embedded", "qwen2", "llama"])
def test_greedy_outputs_are_the_same_without_the_lean_path(model, request, monkeypatch):
    policy = request.getfixturevalue(model)
    rng = random.Random(1)
    prompts = [p.prompt for i in range(40) for p in TASK.problems(1 + i % 4, 1, rng)]
    if model != "embedded":
        prompts += [policy.tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                                         tokenize=False, add_generation_prompt=True)
                    for q in ["What is 12 plus 7?", "Say a word.", "1 + 1 ="]]
    lean_out = greedy(policy, prompts, 8)
    sampled = BatchedGenerator(progress=False, top_k=5).generate(
        policy, prompts, n=3, temperature=1.0, max_new_tokens=6, seed=2)
    monkeypatch.setattr(lean, "lean_step", lambda net: None)
    assert greedy(policy, prompts, 8) == lean_out
    assert BatchedGenerator(progress=False, top_k=5).generate(
        policy, prompts, n=3, temperature=1.0, max_new_tokens=6, seed=2) == sampled


def test_models_it_does_not_mirror_fall_back(qwen2, monkeypatch):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        MistralConfig,
        MistralForCausalLM,
    )

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)).eval()
    assert lean.lean_step(gpt2) is None
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 50}
    assert lean.lean_step(MistralForCausalLM(MistralConfig(**shape, sliding_window=None))) is not None
    assert lean.lean_step(MistralForCausalLM(MistralConfig(**shape, sliding_window=16))) is None
    net = qwen2.model
    assert lean.lean_step(net) is not None
    handle = net.model.layers[0].mlp.register_forward_hook(lambda *args: None)
    try:
        assert lean.lean_step(net) is None
    finally:
        handle.remove()
    monkeypatch.setattr(net.config, "_attn_implementation", "eager")
    assert lean.lean_step(net) is None
