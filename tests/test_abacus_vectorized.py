"""Abacus positions are computed without a loop over columns; they match the column-by-column
definition, whole or continued under a cache."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from selfloop.plugins.model.abacus import abacus_positions, digit_mask


def column_by_column(input_ids, offset, start=None):
    """The definition: a digit after a digit is one more, a digit after anything else ``offset + 1``,
    anything else 0."""
    is_digit = digit_mask(input_ids)
    positions = torch.empty_like(input_ids)
    prev_pos, prev_digit = start if start is not None else (offset.clone(), torch.zeros_like(is_digit[:, 0]))
    for col in range(input_ids.shape[1]):
        digit = is_digit[:, col]
        pos = torch.where(digit, torch.where(prev_digit, prev_pos + 1, offset + 1), torch.zeros_like(offset))
        positions[:, col] = pos
        prev_pos, prev_digit = pos, digit
    return positions, (prev_pos, prev_digit)


def test_vectorized_positions_match_the_column_by_column_definition():
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(200):
        batch, length = rng.randint(1, 8), rng.randint(1, 30)
        ids = torch.randint(0, 20, (batch, length), generator=generator)  # ids 3..12 are digits
        offset = torch.randint(0, 20, (batch,), generator=generator)
        expected, (last, last_digit) = column_by_column(ids, offset)
        positions, (prev, prev_digit) = abacus_positions(ids, offset)
        assert torch.equal(positions, expected)
        assert torch.equal(prev, last) and torch.equal(prev_digit, last_digit)
        cut = rng.randint(1, length)  # continued from a cache's state, in two parts and token by token
        head, state = abacus_positions(ids[:, :cut], offset)
        parts = [head]
        for col in range(cut, length):
            part, state = abacus_positions(ids[:, col:col + 1], offset, start=state)
            parts.append(part)
        assert torch.equal(torch.cat(parts, 1), expected)
