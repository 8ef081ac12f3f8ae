"""The embedded model (plugins/model): tokenizer, stock architecture, abacus positions, checkpoints,
limits; and what core/models gives every provider."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from selfloop.core.errors import CheckpointError
from selfloop.core.models import load_policy, save_policy, untrained_copy
from selfloop.plugins.model.abacus import abacus_positions
from selfloop.plugins.model.embedded import (
    Embedded,
    EmbeddedSettings,
    build_tokenizer,
    check_settings_memory,
)

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2, "max_positions": 32, "max_position_offset": 8}


def new_policy(**options):
    return Embedded(**{**TINY, **options}).create()


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

    policy = new_policy()
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
    policy = new_policy(architecture=architecture)
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
    policy = new_policy()
    directory = save_policy(policy, tmp_path / "model")
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_policy(directory)
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_policy(tmp_path / "nowhere")


def test_model_too_large_for_its_memory_limit():
    with pytest.raises(CheckpointError, match="model too large"):
        check_settings_memory(EmbeddedSettings(n_layer=48, n_embd=2048, n_head=16, memory_limit_gib=3))
    with pytest.raises(CheckpointError, match=r"raise \[model\] options.memory_limit_gib"):
        Embedded(n_layer=48, n_embd=2048, n_head=16).create()
    check_settings_memory(EmbeddedSettings())  # the default fits its default limit


def test_abacus_ids_drive_the_rotary_embeddings():
    """Under rotary embeddings only differences of ids matter: shifting every digit's id by the
    same offset, with the other characters at 0 both times, changes the logits; an offset that
    moves nothing (all-digit input) leaves them equal."""
    policy = new_policy()
    model, tok = policy.model.eval(), policy.tokenizer
    mixed = tok(["12+34="], add_special_tokens=False, return_tensors="pt")["input_ids"]
    digits = tok(["1234"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_mixed, base_digits = model(input_ids=mixed).logits, model(input_ids=digits).logits
        model.selfloop_inference_offset = 3
        assert not torch.allclose(model(input_ids=mixed).logits, base_mixed)
        assert torch.allclose(model(input_ids=digits).logits, base_digits, atol=1e-5)


def test_gpt2_and_learned_positions_build():
    gpt2 = new_policy(architecture="gpt2")
    assert gpt2.model.config.model_type == "gpt2"
    policy = Embedded(architecture="llama", positions="learned", n_layer=1, n_embd=32, n_head=2,
                      max_positions=32).create()
    assert policy.model.config.model_type == "llama"


def test_peers_are_seeded_apart_and_saved_inside_the_checkpoint(tmp_path):
    policy = new_policy(peers=2)
    weights = lambda p: p.model.get_input_embeddings().weight
    assert len(policy.peers) == 2
    assert not torch.equal(weights(policy), weights(policy.peers[0]))
    assert not torch.equal(weights(policy.peers[0]), weights(policy.peers[1]))
    assert torch.equal(weights(policy), weights(new_policy()))  # peers leave the policy's seed alone

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
        new_policy(path=str(tmp_path / "model"))


def test_a_checkpoint_names_its_provider_and_loads_without_the_config(tmp_path):
    """``load_policy`` and ``untrained_copy`` find the provider in the saved config: the abacus
    hook is back without anyone naming the embedded model."""
    policy = new_policy(peers=1)
    assert policy.model.config.selfloop_model["name"] == "embedded"
    loaded = load_policy(save_policy(policy, tmp_path / "model"))
    assert loaded.model._selfloop_positions_hook is not None
    assert loaded.peers[0].model._selfloop_positions_hook is not None
    null = untrained_copy(loaded, seed=7)
    assert null.model._selfloop_positions_hook is not None and len(null.peers) == 1
    assert not torch.equal(null.model.get_input_embeddings().weight, loaded.model.get_input_embeddings().weight)
    again = untrained_copy(loaded, seed=7)  # seeded: the same random weights
    assert torch.equal(null.model.get_input_embeddings().weight, again.model.get_input_embeddings().weight)


def test_a_checkpoint_from_before_providers_loads_with_the_default_one(tmp_path):
    import json

    directory = save_policy(new_policy(), tmp_path / "model")
    config = json.loads((directory / "config.json").read_text())
    del config["selfloop_model"]
    (directory / "config.json").write_text(json.dumps(config))
    assert load_policy(directory).model._selfloop_positions_hook is not None


def test_save_marks_the_weights_it_wrote(tmp_path):
    from selfloop.core.models import weights_fingerprint

    policy = new_policy()
    first = save_policy(policy, tmp_path / "a")
    path, count, fingerprint = policy.model.selfloop_saved
    assert path == str(first) and fingerprint == weights_fingerprint(policy.model)
    save_policy(policy, tmp_path / "b")
    assert policy.model.selfloop_saved[1] == count + 1
    with torch.no_grad():
        policy.model.get_input_embeddings().weight.add_(1.0)
    assert weights_fingerprint(policy.model) != policy.model.selfloop_saved[2]


def test_core_models_holds_nothing_embedded():
    from pathlib import Path

    import selfloop.core

    for path in Path(selfloop.core.__file__).parent.glob("models.py"):
        text = path.read_text()
        for word in ("CHARS", "digit", "abacus", "accuracy_by_digits"):
            assert word not in text, f"{path.name} mentions {word}"
