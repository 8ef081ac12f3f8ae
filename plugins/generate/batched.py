"""Batched, KV-cached sampling with transformers (GRO: generation).

Prompts are grouped by token length so a batch needs no padding, each group is run as one batch
(``n`` copies of each prompt), and every step feeds only the newest token against the cache.
Tensors live on the model's device; a sequence ends at any of the model's end tokens (the
tokenizer's EOS and the generation config's, e.g. a chat model's end of turn).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import model_device
from selfloop.core.progress import progress_bar
from selfloop.core.tunable import tunable
from selfloop.core.types import Policy

BATCH_SIZE = tunable(1024, low=16, high=8192)


class BatchedGenerator:
    """Samples ``n`` completions per prompt; ``temperature == 0`` is greedy decoding."""

    def __init__(self, batch_size: int = BATCH_SIZE, top_k: int = 0, progress: bool = True):
        self.batch_size = batch_size
        self.top_k = top_k
        self.progress = progress

    def generate(
        self, policy: Policy, prompts: Sequence[str], *, n: int = 1, temperature: float = 0.0,
        max_new_tokens: int = 32, seed: int = 0,
    ) -> list[list[str]]:
        import torch

        tokenizer, model = policy.tokenizer, policy.model
        encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, ids in enumerate(encoded):
            by_length[len(ids)].append(index)
        rows = [(index, copy) for length in sorted(by_length) for index in by_length[length]
                for copy in range(n)]
        out: list[list[str]] = [[""] * n for _ in prompts]
        device = model_device(model)
        stop = end_token_ids(policy)
        generator = torch.Generator(device=device).manual_seed(seed)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(), progress_bar(
                    f"generate {len(prompts)}×{n}", len(rows), enabled=self.progress) as advance:
                start = 0
                while start < len(rows):
                    length = len(encoded[rows[start][0]])
                    batch = []
                    while (start < len(rows) and len(batch) < self.batch_size
                           and len(encoded[rows[start][0]]) == length):
                        batch.append(rows[start])
                        start += 1
                    input_ids = torch.tensor([encoded[i] for i, _ in batch], dtype=torch.long,
                                             device=device)
                    new_tokens = self._decode(model, input_ids, stop, temperature,
                                              max_new_tokens, generator)
                    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                    for (index, copy), text in zip(batch, texts):
                        out[index][copy] = text
                    advance(len(batch))
        finally:
            model.train(was_training)
        return out

    def _decode(self, model, input_ids, stop, temperature, max_new_tokens, generator):
        import torch
        from transformers import DynamicCache

        cache = DynamicCache()
        cache_name = _cache_keyword(model)
        batch = input_ids.shape[0]
        eos_id = stop[0]
        stop_ids = torch.tensor(stop, device=input_ids.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        produced = []
        step_input = input_ids
        for _ in range(max_new_tokens):
            logits = model(input_ids=step_input, use_cache=True, **{cache_name: cache}).logits[:, -1]
            token = self._pick(logits, temperature, generator)
            token = torch.where(finished, torch.full_like(token, eos_id), token)
            produced.append(token)
            finished |= torch.isin(token, stop_ids)
            if bool(finished.all()):
                break
            step_input = token[:, None]
        return torch.stack(produced, dim=1) if produced else input_ids[:, :0]

    def _pick(self, logits, temperature, generator):
        import torch

        if temperature <= 0:
            return logits.argmax(dim=-1)
        logits = logits.float() / temperature
        if self.top_k > 0:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _cache_keyword(model) -> str:
    """The name the model's forward takes its KV cache under (transformers 5: ``cache``)."""
    import inspect

    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in parameters else "past_key_values"


def end_token_ids(policy) -> list[int]:
    """The ids that end a completion: the tokenizer's EOS first, then the generation config's."""
    ids = [policy.tokenizer.eos_token_id]
    config = getattr(policy.model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    ids += extra if isinstance(extra, list) else [extra]
    return list(dict.fromkeys(i for i in ids if i is not None))


@hookimpl(trylast=True)
def register_generator(register):
    register("batched", BatchedGenerator,
             description="batched KV-cached sampling with transformers (groups prompts by length)")
