"""Batched, KV-cached sampling with transformers (GRO: generation).

Prompts are sorted by token length and cut into batches of up to ``batch_size`` rows (``n``
copies of each prompt). In a batch each prompt length is prefilled on its own, once per prompt
(no padding, and copies share it); the groups' keys and values then go, right-aligned, into one
preallocated cache (``kv_cache.py``) and the whole batch decodes together, one token a step,
written in place. Rows that end are dropped from the batch once a quarter of it has ended.
A model whose cache is not plain full attention decodes each prompt length on its own instead.

For a model ``lean.py`` recognizes (Llama, Qwen2, Mistral without sliding window, stock modules),
prefill and decode steps run its lean forward instead of transformers': the same math over the
model's own weights in a handful of torch ops, the prefill writing straight into the preallocated
cache. At the embedded model's size a step is mostly per-op overhead, which this removes.

With ``compile=True`` the decode step (the stock forward for one new token a row) runs under
``torch.compile`` with dynamic shapes, against a cache of fixed shape (``kv_cache.FixedLayer``), so
dropping rows does not recompile; the prefill stays eager (the embedded model's position hook
would recompile for every prompt length). Torch keeps the compiled graphs for the process; a
failing compile warns and the batch is decoded again without it. It is off by default: the first
call compiles for 25-56 s, far more than a round's generation or an evolve sandbox process (which
would compile every time) saves, and on the benchmark (CPU, 1 thread, loaded machine) its warm
calls are no faster than the lean forward (min 0.36 s vs 0.29 s), which it replaces. Untried on
a GPU, where per-step overhead weighs more.

Tensors live on the model's device; a sequence ends at any of the model's end tokens (the
tokenizer's EOS and the generation config's, e.g. a chat model's end of turn). Greedy outputs
match transformers' ``generate`` on the left-padded batch (tests/test_plugins_generate.py);
``benchmarks/lifecycle_generation_throughput.py`` measures the speed.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence
from itertools import groupby

from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import model_device
from selfloop.core.progress import progress_bar
from selfloop.core.tunable import tunable
from selfloop.core.types import Policy

BATCH_SIZE = tunable(1024, low=16, high=8192)
DROP_SHARE = 0.25  # drop ended rows once this share of the batch's live rows has ended


class BatchedGenerator:
    """Samples ``n`` completions per prompt; ``temperature == 0`` is greedy decoding."""

    def __init__(self, batch_size: int = BATCH_SIZE, top_k: int = 0, progress: bool = True,
                 compile: bool = False):
        self.batch_size = batch_size
        self.top_k = top_k
        self.progress = progress
        self.compile = compile

    def generate(
        self, policy: Policy, prompts: Sequence[str], *, n: int = 1, temperature: float = 0.0,
        max_new_tokens: int = 32, seed: int = 0,
    ) -> list[list[str]]:
        import torch

        tokenizer, model = policy.tokenizer, policy.model
        encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        per_batch = max(1, self.batch_size // max(1, n))
        out: list[list[str]] = [[""] * n for _ in prompts]
        device = model_device(model)
        generator = torch.Generator(device=device).manual_seed(seed)
        decoder = _Decoder(model, end_token_ids(policy), max_new_tokens,
                           lambda logits: self._pick(logits, temperature, generator),
                           compiled=self.compile)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(), progress_bar(
                    f"generate {len(prompts)}×{n}", len(encoded) * n, enabled=self.progress) as advance:
                for start in range(0, len(order), per_batch):
                    batch = order[start:start + per_batch]
                    tokens = _run(decoder, [encoded[i] for i in batch], n, generator) \
                        if max_new_tokens > 0 else [[] for _ in range(len(batch) * n)]
                    texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
                    for row, text in enumerate(texts):
                        out[batch[row // n]][row % n] = text
                    advance(len(batch) * n)
        finally:
            model.train(was_training)
        return out

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


class _Decoder:
    """Decodes one batch: prompts (token ids, sorted by length), ``n`` rows each."""

    def __init__(self, model, stop, max_new_tokens, pick, compiled=False):
        import inspect

        from .lean import lean_step

        self.model, self.max_new_tokens, self.pick = model, max_new_tokens, pick
        self.step_model = compiled_step(model) if compiled else None
        self.lean = None if compiled else lean_step(model)
        self.stop = stop
        self.cache_name = _cache_keyword(model)
        try:
            parameters = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            parameters = {}
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}

    def run(self, prompts: list[list[int]], n: int) -> list[list[int]]:
        """Each row's new tokens, up to and including its end token."""
        import torch

        from . import kv_cache

        device = model_device(self.model)
        width = len(prompts[-1])
        lengths = torch.tensor([len(p) for p in prompts], device=device).repeat_interleave(n)
        if self.lean is None:
            return self._assembled(prompts, n, lengths, width)
        total = width + self.max_new_tokens
        cache = self.lean.cache(len(prompts) * n, total, width)
        logits, states, sources, start = [], [], [], 0
        for _, same in groupby(prompts, key=len):
            ids = torch.tensor(list(same), dtype=torch.long, device=device)
            source = torch.arange(len(ids), device=device).repeat_interleave(n) if n > 1 else None
            group = slice(start, start + len(ids) * n)
            step = self.lean.prefill(ids, cache, group, source, width)
            logits.append(step if source is None else step[source])
            states.append(kv_cache.row_state(self.model))
            sources.append(source)
            start = group.stop
        kv_cache.set_row_state(self.model, kv_cache.concat_rows(states, sources))
        return self._decode(torch.cat(logits), cache, kv_cache.padding_mask(lengths, width, total),
                            lengths, width)

    def _assembled(self, prompts, n, lengths, width):
        """The stock forward: each prompt length prefilled on its own, then assembled."""
        import torch
        from transformers import DynamicCache

        from . import kv_cache

        device = model_device(self.model)
        groups, logits, states, start = [], [], [], 0
        for length, same in groupby(prompts, key=len):
            ids = torch.tensor(list(same), dtype=torch.long, device=device)
            cache = DynamicCache()
            logits.append(self._forward(ids, torch.ones_like(ids, dtype=torch.bool), cache))
            rows = len(ids) * n
            source = torch.arange(len(ids), device=device).repeat_interleave(n) if n > 1 else None
            states.append(kv_cache.row_state(self.model))
            if not kv_cache.plain(cache):
                return self._by_length(prompts, n)
            groups.append((slice(start, start + rows), source, cache, length))
            start += rows
        cache, mask = kv_cache.assemble(groups, start, width, width + self.max_new_tokens,
                                        fixed=self.step_model is not None)
        kv_cache.set_row_state(self.model, kv_cache.concat_rows(states, [g[1] for g in groups]))
        logits = torch.cat([step if source is None else step[source]
                            for step, (_, source, _, _) in zip(logits, groups)])
        return self._decode(logits, cache, mask, lengths, width)

    def _decode(self, logits, cache, mask, positions, width):
        """Greedy or sampled tokens of every row, from the prompt's last logits on."""
        import torch

        from . import kv_cache

        rows = logits.shape[0]
        device = logits.device
        stop_ids = torch.tensor(self.stop, device=device)
        produced = torch.full((rows, self.max_new_tokens), self.stop[0], dtype=torch.long, device=device)
        ends = torch.full((rows,), self.max_new_tokens, dtype=torch.long, device=device)
        live = torch.arange(rows, device=device)  # which batch row each cache row is
        ended = torch.zeros(rows, dtype=torch.bool, device=device)
        for step in range(self.max_new_tokens):
            token = self.pick(logits)
            token = torch.where(ended, torch.full_like(token, self.stop[0]), token)
            produced[live, step] = token
            now = torch.isin(token, stop_ids) & ~ended
            ends[live[now]] = step + 1
            ended |= now
            done = int(ended.sum())
            if done == len(live) or step + 1 == self.max_new_tokens:
                break
            if done >= max(1, DROP_SHARE * len(live)):
                keep = _as_slice((~ended).nonzero().squeeze(1))
                kv_cache.select_rows(cache, keep)
                kv_cache.set_row_state(self.model, kv_cache.map_rows(
                    kv_cache.row_state(self.model), lambda t, keep=keep: t[keep]))
                live, mask, positions, token = live[keep], mask[keep], positions[keep], token[keep]
                ended = ended[keep]
            mask[:, width + step] = True
            if self.lean is not None:
                logits = self.lean.step(token, mask[:, :width + step + 1], cache, positions + step)
            elif self.step_model is None:
                logits = self._forward(token[:, None], mask[:, :width + step + 1], cache,
                                       (positions + step)[:, None])
            else:  # the same shapes every step: all columns, the unwritten ones masked
                logits = self._forward(token[:, None], mask, cache, (positions + step)[:, None],
                                       model=self.step_model)
        return [row[:end] for row, end in zip(produced.tolist(), ends.tolist())]

    def _forward(self, input_ids, mask, cache, position_ids=None, model=None):
        extra = dict(self.extra)
        if position_ids is not None:
            extra["position_ids"] = position_ids
        model = self.model if model is None else model
        return model(input_ids=input_ids, attention_mask=mask, use_cache=True,
                     **{self.cache_name: cache}, **extra).logits[:, -1]

    def _by_length(self, prompts, n):
        """The general path: each prompt length decoded as one batch with the model's own cache."""
        import torch
        from transformers import DynamicCache

        device = model_device(self.model)
        out = []
        for _, same in groupby(prompts, key=len):
            ids = torch.tensor([p for p in same for _ in range(n)], dtype=torch.long, device=device)
            cache = DynamicCache()
            logits = self._forward(ids, torch.ones_like(ids, dtype=torch.bool), cache)
            out += self._grow(logits, cache, ids)
        return out

    def _grow(self, logits, cache, ids):
        import torch

        stop_ids = torch.tensor(self.stop, device=ids.device)
        ended = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        produced = []
        mask = torch.ones_like(ids, dtype=torch.bool)
        for step in range(self.max_new_tokens):
            token = self.pick(logits)
            token = torch.where(ended, torch.full_like(token, self.stop[0]), token)
            produced.append(token)
            ended |= torch.isin(token, stop_ids)
            if bool(ended.all()) or step + 1 == self.max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            logits = self._forward(token[:, None], mask, cache)
        rows = torch.stack(produced, dim=1).tolist()
        return [row[:next((i + 1 for i, t in enumerate(row) if t in self.stop), len(row))]
                for row in rows]


