"""A preallocated KV cache for a batch of prompts of mixed lengths, and the rows' decode state.

Each prompt length is prefilled on its own (no padding: no work on pad tokens), then the groups'
keys and values are copied, right-aligned, into one cache per layer of shape ``[rows, heads,
longest prompt + budget, head dim]``; decoding writes each new token in place (``PreallocatedLayer``:
no ``torch.cat`` of the whole cache per step, and attention sees the columns written so far) and masks each row's left padding.
Finished rows are dropped from it (``select_rows``) so later steps work on live rows only; a
slice of rows (prompts are sorted by length, and short ones end first) is a view, no copy.
For a compiled decode step the same buffers are held by ``FixedLayer``s instead (transformers'
``StaticLayer``: every step sees all columns, so shapes don't change from step to step).

Some models keep per-row state between decode steps outside the cache: the embedded model's
abacus positions (``abacus.attach_positions`` keeps the last position and digit flag of every row
on the model). That state is gathered and reordered with the cache rows (``row_state`` /
``set_row_state``). Models whose cache layers are not plain full attention (sliding windows,
linear attention) are not assembled (``plain``): the generator decodes them group by group.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer, StaticLayer

# Where abacus.attach_positions keeps each row's position state between steps.
POSITION_STATE = "_selfloop_position_state"


def plain(cache) -> bool:
    """Whether every layer of a prefilled cache is a plain full-attention ``DynamicLayer``."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.keys is not None
                                for layer in layers)


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of preallocated buffers ``[rows, heads,
    columns, head dim]`` filled up to ``length``: a new token is written in place instead of
    concatenated to the whole cache."""

    def __init__(self, keys, values, length: int):
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        self.buffers, self.length = (keys, values), length
        self._view()

    def _view(self):
        self.keys = self.buffers[0][:, :, :self.length]
        self.values = self.buffers[1][:, :, :self.length]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        self.buffers[0][:, :, self.length:end] = key_states
        self.buffers[1][:, :, self.length:end] = value_states
        self.length = end
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices) -> None:
        self.buffers = (self.buffers[0][indices], self.buffers[1][indices])
        self._view()


class FixedLayer(StaticLayer):
    """transformers' ``StaticLayer`` over given buffers holding ``length`` columns: a step writes
    at a position tensor and attention sees every column (the mask hides unwritten ones), so
    shapes stay the same from step to step (what a compiled decode step needs)."""

    def __init__(self, keys, values, length: int):
        super().__init__(max_cache_len=keys.shape[2])
        self.keys, self.values, self.device = keys, values, keys.device
        self.batch_size, self.num_heads, _, self.k_head_dim = keys.shape
        self.v_head_dim = values.shape[-1]
        self.cumulative_length = torch.tensor(length, device=keys.device)
        self.is_initialized = True

    def batch_select_indices(self, indices) -> None:
        self.keys, self.values = self.keys[indices], self.values[indices]
        self.batch_size = self.keys.shape[0]


def assemble(groups, rows: int, width: int, total: int, fixed: bool = False):
    """One cache for ``rows`` rows from prefilled ``groups``: ``(rows, source, cache, length)``.

    Group rows ``rows`` (a slice) take the cache's rows ``source`` (an index tensor, or None for
    all of them in order; copies of a prompt repeat its row) at columns ``[width - length,
    width)``; room for ``total`` columns in all; ``fixed``: ``FixedLayer``s. Returns the cache and
    the bool padding mask ``[rows, total]`` (True: a real prompt token).
    """
    first = groups[0][2].layers
    device = first[0].keys.device
    mask = torch.zeros(rows, total, dtype=torch.bool, device=device)
    layers = []
    for index, template in enumerate(first):
        keys = template.keys.new_zeros(rows, template.keys.shape[1], total, template.keys.shape[-1])
        values = template.values.new_zeros(rows, template.values.shape[1], total,
                                           template.values.shape[-1])
        for where, source, cache, length in groups:
            prefilled = cache.layers[index]
            pick = slice(None) if source is None else source
            keys[where, :, width - length:width] = prefilled.keys[pick]
            values[where, :, width - length:width] = prefilled.values[pick]
        layers.append((FixedLayer if fixed else PreallocatedLayer)(keys, values, width))
    for where, _, _, length in groups:
        mask[where, width - length:width] = True
    return Cache(layers=layers), mask


def preallocated(layers: int, rows: int, heads: int, total: int, head_dim: int, width: int,
                 dtype, device):
    """An empty cache of ``PreallocatedLayer``s ``[rows, heads, total, head_dim]`` holding ``width``
    columns, for a prefill to write into directly (``lean.LeanStep.prefill``). Zeroed: masked
    padding must hold finite values (a masked weight of 0 times a NaN is still NaN)."""
    return Cache(layers=[PreallocatedLayer(torch.zeros(rows, heads, total, head_dim, dtype=dtype, device=device),
                                           torch.zeros(rows, heads, total, head_dim, dtype=dtype, device=device),
                                           width) for _ in range(layers)])


def padding_mask(lengths, width: int, total: int):
    """The bool mask ``[rows, total]`` of right-aligned prompts of ``lengths`` ending at ``width``."""
    columns = torch.arange(total, device=lengths.device)
    return (columns >= width - lengths[:, None]) & (columns < width)


def select_rows(cache, keep) -> None:
    """Keep only the rows ``keep`` (a slice: no copy; or indices) of an assembled cache."""
    for layer in cache.layers:
        layer.batch_select_indices(keep)


def row_state(model):
    """The model's per-row decode state after its last forward, or None (it keeps none)."""
    return getattr(model, POSITION_STATE, None)


def set_row_state(model, state) -> None:
    if state is not None:
        setattr(model, POSITION_STATE, state)


def map_rows(state, fn):
    """Apply ``fn`` to every tensor of a (nested tuple) row state; None stays None."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(map_rows(part, fn) for part in state)
    return fn(state)


def concat_rows(states, pieces):
    """One row state from the groups' ``states``: group g's rows ``pieces[g]`` (index tensors, or
    None for all), in order; None when a group has none."""
    if any(state is None for state in states):
        return None
    if isinstance(states[0], tuple):
        return tuple(concat_rows([s[i] for s in states], pieces) for i in range(len(states[0])))
    return torch.cat([state if piece is None else state[piece] for state, piece in zip(states, pieces)])
