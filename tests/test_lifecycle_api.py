"""The lifecycle's functions other parts of selfloop build on (evolve trains and scores with them)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from selfloop.core.components import build_components
from selfloop.core.config import load_config
from selfloop.core.errors import StageError
from selfloop.core.registry import load_registry
from selfloop.core.round import draw_problems, evaluate_problems, run_round
from selfloop.core.rundir import load_examples
from selfloop.core.trainer import LifecycleTrainer
from selfloop.plugins.refine.self_consistency import SelfConsistency

OVERRIDES = {
    "acquire": [
        {"name": "labelled", "options": {"max_difficulty": 2, "per_difficulty": 30}},
        {"name": "self_label", "options": {"start_difficulty": 3, "count": 8}},
    ],
    "optimizer": {"name": "rejection_sft",
                  "options": {"base_steps": 8, "steps": 4, "batch_size": 8, "progress": False}},
    "evaluate": [{"name": "dynamic_benchmark",
                  "options": {"difficulties": [1, 3], "per_difficulty": 6}}],
    "model": {"n_layer": 1, "n_embd": 32, "n_head": 2, "max_positions": 32,
              "max_position_offset": 4, "peers": 0},
    "lifecycle": {"admission_per_difficulty": 50},
}


@pytest.fixture(scope="module")
def config():
    return load_config(None, overrides=OVERRIDES)


@pytest.fixture(scope="module")
def components(config):
    return build_components(config, load_registry())


def test_run_round_returns_policy_report_and_training_set(config, components, tmp_path):
    policy = components.model.component.create()
    base = run_round(components, policy, 0, history=[], seed=0, workdir=tmp_path)
    assert base.report["acquired"] == {"labelled": 60, "self_label": 0}
    assert len(base.training_set) == base.report["data"]["training_set"] > 0
    assert set(base.report["accuracy_by_difficulty"]) == {"1", "3"}
    json.dumps(base.report)  # the report is plain JSON
    nxt = run_round(components, base.policy, 1, history=base.training_set, seed=0,
                    workdir=tmp_path)
    assert nxt.report["acquired"] == {"labelled": 0, "self_label": 16}  # difficulties 3 and 4
    # accumulate keeps all of the labelled data
    assert sum(e.source == "labelled" for e in nxt.training_set) == sum(
        e.source == "labelled" for e in base.training_set)
    assert [s["selector"] for s in nxt.report["selection"]][-1] == "accumulate"


def test_evaluate_problems_with_any_refiner(config, components):
    policy = components.model.component.create()
    problems = draw_problems(components.task.component, [2, 4], 5, seed=1)
    assert len(problems) == 10 and problems == draw_problems(components.task.component, [2, 4], 5, 1)
    by_difficulty = evaluate_problems(policy, problems, components=components)
    assert set(by_difficulty) == {2, 4}
    by_difficulty = evaluate_problems(policy, problems, components=components,
                                      refiner=SelfConsistency(samples=2))
    assert all(0.0 <= v <= 1.0 for v in by_difficulty.values())


def test_stage_errors_name_the_component(config, components):
    class Broken:
        def refine(self, policy, problems, *, generator, rewarder, seed):
            raise ZeroDivisionError("nope")

    with pytest.raises(StageError, match="stage 'refine'.*ZeroDivisionError: nope"):
        evaluate_problems(components.model.component.create(), draw_problems(
            components.task.component, [1], 2, 0), components=components, refiner=Broken())


def test_trainer_writes_checkpoints_evolve_can_chain(config, components, tmp_path):
    trainer = LifecycleTrainer(config)
    first = trainer.train(0, plugins_dir=None, previous=None, out=tmp_path / "r0")
    assert (first / "config.json").is_file() and (tmp_path / "r0/report.json").is_file()
    second = trainer.train(1, plugins_dir=None, previous=first, out=tmp_path / "r1")
    assert components.model.component.load(second).model.config.model_type == "llama"
    history = load_examples(tmp_path / "r1/data.jsonl")
    assert any(e.source == "labelled" for e in history)


FOLLOWER = """
from pathlib import Path

from selfloop.core.hookspecs import hookimpl


@hookimpl
def on_round_finished(report, run_dir, config):
    (Path(run_dir) / f"followed_{report['round']}").write_text(str(config["seed"]))
"""


def test_the_trainers_rounds_reach_the_users_plugins_and_the_reporter(config, tmp_path, monkeypatch):
    """The user's plugin directories load beside the champion's; on_round_finished gets the
    directory that holds every round's checkpoint as the run's."""
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("SELFLOOP_TENSORBOARD", "1")
    user = tmp_path / "user_plugins"
    user.mkdir()
    (user / "follower.py").write_text(FOLLOWER)
    runs = tmp_path / "checkpoints"
    LifecycleTrainer(config, plugins_dirs=[user]).train(0, plugins_dir=None, previous=None,
                                                        out=runs / "round-0")
    assert (runs / "followed_0").read_text() == str(config.seed)
    assert list((runs / "tensorboard").glob("events.out.tfevents.*"))
