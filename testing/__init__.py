"""Test helpers for plugin authors: tiny models and a contract check for a task.

In a test suite, ``pytest_plugins = ["selfloop.testing"]`` (in ``conftest.py``) provides the
fixtures ``tiny_policy`` (the embedded model, tiny) and ``tiny_bpe_model`` (the directory of a
random-weight Qwen2-shaped model with a byte-level BPE tokenizer and a chat template: load it with
the ``pretrained`` provider). ``check_task(task)`` checks a task plugin against the Task Protocol.
"""

from __future__ import annotations

from .contract import chatml, check_task
from .fixtures import tiny_bpe_model, tiny_policy
from .models import tiny_bpe_model_dir, tiny_embedded_policy

__all__ = ["chatml", "check_task", "tiny_bpe_model", "tiny_bpe_model_dir", "tiny_embedded_policy", "tiny_policy"]
