"""The pytest fixtures (``pytest_plugins = ["selfloop.testing"]``)."""

from __future__ import annotations

import pytest

from .models import tiny_bpe_model_dir, tiny_embedded_policy


@pytest.fixture
def tiny_policy():
    """A fresh tiny embedded policy (one layer, width 32), the same weights every time."""
    return tiny_embedded_policy()


@pytest.fixture(scope="session")
def tiny_bpe_model(tmp_path_factory):
    """The directory of a tiny random-weight Qwen2-shaped model with a BPE tokenizer and a chat
    template (built once per session; load it with ``Pretrained(path=...)``)."""
    return tiny_bpe_model_dir(tmp_path_factory.mktemp("tiny_bpe") / "model")
