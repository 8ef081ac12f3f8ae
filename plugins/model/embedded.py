"""The embedded model, the default provider: a character-level tokenizer and a tiny stock GPT-2 or
Llama trained from scratch, with abacus positions (``abacus.py``).

Length generalization depends on positions. Measured here, 4 layers, width 128, 2000 steps on 1-5
digit labels (about 4.5 minutes), exact match at 6/7/8/9 digits:

- Llama, abacus offsets up to 20, range grown over the first 40% of steps (the embedded
  optimizer's ``offset_warmup``): 100/100/98/93%;
- the same from the first step: 90/82/75/66% for one seed; for another, training failed at some
  offsets (final loss 0.11) and even 4 digits fell to 10% at those;
- Llama without offsets: 71/4/0/0%; GPT-2 (learned position embeddings), same ids and offsets:
  at most 5% at 6 digits.

With GPT-2 the ids index its learned embeddings (optionally started as sinusoids,
``position_init_scale``). ``learned`` keeps the architecture's own positions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from selfloop.core.config import parse_options
from selfloop.core.errors import CheckpointError
from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import (
    check_memory,
    fresh_weights,
    load_directory,
    mark_saved,
    record_provider,
    training_gib,
    weight_bytes,
)
from selfloop.core.types import Policy

from .abacus import FIRST_DIGIT_ID, attach_positions

CHARS = "0123456789+=-*/ abcdefghijklmnopqrstuvwxyz"
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


class EmbeddedSettings(BaseModel):
    """The options of ``[model] name = "embedded"``."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["gpt2", "llama"] = "llama"
    n_layer: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    n_head: int = Field(4, ge=1)
    max_positions: int = Field(256, ge=16)
    # "abacus": each digit's index in its own number (length generalization); "learned": stock.
    positions: Literal["abacus", "learned"] = "abacus"
    max_position_offset: int = Field(20, ge=0)  # random offset of abacus positions in training
    inference_offset: int = Field(4, ge=0)  # abacus: the offset to answer at (inside the trained range)
    position_init_scale: float = Field(0.0, ge=0)  # abacus: sinusoidal start of the embeddings; 0: random
    init_seed: int = 0
    # Independently seeded copies trained side by side (peer k starts from init_seed + k): the
    # agreement selector votes across them (Lee et al. 2025). Each trains in its own process.
    peers: int = Field(0, ge=0, le=8)
    memory_limit_gib: float = Field(3.0, gt=0)
    device: str = "cpu"  # or "cuda", "cuda:1", ...; "auto": cuda when present
    path: str | None = None  # start from this model directory (saved by selfloop) instead


class Embedded:
    """Builds the embedded model from its settings, or loads it from ``path``."""

    OPTIONS = EmbeddedSettings  # its options, as `selfloop plugins --options` lists them

    def __init__(self, **options):
        self.settings = parse_options(EmbeddedSettings, options, "model 'embedded'")

    def create(self) -> Policy:
        """A fresh model with ``peers`` peers (peer k from ``init_seed + k``), or the directory
        ``path`` names (with the peers saved in it)."""
        s = self.settings
        if s.path:
            policy = self.load(Path(s.path))
            if len(policy.peers) != s.peers:
                raise CheckpointError(f"{s.path} holds {len(policy.peers)} peer models but "
                                      f"model.peers is {s.peers}; set model.peers to match")
            return policy
        tokenizer = build_tokenizer()
        peers = [Policy(model=self._build(tokenizer, s.init_seed + k), tokenizer=tokenizer)
                 for k in range(1, s.peers + 1)]
        return Policy(model=self._build(tokenizer, s.init_seed), tokenizer=tokenizer, peers=peers)

    @property
    def device(self) -> str:
        if self.settings.device != "auto":
            return self.settings.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _build(self, tokenizer, seed: int):
        model = build_model(self.settings.model_copy(update={"init_seed": seed}), tokenizer)
        record_provider(model, "embedded", {"memory_limit_gib": self.settings.memory_limit_gib,
                                            "device": self.settings.device})
        return model.to(self.device)

    def load(self, directory: Path) -> Policy:
        weights = weight_bytes(Path(directory))
        check_memory(training_gib(weights, weights), self.settings.memory_limit_gib,
                     f"{directory}: {weights / 2**20:.0f} MiB of weights")
        policy = load_directory(directory, provider="embedded", prepare=attach_positions)
        for one in (policy, *policy.peers):
            mark_saved(one.model.to(self.device), one.path)
        return policy

    def untrained_copy(self, policy: Policy, seed: int) -> Policy:
        return fresh_weights(policy, seed=seed, prepare=attach_positions)

    def describe(self) -> str:
        s = self.settings
        return (f"embedded {s.architecture} {s.n_layer}x{s.n_embd}, {s.positions} positions, "
                f"{s.peers} peers, {self.device}")


