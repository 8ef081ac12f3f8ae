"""The judge's statistics: variances that never vanish, a bootstrap for F, sizes that scale."""

from __future__ import annotations

import math

import pytest
from selfloop.core.significance import (
    Noise,
    Outcomes,
    SelectionOutcome,
    add_one_variance,
    compare,
    f_beta,
    noise,
)


def selection(right_kept: int, wrong_kept: int, right_dropped: int, wrong_dropped: int) -> list[SelectionOutcome]:
    return ([SelectionOutcome(True, True, True)] * right_kept + [SelectionOutcome(False, True, False)] * wrong_kept
            + [SelectionOutcome(True, False, False)] * right_dropped
            + [SelectionOutcome(False, False, False)] * wrong_dropped)


def test_add_one_variance_is_never_zero():
    assert add_one_variance(128, 128) == pytest.approx((129 / 130) * (1 / 130))
    assert add_one_variance(0, 128) == pytest.approx(add_one_variance(128, 128))
    assert add_one_variance(50, 100) == pytest.approx(0.25)


def test_f_beta_matches_the_hand_computation():
    outcomes = selection(6, 2, 6, 10)  # precision 6/8, recall 6/12
    assert f_beta(outcomes, 0.5) == pytest.approx(1.25 * 0.75 * 0.5 / (0.25 * 0.75 + 0.5))
    assert f_beta(selection(0, 0, 5, 5), 0.5) == 0.0


def test_selection_noise_is_larger_where_few_labels_are_right():
    many = noise(Outcomes(refine=[True] * 50 + [False] * 50, select=selection(80, 5, 10, 5)), 0.5)
    few = noise(Outcomes(refine=[True] * 50 + [False] * 50, select=selection(8, 5, 10, 77)), 0.5)
    assert few.select > many.select > 0
    assert many.refine == pytest.approx(0.25)


def test_variance_scales_with_the_set_sizes():
    n = Noise(refine=0.25, select=0.4)
    assert n.variance(100, 100, 0.5) == pytest.approx(0.25 * 0.25 / 100 + 0.25 * 0.4 / 100)
    assert n.variance(50, 25, 0.5) == pytest.approx(2 * 0.25 * 0.25 / 100 + 4 * 0.25 * 0.4 / 100)


def test_the_cliff_gap_is_noise_and_a_gamed_gap_is_not():
    # The main job's crash: visible 0.442 against held-out 0.273 at a cliff, on 192 + 128 visible and
    # 384 + 256 held-out problems, with few right self-labels (F noisy).
    held = noise(Outcomes(refine=[True] * 96 + [False] * 288, select=selection(20, 12, 20, 204)), 0.5)
    visible_var, held_var = held.variance(192, 128, 0.5), held.variance(384, 256, 0.5)
    assert not compare(0.442, visible_var, 0.273, held_var).significant
    assert compare(0.95, visible_var, 0.273, held_var).significant


def test_compare_reports_the_margin():
    c = compare(0.6, 0.0004, 0.5, 0.0005, z=3.0)
    assert c.margin == pytest.approx(3 * math.sqrt(0.0009)) and c.significant
    assert "+0.100" in c.describe() and "z=3" in c.describe()


def test_the_judge_secret_is_made_once_private_and_kept(tmp_path, monkeypatch):
    from selfloop.core.judge import judge_secret

    monkeypatch.delenv("SELFLOOP_JUDGE_SECRET", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    first = judge_secret()
    path = tmp_path / "selfloop" / "judge-secret"
    assert len(first) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert judge_secret() == first  # a seeded run repeats on this machine
    monkeypatch.setenv("SELFLOOP_JUDGE_SECRET", "shared-by-a-cluster")
    assert judge_secret() == "shared-by-a-cluster"
