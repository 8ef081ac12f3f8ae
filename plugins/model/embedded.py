"""The embedded model: a tiny stock GPT-2 or Llama trained from scratch with a character tokenizer
and abacus positions (``selfloop.core.models`` holds the details), the default provider."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfloop.core.errors import ConfigError
from selfloop.core.hookspecs import hookimpl


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
    path: str | None = None  # start from this model directory (saved by selfloop) instead


class Embedded:
    """Builds the embedded model from its settings, or loads it from ``path``."""

    def __init__(self, **options):
        try:
            self.settings = EmbeddedSettings(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"model 'embedded': {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    def create(self):
        from selfloop.core.models import new_policy

        return new_policy(self.settings)

    def load(self, directory: Path):
        from selfloop.core.models import load_policy

        return load_policy(directory, memory_limit_gib=self.settings.memory_limit_gib)

    def untrained_copy(self, policy, seed: int):
        from selfloop.core.models import untrained_copy

        return untrained_copy(policy, seed=seed)

    def describe(self) -> str:
        s = self.settings
        return f"embedded {s.architecture} {s.n_layer}x{s.n_embd}, {s.positions} positions, {s.peers} peers"


@hookimpl(trylast=True)
def register_model(register):
    register("embedded", Embedded, description="a tiny char-level model trained from scratch (abacus positions)")