def build_tokenizer():
    """A fast character-level tokenizer with distinct PAD and EOS tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    assert vocab["0"] == FIRST_DIGIT_ID and vocab["9"] == FIRST_DIGIT_ID + 9  # abacus reads digits so
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        padding_side="left", model_input_names=["input_ids", "attention_mask"],
    )


def build_model(settings: EmbeddedSettings, tokenizer):
    """A freshly initialized stock model from the settings, with its position scheme attached."""
    import torch

    check_settings_memory(settings)
    torch.manual_seed(settings.init_seed)
    config = _model_config(settings, tokenizer)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config)
    if settings.positions == "abacus" and settings.position_init_scale > 0 and settings.architecture == "gpt2":
        _sinusoidal_init(model.transformer.wpe.weight, settings.position_init_scale)
    attach_positions(model)
    return model.eval()  # like from_pretrained; trainers switch to train mode themselves


def _sinusoidal_init(weight, scale: float) -> None:
    """Start position embeddings as sinusoids (Vaswani et al. 2017).

    Random embeddings make "attend to the position after mine" a separate thing to learn for every
    position; with sinusoids it is one rotation, so random offsets cost almost nothing to learn.
    The embeddings stay trainable, and the architecture stays stock GPT-2.
    """
    import math

    import torch

    positions, dim = weight.shape
    pos = torch.arange(positions, dtype=torch.float)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    with torch.no_grad():
        weight.copy_(table * scale)


def _model_config(settings: EmbeddedSettings, tokenizer):
    common = {
        "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.eos_token_id,
    }
    extra = {"selfloop_positions": settings.positions,
             "selfloop_max_position_offset": settings.max_position_offset,
             "selfloop_inference_offset": settings.inference_offset}
    if settings.architecture == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            n_layer=settings.n_layer, n_embd=settings.n_embd, n_head=settings.n_head,
            n_positions=settings.max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            **common, **extra,
        )
    from transformers import LlamaConfig

    return LlamaConfig(
        num_hidden_layers=settings.n_layer, hidden_size=settings.n_embd,
        num_attention_heads=settings.n_head, num_key_value_heads=settings.n_head,
        intermediate_size=4 * settings.n_embd, max_position_embeddings=settings.max_positions,
        **common, **extra,
    )


def parameter_count(settings: EmbeddedSettings, vocab_size: int = len(CHARS) + 3) -> int:
    """Parameters of the model the settings describe (close enough for a memory estimate)."""
    d, layers = settings.n_embd, settings.n_layer
    per_layer = 12 * d * d + 13 * d
    return layers * per_layer + vocab_size * d + settings.max_positions * d + 2 * d


def check_settings_memory(settings: EmbeddedSettings) -> None:
    """Raise CheckpointError when training the model would not fit ``memory_limit_gib``: fp32
    weights, gradients and two AdamW moments, and the activations of a batch of 64 sequences of
    ``max_positions`` tokens."""
    params = parameter_count(settings)
    activations = 64 * settings.max_positions * settings.n_embd * settings.n_layer * 34 * 4
    check_memory(training_gib(4 * params, 4 * params, activations), settings.memory_limit_gib,
                 f"{params / 1e6:.1f}M parameters")


@hookimpl(trylast=True)
def register_model(register):
    register("embedded", Embedded, description="a tiny char-level model trained from scratch (abacus positions)")
