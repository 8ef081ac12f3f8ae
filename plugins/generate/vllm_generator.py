"""Generation with vLLM on a GPU (optional extra ``selfloop[gpu]``, imported only when used).

The policy must be saved as a model directory (``policy.path``) with the architecture's own
positions (``model.positions = "learned"``): vLLM computes positions itself, so the embedded
model's abacus positions are not available there.
"""

from __future__ import annotations

from collections.abc import Sequence

from selfloop.core.errors import PluginError
from selfloop.core.hookspecs import hookimpl


class VLLMGenerator:
    """Samples with ``vllm.LLM`` loaded from the policy's directory (reloaded when it changes)."""

    def __init__(self, gpu_memory_utilization: float = 0.5, dtype: str = "auto"):
        self.gpu_memory_utilization, self.dtype = gpu_memory_utilization, dtype
        self._engine, self._path = None, None

    def _load(self, policy):
        try:
            import vllm
        except ImportError:
            raise PluginError("the vllm generator needs vLLM: pip install 'selfloop[gpu]' "
                              "(on a machine with a GPU)") from None
        if getattr(policy.model.config, "selfloop_positions", "learned") == "abacus":
            raise PluginError("the vllm generator cannot compute abacus positions; train with "
                              "model.positions = 'learned' or use the batched generator")
        if policy.path is None:
            raise PluginError("the vllm generator loads the policy from disk: save it first")
        if self._path != policy.path:
            self._engine = vllm.LLM(model=str(policy.path), dtype=self.dtype,
                                    gpu_memory_utilization=self.gpu_memory_utilization)
            self._path = policy.path
        return self._engine

    def generate(self, policy, prompts: Sequence[str], *, n: int = 1, temperature: float = 0.0,
                 max_new_tokens: int = 32, seed: int = 0) -> list[list[str]]:
        engine = self._load(policy)
        import vllm

        params = vllm.SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens,
                                     seed=seed)
        outputs = engine.generate(list(prompts), params, use_tqdm=False)
        return [[c.text for c in out.outputs] for out in outputs]


@hookimpl(trylast=True)
def register_generator(register):
    register("vllm", VLLMGenerator,
             description="vLLM sampling on a GPU (extra selfloop[gpu]; learned positions only)")
