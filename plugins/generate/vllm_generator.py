"""Generation with vLLM on a GPU (optional extra ``selfloop[gpu]``, imported only when used).

vLLM loads weights from disk. The engine is keyed on the directory that holds the policy's
weights as they are now (``selfloop.core.models.mark_saved``, set by every save and load), so it
reloads after every save; when the weights in memory changed since (an optimizer ran and nothing
saved yet), the generator writes a snapshot of its own and loads that, so an evaluation always
sees the round's weights. One engine is kept: alternating between models (peers) reloads.

The model needs the architecture's own positions (the embedded model with ``positions =
"learned"``, or any pretrained model): vLLM computes positions itself, so abacus positions are not
available there. A LoRA adapter is not loaded either: merge it, or use the batched generator.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from selfloop.core.errors import PluginError
from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import weights_fingerprint

from ..model.abacus import has_position_offsets


class VLLMGenerator:
    """Samples with ``vllm.LLM`` loaded from the policy's weights (reloaded when they change)."""

    def __init__(self, gpu_memory_utilization: float = 0.5, dtype: str = "auto"):
        self.gpu_memory_utilization, self.dtype = gpu_memory_utilization, dtype
        self._engine, self._key, self._snapshots = None, None, None
        self.loads = 0  # engines built so far

    def _load(self, policy):
        try:
            import vllm
        except ImportError:
            raise PluginError("the vllm generator needs vLLM: pip install 'selfloop[gpu]' "
                              "(on a machine with a GPU)") from None
        if has_position_offsets(policy):
            raise PluginError("the vllm generator cannot compute abacus positions; train with "
                              "[model] positions = 'learned' or use the batched generator")
        if hasattr(policy.model, "peft_config"):
            raise PluginError("the vllm generator loads full weights, and this policy trains a LoRA "
                              "adapter; use the batched generator")
        source, key = self.weights_source(policy)
        if key != self._key:
            self._release()
            self._engine = vllm.LLM(model=str(source), dtype=self.dtype,
                                    gpu_memory_utilization=self.gpu_memory_utilization)
            self._key = key
            self.loads += 1
        return self._engine

    def weights_source(self, policy) -> tuple[Path, tuple]:
        """The directory holding the policy's current weights, and the key of that version: the
        saved directory while the weights are as saved, else a fresh snapshot of them."""
        now = weights_fingerprint(policy.model)
        saved = getattr(policy.model, "selfloop_saved", None)
        if saved is not None and saved[2] == now:
            return Path(saved[0]), tuple(saved)
        if self._key is not None and self._key[0] == "snapshot" and self._key[1] == now:
            return Path(self._snapshots.name), self._key
        if self._snapshots is None:
            self._snapshots = tempfile.TemporaryDirectory(prefix="selfloop-vllm-")
        policy.model.save_pretrained(self._snapshots.name)
        policy.tokenizer.save_pretrained(self._snapshots.name)
        return Path(self._snapshots.name), ("snapshot", now)

    def _release(self) -> None:
        """Drop the engine and give its GPU memory back before the next one loads."""
        if self._engine is None:
            return
        import gc

        import torch

        self._engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, policy, prompts: Sequence[str], *, n: int = 1, temperature: float = 0.0,
                 max_new_tokens: int = 32, seed: int = 0) -> list[list[str]]:
        engine = self._load(policy)
        import vllm

        params = vllm.SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens,
                                     seed=seed)
        # Token ids as the batched generator and the trainers make them (no BOS added here).
        ids = policy.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        outputs = engine.generate([{"prompt_token_ids": one} for one in ids], params, use_tqdm=False)
        return [[c.text for c in out.outputs] for out in outputs]


@hookimpl(trylast=True)
def register_generator(register):
    register("vllm", VLLMGenerator,
             description="vLLM sampling on a GPU (extra selfloop[gpu]; reloads after every save)")
