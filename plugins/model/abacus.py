"""Abacus positions (McLeish et al. 2024), the embedded model's position scheme.

Every digit gets the index it has inside its own number, plus an offset; every other character
gets position 0. The i-th digit of both operands and the (i-1)-th digit of the answer then share a
position, wherever they are in the text, so "add the digits at my position" is one rule for every
length. Llama feeds these ids to its rotary embeddings, so attention depends only on differences
of ids and the rule needs no position it has not seen. While training, the offset is drawn at
random per sequence (up to ``selfloop_max_position_offset``): digits move away from the characters
at 0, so the model cannot count digits by their distance to "+" or "=", which is what breaks at
lengths past the trained ones. ``embedded.py`` has the measurements.

The scheme lives in the model: ``attach_positions`` installs a forward pre-hook that computes the
position ids from the input ids (also step by step under a KV cache), so ``model(...)``, its
``generate()``, and TRL's trainers all see the same positions without knowing about them. The
scheme is saved in the model's config (``selfloop_positions``); the embedded provider's ``load``
reattaches the hook.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from selfloop.core.errors import CheckpointError
from selfloop.core.models import greedy_answers

# The embedded vocabulary's layout: PAD, EOS, UNK, then "0".."9" (embedded.build_tokenizer checks it).
FIRST_DIGIT_ID = 3
POSITION_SCHEMES = ("abacus", "learned")


def digit_mask(input_ids, tokenizer=None) -> Any:
    """A bool tensor: which ids are digits (ids of "0".."9" are contiguous in the vocabulary)."""
    zero = tokenizer.convert_tokens_to_ids("0") if tokenizer is not None else FIRST_DIGIT_ID
    return (input_ids >= zero) & (input_ids < zero + 10)


def abacus_positions(input_ids, offset, start=None):
    """Position ids: each digit's 1-based index in its number, plus ``offset``; others 0.

    ``start`` continues a sequence (under a KV cache): the position and digit flag of the token
    before ``input_ids``. Returns the ids and the state to continue from.
    """
    import torch

    is_digit = digit_mask(input_ids, None)
    columns = torch.arange(input_ids.shape[1], device=input_ids.device)
    # A digit's index in its number is its distance to the last non-digit before it (-1: none).
    last_break = torch.where(is_digit, -1, columns).cummax(dim=1).values
    base = offset[:, None].expand_as(input_ids)
    if start is not None:  # the number the previous token was in goes on in the first columns
        prev_pos, prev_digit = start
        base = torch.where((last_break < 0) & prev_digit[:, None], prev_pos[:, None], base)
    positions = torch.where(is_digit, base + (columns - last_break), 0)
    return positions, (positions[:, -1], is_digit[:, -1])


def attach_positions(model) -> None:
    """Install the model's position scheme as a forward pre-hook (idempotent)."""
    if getattr(model.config, "selfloop_positions", "learned") != "abacus":
        return
    if getattr(model, "_selfloop_positions_hook", None) is not None:
        return
    # Trainers may lower this for a while (a curriculum: positions first, then offsets).
    model.selfloop_max_offset = int(getattr(model.config, "selfloop_max_position_offset", 0))
    model.selfloop_inference_offset = int(getattr(model.config, "selfloop_inference_offset", 0))
    limit = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings

    def hook(module, args, kwargs):
        import torch

        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            return None
        past = kwargs.get("past_key_values", kwargs.get("cache"))  # generate() passes it as ``cache``
        continuing = past is not None and past.get_seq_length() > 0
        state = getattr(module, "_selfloop_position_state", None)
        if continuing and state is not None and state[0].shape[0] == input_ids.shape[0]:
            offset, prev = state
            positions, prev = abacus_positions(input_ids, offset, start=prev)
        else:
            batch = input_ids.shape[0]
            # Outside training the offset is the model's inference offset (see position_offset).
            offset = torch.full((batch,), getattr(module, "selfloop_inference_offset", 0),
                                dtype=torch.long, device=input_ids.device)
            max_offset = getattr(module, "selfloop_max_offset", 0)
            if module.training and max_offset > 0:
                longest_run = _longest_digit_run(input_ids)
                room = max(0, min(max_offset, limit - longest_run - 2))
                offset = torch.randint(0, room + 1, (batch,), device=input_ids.device)
            positions, prev = abacus_positions(input_ids, offset)
        if int(positions.max()) >= limit:
            raise CheckpointError(f"a number is too long for the model: position "
                                  f"{int(positions.max())} >= {limit} (model.max_positions)")
        module._selfloop_position_state = (offset, prev)
        kwargs = dict(kwargs)
        kwargs["position_ids"] = positions
        if kwargs.get("attention_mask") is None and len(args) <= 1 and not continuing:
            # Without a mask, transformers reads position ids that restart (at every non-digit) as
            # packed sequences, and each token would attend only within its own number.
            kwargs["attention_mask"] = torch.ones_like(input_ids)
        if args:
            kwargs["input_ids"] = args[0]
            args = args[1:]
        return args, kwargs

    # Computed eagerly even inside a compiled forward: its data-dependent checks would break the
    # graph, and its shapes would recompile it per length.
    import torch

    model._selfloop_positions_hook = model.register_forward_pre_hook(torch.compiler.disable(hook),
                                                                     with_kwargs=True)


def has_position_offsets(policy) -> bool:
    """Whether the policy's positions take an offset (abacus positions computed by the hook)."""
    model = getattr(policy, "model", None)
    return getattr(model, "_selfloop_positions_hook", None) is not None


@contextmanager
def position_offset(policy, offset: int):
    """Answer with the policy's abacus positions at ``offset``: another view of the same model.

    A model trained at random offsets answers at every offset, but not with the same mistakes
    (measured here at 7 digits: 17% to 86% exact match from one offset to another), so answers
    that agree across several offsets are more often right: a vote with no second model to train.
    """
    model = policy.model
    if not has_position_offsets(policy):
        raise ValueError("position offsets need a model with abacus positions")
    saved = model.selfloop_inference_offset
    model.selfloop_inference_offset = offset
    try:
        yield policy
    finally:
        model.selfloop_inference_offset = saved



def greedy_across_offsets(policy, generator, prompts, *, views: int, spacing: int,
                          max_new_tokens: int, seed: int = 0) -> list[list[str]]:
    """Each prompt's greedy answers at offsets 0, ``spacing``, ... (``views`` of them); no answers
    when the policy's positions take no offset (a view would only repeat the greedy answer)."""
    answers: list[list[str]] = [[] for _ in prompts]
    if views <= 0 or not has_position_offsets(policy):
        return answers
    for view in range(views):
        with position_offset(policy, view * spacing):
            greedy = greedy_answers(policy, generator, prompts, max_new_tokens=max_new_tokens, seed=seed)
        for answer, one in zip(answers, greedy):
            answer.append(one)
    return answers


def _longest_digit_run(input_ids) -> int:
    positions, _ = abacus_positions(input_ids, input_ids.new_zeros(input_ids.shape[0]))
    return int(positions.max())
