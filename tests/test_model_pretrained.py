"""The pretrained provider on a tiny random-weight BPE model built here (no download): load,
generate, train, save and load again, chat templates, LoRA, dtypes, and its one-line errors."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from selfloop.core.errors import CheckpointError, ConfigError
from selfloop.core.models import load_policy, save_policy, untrained_copy
from selfloop.core.tasks import TaskView
from selfloop.core.types import Example, Problem
from selfloop.plugins.generate.batched import BatchedGenerator
from selfloop.plugins.model.pretrained import Pretrained
from selfloop.plugins.optimize.rejection_sft import tokenize_examples, train
from selfloop.testing import check_task, tiny_bpe_model_dir

pytest_plugins = ["selfloop.testing"]  # the fixtures tiny_bpe_model and tiny_policy

LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


class WordSum:
    """A chat task: add two numbers said in words; the answer follows ``####``."""

    def problems(self, difficulty, count, rng):
        out = []
        for _ in range(count):
            a, b = rng.randrange(10 ** difficulty), rng.randrange(10 ** difficulty)
            out.append(Problem(f"What is {a} plus {b}?", str(a + b), difficulty))
        return out

    def messages(self, problem):
        return [{"role": "user", "content": problem.prompt}]

    def extract_answer(self, completion):
        return completion.rsplit("####", 1)[-1].strip()

    def demonstration(self, problem):
        return f"add them #### {problem.answer}"

    def max_new_tokens(self, problem):
        return 8

    def verify(self, problem, completion):
        return self.extract_answer(completion) == problem.answer


def examples(provider, count=4):
    view = TaskView(WordSum(), render=provider.render_messages)
    problems = view.problems(2, count, random.Random(0))
    return [Example(p.prompt, view.demonstration(p), 2, "labelled") for p in problems]


def logits(policy, text="12 + 35 = 47"):
    ids = policy.tokenizer([text], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return policy.model(input_ids=ids.to(policy.model.device)).logits.float()


def test_loads_generates_trains_and_round_trips(tiny_bpe_model, tmp_path):
    provider = Pretrained(path=str(tiny_bpe_model))
    policy = provider.create()
    assert policy.model.device.type == "cpu" and policy.tokenizer.padding_side == "left"
    assert "pretrained" in provider.describe()
    data = examples(provider)
    answers = BatchedGenerator(progress=False).generate(policy, [e.prompt for e in data], n=2,
                                                        temperature=1.0, max_new_tokens=6, seed=0)
    assert len(answers) == 4 and all(len(g) == 2 and all(isinstance(a, str) for a in g) for g in answers)

    before = logits(policy)
    metrics = train(policy, data, steps=2, batch_size=2, lr=1e-3, warmup=1, progress=False)
    assert metrics["steps"] == 2 and metrics["loss"] == metrics["loss"]  # finite, not NaN
    assert not torch.allclose(before, logits(policy))

    directory = save_policy(policy, tmp_path / "model")
    again = provider.load(directory)
    assert torch.allclose(logits(policy), logits(again), atol=1e-5)
    assert again.tokenizer.chat_template == policy.tokenizer.chat_template
    assert torch.allclose(logits(policy), logits(load_policy(directory)), atol=1e-5)  # by its record


def test_training_tokens_of_a_bos_tokenizer(tmp_path):
    """A Llama-like tokenizer adds BOS on its own; the trainer's prompt + completion + EOS must hold
    it only where the chat template put it (first), and end at the end of the turn."""
    directory = tiny_bpe_model_dir(tmp_path / "llama", architecture="llama")
    provider = Pretrained(path=str(directory))
    policy = provider.create()
    tok = policy.tokenizer
    data = examples(provider, count=2)
    assert data[0].prompt.startswith(tok.bos_token)
    for ids, prompt_length in tokenize_examples(tok, data):
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
        assert ids[-1] == tok.eos_token_id and 0 < prompt_length < len(ids) - 1
    assert train(policy, data, steps=1, batch_size=2, lr=1e-3, warmup=1, progress=False)["steps"] == 1


def test_chat_template_renders_and_its_absence_is_one_line(tiny_bpe_model, tmp_path):
    rendered = Pretrained(path=str(tiny_bpe_model)).render_messages([{"role": "user", "content": "2+2?"}])
    assert rendered == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    bare = tiny_bpe_model_dir(tmp_path / "bare", chat_template=False)
    with pytest.raises(ConfigError, match=rf"{bare}.*no chat_template; add one") as caught:
        Pretrained(path=str(bare)).render_messages([{"role": "user", "content": "2+2?"}])
    assert "\n" not in str(caught.value)


def test_a_directory_that_does_not_load_is_one_line(tiny_bpe_model, tmp_path):
    with pytest.raises(CheckpointError, match=r"model 'pretrained': .*nowhere.* does not load"):
        Pretrained(path=str(tmp_path / "nowhere")).create()
    directory = save_policy(Pretrained(path=str(tiny_bpe_model)).create(), tmp_path / "model")
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"model 'pretrained': .*corrupt checkpoint") as caught:
        Pretrained(path=str(tiny_bpe_model)).load(directory)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="model 'pretrained': path: Field required"):
        Pretrained()


def test_memory_estimate_refuses_with_the_override_named(tiny_bpe_model):
    with pytest.raises(CheckpointError, match=r"model too large: .*M parameters in float32 "
                                              r"\(full fine-tune.*options\.memory_limit_gib"):
        Pretrained(path=str(tiny_bpe_model), memory_limit_gib=0.5).create()
    Pretrained(path=str(tiny_bpe_model), memory_limit_gib=1.0).create()  # 0.7 GiB runtime + a little
    from selfloop.plugins.model.pretrained import _parameter_counts

    config = Pretrained(path=str(tiny_bpe_model))._config(tiny_bpe_model)
    params, lora = _parameter_counts(config, Pretrained(path="x", adapter=LORA).settings)
    model = Pretrained(path=str(tiny_bpe_model)).create().model
    assert params == sum(p.numel() for p in model.parameters())
    assert lora == 2 * 4 * ((48 + 48) + (48 + 24))  # q_proj 48->48 and v_proj 48->24, per layer


