"""The batched generator: greedy outputs equal transformers' ``generate`` on the left-padded batch
(a trained embedded model, and a pretrained-style BPE model with a chat template), on the fast
path (ragged prefill, preallocated cache, ended rows dropped; the lean forward of lean.py, which
tests/test_plugins_generate_lean.py checks against the stock one) and on the general one; sampling is
reproducible for a seed, and ``n`` copies per prompt come back in place."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from selfloop.core.types import Example
from selfloop.plugins.generate import batched, kv_cache, lean
from selfloop.plugins.generate.batched import BatchedGenerator, end_token_ids
from selfloop.plugins.model.pretrained import Pretrained
from selfloop.plugins.optimize.rejection_sft import train
from selfloop.plugins.tasks.reversed_addition import ReversedAddition
from selfloop.testing import tiny_bpe_model_dir, tiny_embedded_policy

TASK = ReversedAddition()


@pytest.fixture(scope="module")
def trained():
    """A small embedded model after 300 steps on 1-3 digit additions (about 10 s)."""
    torch.manual_seed(0)
    rng = random.Random(0)
    policy = tiny_embedded_policy(n_layer=2, n_embd=64, n_head=4, max_positions=48)
    examples = [Example(p.prompt, p.answer, d, "labelled")
                for d in range(1, 4) for p in TASK.problems(d, 500, rng)]
    train(policy, examples, steps=300, batch_size=64, lr=3e-3, offset_warmup_steps=100,
          seed=0, progress=False)
    return policy


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return Pretrained(path=str(tiny_bpe_model_dir(tmp_path_factory.mktemp("bpe") / "m")),
                      device="cpu").create()


def mixed_prompts(count=60, digits=5, seed=1):
    rng = random.Random(seed)
    problems = [p for i in range(count) for p in TASK.problems(1 + i % digits, 1, rng)]
    rng.shuffle(problems)
    return problems


def whole_batch_generate(policy, prompts, budget):
    """transformers' generate on all prompts at once, left-padded with an attention mask."""
    tok, model = policy.tokenizer, policy.model
    side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = side
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=budget,
                             pad_token_id=tok.pad_token_id, eos_token_id=end_token_ids(policy))
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def greedy(policy, prompts, budget, **options):
    return [g[0] for g in BatchedGenerator(progress=False, **options).generate(
        policy, prompts, max_new_tokens=budget)]


@pytest.mark.parametrize("batch_size", [1024, 7])
def test_greedy_equals_whole_batch_generate_on_a_trained_model(trained, batch_size):
    problems = mixed_prompts()
    prompts = [p.prompt for p in problems]
    ours = greedy(trained, prompts, 8, batch_size=batch_size)
    assert ours == whole_batch_generate(trained, prompts, 8)
    right = [TASK.verify(p, a) for p, a in zip(problems, ours)]
    assert sum(right) >= len(problems) // 3  # it learned: outputs differ in length and content
    assert len({len(a) for a in ours}) > 1


def test_the_general_path_gives_the_same_answers(trained, monkeypatch):
    prompts = [p.prompt for p in mixed_prompts(count=30)]
    fast = greedy(trained, prompts, 8)
    monkeypatch.setattr(lean, "lean_step", lambda model: None)  # the stock forward's cache ...
    assert greedy(trained, prompts, 8) == fast
    monkeypatch.setattr(kv_cache, "plain", lambda cache: False)  # ... and its own per length
    assert greedy(trained, prompts, 8) == fast


def test_dropping_ended_rows_changes_nothing(trained, monkeypatch):
    prompts = [p.prompt for p in mixed_prompts(count=40)]
    often = greedy(trained, prompts, 8)
    monkeypatch.setattr(batched, "DROP_SHARE", 10.0)  # never drop
    assert greedy(trained, prompts, 8) == often


def test_a_pretrained_chat_model_equals_whole_batch_generate(bpe):
    questions = ["What is 12 plus 7?", "Add 3 and 4.", "What is 100 plus 250? Think step by step.",
                 "1 + 1 =", "Say a word.", "What is 9 plus 99 plus 999?"]
    prompts = [bpe.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q in questions]
    prompts += ["12 + 35 =", "7 + 8 = 15 and 9 + 9 ="]
    assert len({len(bpe.tokenizer(p)["input_ids"]) for p in prompts}) > 3
    ours = greedy(bpe, prompts, 12)
    assert ours == whole_batch_generate(bpe, prompts, 12)
    assert ours == greedy(bpe, prompts, 12, batch_size=3)


def test_generation_stops_at_a_generation_config_end_token(bpe):
    prompts = ["12 + 35 =", "What is 1 plus 2?"]
    free = greedy(bpe, prompts, 10)
    first = bpe.tokenizer(free[0], add_special_tokens=False)["input_ids"][0]
    saved = bpe.model.generation_config.eos_token_id
    bpe.model.generation_config.eos_token_id = [bpe.tokenizer.eos_token_id, first]
    try:
        stopped = greedy(bpe, prompts, 10)
    finally:
        bpe.model.generation_config.eos_token_id = saved
    assert stopped[0] == bpe.tokenizer.decode([first], skip_special_tokens=True)
    assert len(stopped[0]) < len(free[0])


@pytest.mark.parametrize("model", ["trained", "bpe"])
def test_sampling_is_reproducible_for_a_seed_and_n_copies_come_back_in_place(model, request):
    policy = request.getfixturevalue(model)
    prompts = [p.prompt for p in mixed_prompts(count=12)]
    generator = BatchedGenerator(progress=False, top_k=5, batch_size=16)

    def sample(seed):
        return generator.generate(policy, prompts, n=3, temperature=1.5, max_new_tokens=6, seed=seed)

    first = sample(7)
    assert first == sample(7)
    assert first != sample(8)
    assert [len(g) for g in first] == [3] * len(prompts)
    assert any(len(set(g)) > 1 for g in first)  # copies are sampled apart
    copies = generator.generate(policy, prompts, n=3, temperature=0.0, max_new_tokens=6)
    assert copies == [[g] * 3 for g in greedy(policy, prompts, 6)]


def test_the_fixed_shape_decode_path_gives_the_same_answers(trained, monkeypatch):
    """``compile=True`` decodes over the whole preallocated cache (unwritten columns masked);
    run eagerly here (compiling takes minutes), it answers as the default path does."""
    prompts = [p.prompt for p in mixed_prompts(count=40)]
    default = greedy(trained, prompts, 8)
    monkeypatch.setattr(batched, "compiled_step", lambda model: model)
    assert greedy(trained, prompts, 8, compile=True) == default


def test_a_failing_compiled_step_falls_back_without_compile(trained, monkeypatch):
    prompts = [p.prompt for p in mixed_prompts(count=12)]

    def broken(**kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(batched, "compiled_step", lambda model: broken)
    generator = BatchedGenerator(progress=False, compile=True, top_k=5)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        sampled = generator.generate(trained, prompts, n=2, temperature=1.0, max_new_tokens=6, seed=3)
    plain = BatchedGenerator(progress=False, top_k=5)
    assert sampled == plain.generate(trained, prompts, n=2, temperature=1.0, max_new_tokens=6, seed=3)
