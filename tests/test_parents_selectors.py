"""Parent selectors: the DGM probabilities, and the random, best and latest baselines."""

import math
import random
from collections import Counter

import pytest
from selfloop.core.registry import load_registry
from selfloop.core.types import VariantSummary


def summary(i, score, children=0, admitted=True):
    return VariantSummary(id=f"v{i}", parent=None, score=score, children=children, created=float(i),
                          admitted=admitted)


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


def test_dgm_weights_follow_sigmoid_over_children(registry):
    dgm = registry.create("parent_selector", "dgm", {"sharpness": 10, "midpoint": 0.5})
    variants = [summary(0, 0.5, children=0), summary(1, 0.7, children=3), summary(2, 0.9, children=1),
                summary(3, None), summary(4, 0.99, admitted=False)]
    weights = dgm.weights(variants)
    assert set(weights) == {"v0", "v1", "v2"}  # unscored and rejected variants are never parents
    sig = lambda s: 1 / (1 + math.exp(-10 * (s - 0.5)))
    assert weights["v0"] == pytest.approx(0.5)
    assert weights["v1"] == pytest.approx(sig(0.7) / 4)
    assert weights["v2"] == pytest.approx(sig(0.9) / 2)


def test_dgm_sampling_matches_its_probabilities(registry):
    dgm = registry.create("parent_selector", "dgm", {})
    variants = [summary(0, 0.2), summary(1, 0.8, children=1), summary(2, 0.8)]
    weights = dgm.weights(variants)
    total = sum(weights.values())
    draws = Counter(dgm.choose(variants, 20000, random.Random(0)))
    for vid, w in weights.items():
        assert draws[vid] / 20000 == pytest.approx(w / total, abs=0.02)


def test_dgm_midpoint_and_sharpness_are_options(registry):
    flat = registry.create("parent_selector", "dgm", {"sharpness": 0.0})
    weights = flat.weights([summary(0, 0.1), summary(1, 0.9)])
    assert weights["v0"] == weights["v1"]


def test_baselines(registry):
    variants = [summary(0, 0.3), summary(1, 0.9), summary(2, 0.5), summary(3, 1.0, admitted=False)]
    rng = random.Random(1)
    assert registry.create("parent_selector", "best", {}).choose(variants, 2, rng) == ["v1", "v2"]
    assert registry.create("parent_selector", "latest", {}).choose(variants, 2, rng) == ["v2", "v1"]
    picks = registry.create("parent_selector", "random", {}).choose(variants, 300, rng)
    assert set(picks) == {"v0", "v1", "v2"}


@pytest.mark.parametrize("name", ["dgm", "random", "best", "latest"])
def test_empty_archive_gives_no_parent(registry, name):
    assert registry.create("parent_selector", name, {}).choose([], 3, random.Random(0)) == []
