"""Parent selectors: the DGM probabilities, HGM's Thompson sampling over clades, and the random, best and latest baselines."""

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


@pytest.mark.parametrize("name", ["dgm", "hgm", "random", "best", "latest"])
def test_empty_archive_gives_no_parent(registry, name):
    assert registry.create("parent_selector", name, {}).choose([], 3, random.Random(0)) == []


# --- hgm: Thompson sampling over clades ----------------------------------------------------------


def node(vid, parent, score, children=0, admitted=True):
    return VariantSummary(id=vid, parent=parent, score=score, children=children,
                          created=float(vid[1:]), admitted=admitted)


def tree():
    """v0 (seed) ─┬─ v1 (beats v0) ─┬─ v3 (below v1)
                  │                 ├─ v4 (beats v1)
                  │                 └─ one child not given (rejected, left out of the summaries)
                  └─ v2 (below v0) ─── v5 (rejected, given)"""
    return [node("v0", None, 0.5, children=2), node("v1", "v0", 0.6, children=3),
            node("v2", "v0", 0.4, children=1), node("v3", "v1", 0.55), node("v4", "v1", 0.7),
            node("v5", "v2", None, admitted=False)]


def test_hgm_aggregates_improvements_over_each_clade(registry):
    hgm = registry.create("parent_selector", "hgm", {})
    clades = hgm.clades(tree())
    as_tuple = {vid: (c.successes, c.failures, c.members) for vid, c in clades.items()}
    assert as_tuple == {
        "v4": (1, 0, 1), "v3": (0, 1, 1), "v5": (0, 1, 1),
        "v1": (2, 2, 4),  # itself, v3, v4 and the unseen rejected child
        "v2": (0, 2, 2),  # itself (below v0) and its rejected child
        "v0": (2, 4, 7),  # the seed has no parent to beat: only its descendants count
    }
    assert hgm.posterior(clades["v1"]) == (3.0, 3.0)
    hgm.choose(tree(), 10, random.Random(0))
    assert hgm.clades(tree()) == clades  # aggregating leaves every variant's own outcome as it was


def test_hgm_score_outcome_is_a_fractional_update(registry):
    hgm = registry.create("parent_selector", "hgm", {"outcome": "score", "prior_successes": 2})
    clades = hgm.clades(tree())
    assert clades["v4"].successes == pytest.approx(0.7) and clades["v4"].failures == pytest.approx(0.3)
    assert clades["v1"].successes == pytest.approx(0.6 + 0.55 + 0.7)
    assert clades["v1"].failures == pytest.approx(0.4 + 0.45 + 0.3 + 1)  # the unseen child failed
    assert clades["v0"].successes == pytest.approx(0.5 + 1.85 + 0.4)
    assert hgm.posterior(clades["v4"]) == pytest.approx((2.7, 1.3))


def test_hgm_margin_decides_what_beats_the_parent(registry):
    strict = registry.create("parent_selector", "hgm", {"margin": 0.15})
    clades = strict.clades(tree())
    assert (clades["v4"].successes, clades["v1"].successes) == (0, 0)  # +0.1 each: not enough


def prolific_and_barren():
    """Two clades of the same size under the seed: every member of v1's beat its parent, every
    member of v2's fell below it (and v2 had two more, rejected, children)."""
    variants = [node("v0", None, 0.5, children=2), node("v1", "v0", 0.55, children=3),
                node("v2", "v0", 0.55, children=5)]
    variants += [node(f"v{i}", "v1", 0.56 + 0.01 * i) for i in (3, 4, 5)]
    variants += [node(f"v{i}", "v2", 0.5) for i in (6, 7, 8)]
    return variants


def test_hgm_prefers_the_clade_that_keeps_improving(registry):
    hgm = registry.create("parent_selector", "hgm", {})
    variants = prolific_and_barren()
    picks = Counter()
    for seed in range(400):
        picks.update(hgm.choose(variants, 5, random.Random(seed)))
    prolific = sum(picks[v] for v in ("v1", "v3", "v4", "v5"))
    barren = sum(picks[v] for v in ("v2", "v6", "v7", "v8"))
    assert prolific + barren + picks["v0"] == 2000
    assert prolific > 3 * barren
    assert picks["v1"] > 5 * picks["v2"]  # the same score, different descendants
    # Each pick is the argmax of independent Beta draws: its rate matches a direct simulation.
    clades = hgm.clades(variants)
    rng = random.Random(12345)
    wins = Counter()
    for _ in range(4000):
        theta = {v.id: rng.betavariate(*hgm.posterior(clades[v.id])) for v in variants}
        wins[max(theta, key=theta.get)] += 1
    assert picks["v1"] / 2000 == pytest.approx(wins["v1"] / 4000, abs=0.04)


def test_hgm_is_deterministic_for_a_given_rng(registry):
    hgm = registry.create("parent_selector", "hgm", {})
    variants = prolific_and_barren()
    runs = [tuple(hgm.choose(variants, 6, random.Random(seed))) for seed in (7, 7, 8)]
    assert runs[0] == runs[1]
    shuffled = list(reversed(variants))  # the order the summaries come in does not matter
    assert tuple(hgm.choose(shuffled, 6, random.Random(7))) == runs[0]
    assert len({p for run in [hgm.choose(variants, 6, random.Random(s)) for s in range(20)] for p in run}) > 2


def test_hgm_never_chooses_rejected_or_unscored_variants(registry):
    hgm = registry.create("parent_selector", "hgm", {})
    variants = [node("v0", None, 0.2, children=3), node("v1", "v0", 0.99, admitted=False),
                node("v2", "v0", None, admitted=False), node("v3", "v0", None), node("v4", "v0", 0.3)]
    picks = set(hgm.choose(variants, 500, random.Random(3)))
    assert picks == {"v0", "v4"}
    assert hgm.clades(variants)["v0"].failures == 3  # v1, v2 rejected; v3 unscored


@pytest.mark.parametrize("count", [0, 1, 4, 17])
def test_hgm_returns_exactly_count_parents(registry, count):
    hgm = registry.create("parent_selector", "hgm", {})
    assert len(hgm.choose(tree(), count, random.Random(0))) == count


def test_hgm_with_only_the_seed(registry):
    hgm = registry.create("parent_selector", "hgm", {})
    assert hgm.choose([node("v0", None, 0.4)], 3, random.Random(0)) == ["v0", "v0", "v0"]
    # A seed in a later round: its source (another round's variant) is not among those given.
    assert hgm.choose([node("v9", "v0", 0.4, children=2)], 2, random.Random(0)) == ["v9", "v9"]


def test_hgm_options_are_checked(registry):
    from selfloop.core.errors import SelfloopError

    for bad in ({"outcome": "mean"}, {"prior_failures": 0}, {"alpha": 1}):
        with pytest.raises(SelfloopError):
            registry.create("parent_selector", "hgm", bad)
    assert "Thompson" in registry.get("parent_selector", "hgm").description


def test_hgm_counts_rejected_children_from_a_real_archive(registry, tmp_path):
    from selfloop.archive import Archive

    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "__init__.py").write_text("")
    archive = Archive.init(tmp_path / "A", seed, meta={"scores": {"score": 0.4}})
    try:
        better = archive.add(parent="v0", files={"__init__.py": "# a\n"}, meta={"scores": {"score": 0.5}})
        archive.add(parent="v0", files={"__init__.py": "# b\n"}, meta={"scores": {"score": 0.1}}, status="rejected")
        archive.add(parent=better, files={"__init__.py": "# c\n"}, meta={"scores": {"score": 0.9}},
                    status="rejected")
        summaries = archive.summaries()  # what `selfloop evolve` hands the selector: admitted only
        assert {s.id for s in summaries} == {"v0", better}
        clades = registry.create("parent_selector", "hgm", {}).clades(summaries)
        assert (clades[better].successes, clades[better].failures) == (1, 1)
        assert (clades["v0"].successes, clades["v0"].failures, clades["v0"].members) == (1, 2, 4)
    finally:
        archive.close()


@pytest.mark.slow
def test_hgm_drives_the_meta_loop(tmp_path):
    """`selfloop evolve`'s loop with hgm: what the archive hands it is enough to choose every parent."""
    from evolve_fixtures import CopyTrainer, make_checkpoint, make_config, make_surface
    from selfloop.core.evolve import Evolution
    from selfloop.sandbox import choose_backend

    surface = make_surface(tmp_path / "surface")
    ckpt = make_checkpoint(tmp_path / "ckpt")
    loop_registry = load_registry([surface])
    config = make_config(iterations=3, workers=1)
    evo = Evolution(config, archive_path=tmp_path / "A", out=tmp_path / "A.run",
                    sandbox=choose_backend(config.sandbox), registry=loop_registry,
                    trainer=lambda config: CopyTrainer(ckpt),
                    proposer=loop_registry.create("proposer", "mutation", {}),
                    parent_selector=loop_registry.create("parent_selector", "hgm", {}), seed_dir=surface)
    evo.run()
    variants = {v.id: v for v in evo.archive.list()}
    assert len(variants) == 4
    for v in list(variants.values())[1:]:  # each child's parent was admitted and scored before it
        parent = variants[v.parent]
        assert parent.admitted and parent.scores.get("score") is not None and parent.created <= v.created
