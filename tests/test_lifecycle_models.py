"""The embedded model: tokenizer, stock architecture, abacus positions, checkpoints, limits."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from selfloop.core.config import ModelSettings
from selfloop.core.errors import CheckpointError
from selfloop.core.models import (
    abacus_positions,
    build_tokenizer,
    check_memory,
    load_policy,
    new_policy,
    save_policy,
)

TINY = ModelSettings(n_layer=1, n_embd=32, n_head=2, max_positions=32, max_position_offset=8)


def test_tokenizer_is_character_level_with_distinct_pad_and_eos():
    tok = build_tokenizer()
    ids = tok("12+34=", add_special_tokens=False)["input_ids"]
    assert len(ids) == 6
    assert tok.decode(ids) == "12+34="
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == "12+34="


def test_abacus_positions_count_digits_within_each_number():
    tok = build_tokenizer()
    ids = torch.tensor([tok("123+45=67", add_special_tokens=False)["input_ids"]])
    positions, _ = abacus_positions(ids, torch.tensor([10]))
    assert positions.tolist() == [[11, 12, 13, 0, 11, 12, 0, 11, 12]]
    # continuing under a cache gives the same ids as computing the whole sequence at once
    first, state = abacus_positions(ids[:, :5], torch.tensor([10]))
    rest, _ = abacus_positions(ids[:, 5:], torch.tensor([10]), start=state)
    assert torch.cat([first, rest], 1).tolist() == positions.tolist()


def test_saved_model_is_a_standard_hf_directory(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = new_policy(TINY)
    save_policy(policy, tmp_path / "model")
    assert AutoTokenizer.from_pretrained(tmp_path / "model").pad_token == "<pad>"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert model.config.model_type == "llama"
    assert model.config.selfloop_positions == "abacus"
    loaded = load_policy(tmp_path / "model")
    ids = policy.tokenizer(["12+34="], add_special_tokens=False, return_tensors="pt")["input_ids"]
    policy.model.eval()
    with torch.no_grad():
        assert torch.allclose(policy.model(input_ids=ids).logits, loaded.model(input_ids=ids).logits)


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_cached_generation_matches_full_recomputation(architecture):
    """The position hook must give the same ids step by step under a KV cache as all at once."""
    policy = new_policy(TINY.model_copy(update={"architecture": architecture}))
    model, tok = policy.model.eval(), policy.tokenizer
    ids = tok(["123+456="], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0,
                                attention_mask=torch.ones_like(ids))
        sequence = ids
        for _ in range(6):
            token = model(input_ids=sequence).logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, token], 1)
    assert cached[0, : sequence.shape[1]].tolist() == sequence[0, : cached.shape[1]].tolist()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    policy = new_policy(TINY)
    directory = save_policy(policy, tmp_path / "model")
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_policy(directory)
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_policy(tmp_path / "nowhere")


def test_model_too_large_for_its_memory_limit():
    with pytest.raises(CheckpointError, match="model too large"):
        check_memory(ModelSettings(n_layer=48, n_embd=2048, n_head=16, memory_limit_gib=3))
    check_memory(ModelSettings())  # the default fits its default limit


def test_abacus_ids_drive_the_rotary_embeddings():
    """Under rotary embeddings only differences of ids matter: shifting every digit's id by the
    same offset, with the other characters at 0 both times, changes the logits; an offset that
    moves nothing (all-digit input) leaves them equal."""
    policy = new_policy(TINY)
    model, tok = policy.model.eval(), policy.tokenizer
    mixed = tok(["12+34="], add_special_tokens=False, return_tensors="pt")["input_ids"]
    digits = tok(["1234"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_mixed, base_digits = model(input_ids=mixed).logits, model(input_ids=digits).logits
        model.selfloop_inference_offset = 3
        assert not torch.allclose(model(input_ids=mixed).logits, base_mixed)
        assert torch.allclose(model(input_ids=digits).logits, base_digits, atol=1e-5)


def test_gpt2_and_learned_positions_build():
    gpt2 = new_policy(TINY.model_copy(update={"architecture": "gpt2"}))
    assert gpt2.model.config.model_type == "gpt2"
    policy = new_policy(ModelSettings(architecture="llama", positions="learned", n_layer=1,
                                      n_embd=32, n_head=2, max_positions=32))
    assert policy.model.config.model_type == "llama"


def test_peers_are_seeded_apart_and_saved_inside_the_checkpoint(tmp_path):
    policy = new_policy(TINY.model_copy(update={"peers": 2}))
    weights = lambda p: p.model.get_input_embeddings().weight
    assert len(policy.peers) == 2
    assert not torch.equal(weights(policy), weights(policy.peers[0]))
    assert not torch.equal(weights(policy.peers[0]), weights(policy.peers[1]))
    assert torch.equal(weights(policy), weights(new_policy(TINY)))  # peers leave the policy's seed alone

    save_policy(policy, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model/peers").iterdir()) == ["1", "2"]
    loaded = load_policy(tmp_path / "model")
    assert [torch.equal(weights(a), weights(b)) for a, b in zip(loaded.peers, policy.peers)] == [True, True]
    assert loaded.peers[1].path == tmp_path / "model/peers/2"
    # a Hugging Face loader sees the policy alone
    from transformers import AutoModelForCausalLM

    assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path / "model").get_input_embeddings().weight,
                       weights(policy))
    # starting from a directory whose peers the config does not expect is a clear error
    with pytest.raises(CheckpointError, match="holds 2 peer models but model.peers is 0"):
        new_policy(TINY.model_copy(update={"path": str(tmp_path / "model")}))
