"""A lean forward for Llama-family models (Llama, Qwen2, Mistral without sliding window).

At the embedded model's size (0.8M parameters) a forward is mostly per-op overhead: transformers
builds masks and rotary tables, calls dozens of modules and checks its arguments on every call,
and SDPA's CPU kernels are slow on one-query shapes. ``LeanStep`` computes the same math over the
model's own weights (no copies) in a short list of torch ops, writing keys and values straight
into a preallocated cache (``kv_cache.preallocated``): a prefill of one prompt length, then decode
steps of one token a row. Its logits equal the stock forward's up to float rounding
(tests/test_plugins_generate_lean.py). ``lean_step`` returns one only for a model it recognizes
exactly (architecture, SDPA attention, SiLU MLP, static rotary, stock modules, no hooks but the
abacus one); anything else (GPT-2, sliding windows, adapters, quantized or offloaded layers,
other attention kernels) keeps the stock forward.

The embedded model's abacus positions come from its own forward pre-hook (``abacus.attach_positions``:
``abacus_positions`` with the per-row state it keeps on the model), called as the model's forward
calls it, so positions and their checks cannot drift from the stock path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kv_cache

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq fixed: no dynamic_rope_update


def lean_step(model) -> LeanStep | None:
    """A ``LeanStep`` for ``model`` when it is exactly a model this file mirrors, else None."""
    try:
        return LeanStep(model) if _recognized(model) else None
    except AttributeError:  # a recognized name with an unexpected layout
        return None


def _recognized(model) -> bool:
    config = model.config
    if type(model).__name__ not in ARCHITECTURES or \
            not type(model).__module__.startswith("transformers.models."):
        return False
    if getattr(config, "_attn_implementation", None) != "sdpa" or config.hidden_act != "silu":
        return False
    # Sliding windows: Qwen2 marks them in layer_types, Mistral by a window size.
    if any(t != "full_attention" for t in getattr(config, "layer_types", None) or ()) or \
            (type(model).__name__ == "MistralForCausalLM" and config.sliding_window is not None):
        return False
    rotary = model.model.rotary_emb
    if getattr(rotary, "rope_type", "default") not in STATIC_ROPE:
        return False
    # Hooks could change what a module computes: only the abacus positions hook is understood.
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return False
    positions_hook = getattr(model, "_selfloop_positions_hook", None)
    for module in model.modules():
        pre = len(module._forward_pre_hooks)
        if module._forward_hooks or "forward" in vars(module) or hasattr(module, "_hf_hook") or \
                (pre and (module is not model or positions_hook is None or pre > 1)):
            return False
    linears = [model.lm_head] + [m for layer in model.model.layers
                                 for m in (layer.self_attn.q_proj, layer.self_attn.k_proj,
                                           layer.self_attn.v_proj, layer.self_attn.o_proj,
                                           layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)]
    norms = [model.model.norm] + [n for layer in model.model.layers
                                  for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    return (all(type(m) is nn.Linear for m in linears)
            and type(model.model.embed_tokens) is nn.Embedding
            and all(type(n).__name__.endswith("RMSNorm") and hasattr(n, "variance_epsilon")
                    and type(n).__module__ == type(model).__module__ for n in norms))


class LeanStep:
    """The forward of a recognized model over a preallocated cache (``kv_cache.preallocated``).

    ``prefill`` runs one prompt length's prompts and writes their keys and values into rows of
    the cache (copies of a prompt share its prefill); ``step`` runs one new token a row for all
    rows. Both return the last position's logits ``[rows, vocab]``.
    """

    def __init__(self, model):
        self.model, config = model, model.config
        inner = model.model
        self.embed, self.norm, self.head = inner.embed_tokens, inner.norm, model.lm_head
        self.layers = inner.layers[:config.num_hidden_layers]
        attention = self.layers[0].self_attn
        self.head_dim, self.scaling = attention.head_dim, attention.scaling
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.inv_freq = inner.rotary_emb.inv_freq.float()
        self.rope_scaling = inner.rotary_emb.attention_scaling
        self.dtype = self.embed.weight.dtype
        # The embedded model's abacus positions: its own pre-hook computes them (and keeps the
        # rows' state on the model), called as the model's forward would call it.
        self.positions_hook = getattr(model, "_selfloop_positions_hook", None) and \
            next(iter(model._forward_pre_hooks.values()))

    def cache(self, rows: int, total: int, width: int):
        """An empty preallocated cache: ``rows`` rows, room for ``total`` columns, of which the
        prompts fill ``[width - length, width)``."""
        weight = self.layers[0].self_attn.k_proj.weight
        return kv_cache.preallocated(len(self.layers), rows, self.kv_heads, total, self.head_dim,
                                     width, weight.dtype, weight.device)

    def prefill(self, ids, cache, rows: slice, source, width: int):
        """Prompts ``ids [prompts, length]`` (no padding) into cache rows ``rows`` (``source``:
        which prompt each row copies, or None for one row each) at columns ending at ``width``."""
        positions = self._positions(ids, None, torch.arange(ids.shape[1], device=ids.device)[None])

        causal = torch.full((ids.shape[1],) * 2, float("-inf"), dtype=self.dtype, device=ids.device).triu(1)

        def attend(index, q, k, v):
            keys, values = cache.layers[index].buffers
            pick = slice(None) if source is None else source
            keys[rows, :, width - k.shape[2]:width] = k[pick]
            values[rows, :, width - v.shape[2]:width] = v[pick]
            return self._attention(q, k, v, causal if q.shape[2] > 1 else None)

        return self._forward(ids, positions, attend)

    def step(self, tokens, mask, cache, positions):
        """One token a row: ``tokens [rows]`` at ``positions [rows]``; ``mask [rows, columns]``
        (bool) covers the columns written so far and this one."""
        positions = self._positions(tokens[:, None], cache, positions[:, None])
        bias = torch.zeros(mask.shape, dtype=self.dtype, device=mask.device)
        bias = bias.masked_fill_(~mask, float("-inf"))[:, None, None]  # [rows, 1, 1, columns]

        def attend(index, q, k, v):
            keys, values = cache.layers[index].update(k, v, index)
            return self._attention(q, keys, values, bias)

        return self._forward(tokens[:, None], positions, attend)

    def _attention(self, q, keys, values, bias):
        """Softmax attention as two matmuls: on the small shapes here they beat SDPA's CPU kernels
        (which transformers uses; equal up to float rounding). For grouped-query attention the
        query heads are packed onto their key/value head (as transformers does for one query)."""
        rows, _, length, _ = q.shape
        groups = self.heads // self.kv_heads
        q = q.reshape(rows, self.kv_heads, groups * length, self.head_dim)
        if bias is not None and groups > 1 and length > 1:
            bias = bias.repeat(1, 1, groups, 1) if bias.dim() == 4 else bias.repeat(groups, 1)
        scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.scaling)
        if bias is not None:
            scores += bias
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)  # as eager does
        out = torch.matmul(weights, values)
        return out.view(rows, self.heads, length, self.head_dim)

    def _positions(self, ids, cache, default):
        if self.positions_hook is None:
            return default.expand(ids.shape[0], -1)
        _, kwargs = self.positions_hook(self.model, (), {"input_ids": ids, "past_key_values": cache})
        return kwargs["position_ids"]

    def _forward(self, ids, positions, attend):
        """The model's forward (``attend`` writes the cache and attends); the last layer goes on
        past its keys and values for the last position only (the only logits kept)."""
        x = self.embed(ids)  # [rows, length, hidden]
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scaling).to(x.dtype)[:, None]  # [rows, 1, length, head dim]
        sin = (emb.sin() * self.rope_scaling).to(x.dtype)[:, None]
        half = self.head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)  # rotate_half's sign, see _rope
        rows, length = ids.shape
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            h = _rms(layer.input_layernorm, x)
            q = _rope(_heads(attention.q_proj(h), self.head_dim), cos, sin)
            k = _rope(_heads(attention.k_proj(h), self.head_dim), cos, sin)
            v = _heads(attention.v_proj(h), self.head_dim)
            if index == len(self.layers) - 1 and length > 1:
                q, x, length = q[:, :, -1:], x[:, -1:], 1
            out = attend(index, q, k, v).transpose(1, 2).reshape(rows, length, -1)
            x = x + attention.o_proj(out)
            h = _rms(layer.post_attention_layernorm, x)
            mlp = layer.mlp
            gate = F.silu(mlp.gate_proj(h), inplace=True)
            x += mlp.down_proj(gate.mul_(mlp.up_proj(h)))
        return self.head(_rms(self.norm, x[:, -1]))


def _heads(x, head_dim):
    """``[rows, length, heads × head dim]`` -> ``[rows, heads, length, head dim]``."""
    return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)


def _rms(norm, x):
    """transformers' ``LlamaRMSNorm`` (Qwen2's and Mistral's are the same); in float32 torch's
    fused ``rms_norm`` computes the same."""
    if x.dtype == torch.float32 and norm.weight.dtype == torch.float32:
        return F.rms_norm(x, x.shape[-1:], norm.weight, norm.variance_epsilon)
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x.to(dtype)


def _rope(x, cos, sin):
    """``x * cos + rotate_half(x) * sin`` with rotate_half's negation moved into ``sin`` (exact):
    one roll instead of two slices, a negation and a cat."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin
