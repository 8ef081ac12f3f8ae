"""The TensorBoard reporter: what it writes, where, and when it is on."""

from __future__ import annotations

import pytest
from selfloop.plugins.report import tensorboard as reporter

ROUND = {
    "round": 1, "accuracy_by_difficulty": {"1": 1.0, "3": 0.25},
    "evaluations": [{"evaluator": "dynamic_benchmark", "metrics": {"accuracy": 0.6, "note": "x"}}],
    "data": {"acquired": 24, "new": 0, "training_set": 105},
    "selection": [{"selector": "dedup", "kept": 20, "dropped": {"duplicate": 3, "empty": 1}}],
    "optimize": {"loss": 0.5, "steps": 10, "loss_curve": None},
    "admission": {"admitted": False}, "seconds": {"optimize": 2.0},
}


def test_a_round_becomes_flat_scalars():
    scalars = reporter.round_scalars(ROUND)
    assert scalars["accuracy/3"] == 0.25 and scalars["evaluation/dynamic_benchmark/accuracy"] == 0.6
    assert scalars["data/new"] == 0 and scalars["data/training_set"] == 105
    assert scalars["selection/dedup/kept"] == 20 and scalars["selection/dedup/dropped"] == 4
    assert scalars["optimize/loss"] == 0.5 and scalars["admission/admitted"] == 0.0
    assert "evaluation/dynamic_benchmark/note" not in scalars and "optimize/loss_curve" not in scalars


@pytest.mark.parametrize("setting, on", [("0", False), ("off", False), ("1", True)])
def test_the_environment_turns_it_on_or_off(monkeypatch, setting, on):
    monkeypatch.setenv(reporter.ENV, setting)
    assert reporter.enabled() is on


def test_unset_it_is_on_exactly_when_tensorboard_is_installed(monkeypatch):
    import importlib.util

    monkeypatch.delenv(reporter.ENV, raising=False)
    assert reporter.enabled() is (importlib.util.find_spec("tensorboard") is not None)


def test_rounds_and_variants_are_written_as_event_files(monkeypatch, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv(reporter.ENV, "1")
    reporter.on_round_finished(report=ROUND, run_dir=tmp_path / "run", config={})
    reporter.on_round_finished(report={**ROUND, "round": 2}, run_dir=tmp_path / "run", config={})
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("accuracy/3")] == [(1, 0.25), (2, 0.25)]
    archive = tmp_path / "archive"
    reporter.on_variant_archived(variant={"id": "v7", "status": "admitted", "scores": {"full.score": 0.8}},
                                 archive_dir=archive)
    events = EventAccumulator(str(tmp_path / "archive.tensorboard")).Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("variant/full.score")] == [(7, 0.8)]
    monkeypatch.setenv(reporter.ENV, "0")
    reporter.on_round_finished(report=ROUND, run_dir=tmp_path / "off", config={})
    assert not (tmp_path / "off").exists()