def _run(decoder, prompts, n, generator):
    """``decoder.run``; when its compiled decode step fails, the batch again without compile (the
    sampler's state rewound) and the model is not compiled again in this process."""
    if decoder.step_model is None:
        return decoder.run(prompts, n)
    saved = generator.get_state()
    try:
        return decoder.run(prompts, n)
    except Exception as error:  # noqa: BLE001 - any compiler failure; a real error recurs below
        warnings.warn(f"compiled decoding failed ({type(error).__name__}: {error}); "
                      "decoding without torch.compile", RuntimeWarning, stacklevel=3)
        decoder.step_model = None
        generator.set_state(saved)
        tokens = decoder.run(prompts, n)
        _UNCOMPILABLE.add(decoder.model)
        return tokens


_UNCOMPILABLE: weakref.WeakSet = weakref.WeakSet()


def compiled_step(model):
    """``torch.compile`` of the model for decode steps (dynamic shapes), or None where it cannot
    be. Compiled graphs are cached by torch for the process, so later calls reuse them."""
    if model in _UNCOMPILABLE:
        return None
    try:
        import torch

        return torch.compile(model, dynamic=True)
    except Exception as error:  # noqa: BLE001 - e.g. no compiler for this platform
        warnings.warn(f"torch.compile unavailable ({error}); decoding without it", RuntimeWarning,
                      stacklevel=2)
        _UNCOMPILABLE.add(model)
        return None


def _as_slice(indices):
    """Sorted row indices as a slice when they are one run (selecting it copies nothing)."""
    first, last = int(indices[0]), int(indices[-1])
    return slice(first, last + 1) if last - first + 1 == len(indices) else indices


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