def test_lora_adapter_trains_saves_and_loads(tiny_bpe_model, tmp_path):
    provider = Pretrained(path=str(tiny_bpe_model), adapter=LORA)
    policy = provider.create()
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in policy.model.named_parameters() if not p.requires_grad}
    train(policy, examples(provider), steps=3, batch_size=2, lr=1e-2, warmup=1, progress=False)
    assert all(torch.equal(p, frozen[n]) for n, p in policy.model.named_parameters() if n in frozen)

    directory = save_policy(policy, tmp_path / "model")
    assert (directory / "adapter_config.json").is_file() and (directory / "config.json").is_file()
    for loaded in (Pretrained(path=str(tiny_bpe_model)).load(directory), load_policy(directory)):
        assert hasattr(loaded.model, "peft_config")
        assert torch.allclose(logits(policy), logits(loaded), atol=1e-5)
        assert any(p.requires_grad for p in loaded.model.parameters())  # it trains on
    null = untrained_copy(policy, seed=1)
    assert not torch.allclose(logits(null), logits(policy))


def test_bfloat16_loads_and_generates_on_cpu(tiny_bpe_model):
    policy = Pretrained(path=str(tiny_bpe_model), dtype="bfloat16", device="cpu").create()
    assert policy.model.dtype == torch.bfloat16
    (answer,) = BatchedGenerator(progress=False).generate(policy, ["12 + 35 ="], max_new_tokens=4)
    assert isinstance(answer[0], str)
    null = untrained_copy(policy, seed=0)
    assert null.model.dtype == torch.bfloat16


def test_peers_are_copies_that_part_ways_in_training(tiny_bpe_model, tmp_path):
    provider = Pretrained(path=str(tiny_bpe_model), peers=1)
    policy = provider.create()
    assert len(policy.peers) == 1 and policy.peers[0].model is not policy.model
    assert torch.equal(logits(policy), logits(policy.peers[0]))
    train(policy.peers[0], examples(provider), steps=1, batch_size=2, lr=1e-2, warmup=1, seed=1,
          progress=False)
    assert not torch.equal(logits(policy), logits(policy.peers[0]))
    loaded = provider.load(save_policy(policy, tmp_path / "model"))
    assert len(loaded.peers) == 1 and torch.allclose(logits(loaded.peers[0]), logits(policy.peers[0]))


def test_check_task_passes_good_tasks_and_names_a_broken_one():
    from selfloop.plugins.tasks.reversed_addition import ReversedAddition

    assert check_task(ReversedAddition(), name="reversed_addition") == [1, 2, 3]
    assert check_task(WordSum(), name="word_sum") == [1, 2, 3]

    class Lenient(WordSum):
        def verify(self, problem, completion):
            return True

    with pytest.raises(AssertionError, match="lenient: verify\\(\\) accepts an empty completion"):
        check_task(Lenient(), name="lenient")


def test_the_fixtures(tiny_policy, tiny_bpe_model):
    assert tiny_policy.model.config.num_hidden_layers == 1
    assert (tiny_bpe_model / "config.json").is_file() and (tiny_bpe_model / "tokenizer.json").is_file()


def test_vllm_engine_follows_the_weights_it_would_load(tmp_path):
    """The engine's key changes with every save and with weights trained since (a snapshot is
    written then): an evaluation never sees last round's weights. No vLLM needed for this."""
    from selfloop.plugins.generate.vllm_generator import VLLMGenerator

    generator = VLLMGenerator()
    policy = Pretrained(path=str(tiny_bpe_model_dir(tmp_path / "bpe"))).create()
    first = save_policy(policy, tmp_path / "round_0")
    source, key = generator.weights_source(policy)
    assert source == first
    generator._key = key
    assert generator.weights_source(policy) == (source, key)  # nothing changed: no reload
    train(policy, examples(Pretrained(path=str(tmp_path / "bpe"))), steps=1, batch_size=2, lr=1e-2,
          warmup=1, progress=False)
    snapshot, changed = generator.weights_source(policy)  # trained, not saved: a snapshot
    assert changed != key and changed[0] == "snapshot" and (snapshot / "config.json").is_file()
    from transformers import AutoModelForCausalLM

    copy = AutoModelForCausalLM.from_pretrained(snapshot)
    assert torch.allclose(copy(input_ids=torch.tensor([[5, 6, 7]])).logits,
                          policy.model(input_ids=torch.tensor([[5, 6, 7]])).logits, atol=1e-5)
    second = save_policy(policy, tmp_path / "round_1")
    source, saved = generator.weights_source(policy)
    assert source == second and saved != key


def test_generation_stops_at_every_end_token_and_trl_follows_the_model(tiny_bpe_model, tmp_path):
    from selfloop.plugins.generate.batched import end_token_ids
    from selfloop.plugins.optimize._trl_common import trainer_args
    from trl import DPOConfig

    policy = Pretrained(path=str(tiny_bpe_model)).create()
    policy.model.generation_config.eos_token_id = [policy.tokenizer.eos_token_id, 7]
    assert end_token_ids(policy) == [policy.tokenizer.eos_token_id, 7]
    args = trainer_args(DPOConfig, tmp_path, steps=1, batch_size=2, lr=1e-5, model=policy.model)
    assert args.use_cpu
