"""Staged validation: static checks, the sandboxed stages, the threshold, and the held-out judge
catching a variant that games its visible score."""

from __future__ import annotations

import pytest
from evolve_fixtures import GAMED_TASK_LINE, make_checkpoint, make_config, make_surface
from selfloop.core.evolve import editable_files, read_surface
from selfloop.core.judge import (
    ProblemPlan,
    draw_held_out,
    pinned_task,
    score_held_out,
    selection_quality,
)
from selfloop.core.registry import load_registry
from selfloop.core.validate import Validator, static_problems


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from selfloop.sandbox import choose_backend

    tmp = tmp_path_factory.mktemp("validate")
    surface = make_surface(tmp / "surface")
    config = make_config()
    s = config.evolve
    plan = ProblemPlan(s.refine_difficulties, s.select_difficulty, s.held_out_per_difficulty, s.held_out_select)
    task = pinned_task(config)
    validator = Validator(
        sandbox=choose_backend(config.sandbox), config=config, checkpoint=make_checkpoint(tmp / "ckpt"),
        plan=plan, held_out=draw_held_out(task, plan, 7), pinned_task=task, visible_seed=1, sample_seed=0,
        smoke_size={"refine": 3, "select": 4}, full_size={"refine": 4, "select": 6})
    editable = editable_files(config, load_registry([surface]), ["refiner", "selector"], surface)
    return validator, read_surface(surface), editable


def test_editable_targets_are_the_configured_refiner_and_selector(setup):
    _, _, editable = setup
    assert editable == ["refine/test_vote.py", "select/test_keep.py"]


@pytest.mark.parametrize("path", ["../core/judge.py", "/etc/passwd", "refine/../../core/cli.py", "tasks/reversed_addition.py"])
def test_static_rejects_paths_outside_the_targets(path):
    problems = static_problems([path], {}, ["refine/test_vote.py"])
    assert len(problems) == 1 and ("outside the editable surface" in problems[0] or "not one of the editable" in problems[0])


def test_static_rejects_syntax_errors():
    problems = static_problems(["refine/a.py"], {"refine/a.py": "def f(:\n"}, ["refine/a.py"])
    assert problems == ["refine/a.py:1: syntax error: invalid syntax"]


def test_static_failure_runs_nothing(setup):
    validator, files, editable = setup
    verdict = validator.validate({**files, "refine/test_vote.py": "x = (\n"}, changed=["refine/test_vote.py"],
                                 editable=editable, threshold=None)
    assert not verdict.admitted and verdict.sandbox == {} and verdict.reasons[0].startswith("static: ")


@pytest.mark.slow
def test_seed_passes_every_stage_and_gets_a_held_out_score(setup):
    validator, files, editable = setup
    verdict = validator.validate(files, changed=[], editable=editable, threshold=None)
    assert verdict.admitted, verdict.reasons
    assert list(verdict.stages) == ["static", "load", "contract", "smoke", "full", "held_out", "null"]
    assert 0.0 <= verdict.score <= 1.0 and "held_out" in verdict.scores
    assert verdict.sandbox["status"] == "ok" and verdict.sandbox["backend"] == "process"
    assert "held_out" not in verdict.feedback() and "held-out" not in verdict.feedback()  # proposers never see it


@pytest.mark.slow
def test_gaming_the_visible_score_is_caught_by_the_held_out_judge(setup):
    validator, files, editable = setup
    gamed = dict(files)
    gamed["tasks/reversed_addition.py"] = files["tasks/reversed_addition.py"].replace(*GAMED_TASK_LINE)
    assert gamed["tasks/reversed_addition.py"] != files["tasks/reversed_addition.py"]
    verdict = validator.validate(gamed, changed=[], editable=editable, threshold=None)
    assert verdict.scores["full"] >= 0.5  # it believes itself good
    assert not verdict.admitted
    assert "not confirmed by the held-out judge" in verdict.reasons[0]


@pytest.mark.slow
def test_full_and_held_out_stages_only_above_the_threshold(setup):
    validator, files, editable = setup
    verdict = validator.validate(files, changed=[], editable=editable, threshold=2.0)
    assert not verdict.admitted and list(verdict.stages) == ["static", "load", "contract", "smoke"]
    assert "below the threshold" in verdict.reasons[0]


@pytest.mark.slow
def test_a_variant_that_raises_is_rejected_with_the_stage_and_error(setup):
    validator, files, editable = setup
    broken = dict(files)
    broken["refine/test_vote.py"] = files["refine/test_vote.py"].replace(
        "        samples =", "        raise RuntimeError('refiner exploded')\n        samples =")
    verdict = validator.validate(broken, changed=["refine/test_vote.py"], editable=editable, threshold=None)
    assert not verdict.admitted
    assert verdict.reasons[0].startswith("smoke: RuntimeError: refiner exploded")


def test_held_out_scoring_uses_the_pinned_task(setup):
    validator, _, _ = setup
    held = validator.held_out
    right = {"refine": [p.answer for p in held.refine], "select_labels": [p.answer for p in held.select],
             "select_kept": [[p.prompt, p.answer] for p in held.select]}
    assert score_held_out(validator.task, held, right)["score"] == pytest.approx(1.0)
    wrong = {"refine": ["0"] * len(held.refine), "select_labels": ["0"] * len(held.select),
             "select_kept": [[p.prompt, "0"] for p in held.select] + [["1+1=", "2"]]}
    metrics = score_held_out(validator.task, held, wrong)
    assert metrics["score"] == 0.0 and metrics["select_kept"] == len(held.select)  # foreign prompts ignored
    assert score_held_out(validator.task, held, {"refine": "garbage"})["score"] == 0.0
    hostile = {"refine": [None] * len(held.refine), "select_labels": 5, "select_kept": [[["x"], 1], "y", None]}
    assert score_held_out(validator.task, held, hostile)["score"] == 0.0


def test_selection_quality():
    q = selection_quality(kept_correct=6, kept=8, correct_total=12)
    assert q["precision"] == 0.75 and q["recall"] == 0.5
    assert q["f"] == pytest.approx(1.25 * 0.75 * 0.5 / (0.25 * 0.75 + 0.5))
    assert selection_quality(0, 0, 5)["f"] == 0.0


def test_option_paths_are_mounted_into_the_sandbox(tmp_path, monkeypatch):
    """A task reading a file of the host (the dataset task) gets it in the sandbox, read-only."""
    from selfloop.core.judge_payload import resolve_inputs
    from selfloop.core.validate import mount_option_paths

    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "a", "answer": "b"}\n')
    monkeypatch.chdir(tmp_path)
    config = {"task": {"name": "dataset", "options": {"path": "rows.jsonl", "answer_column": "answer"}},
              "select": [{"name": "dedup", "options": {}}],
              "model": {"name": "pretrained", "options": {"path": str(tmp_path)}}}
    job, inputs = mount_option_paths(config)
    assert inputs == {"path0": data.resolve()}
    assert job["task"]["options"] == {"path": {"$input": "path0"}, "answer_column": "answer"}
    assert job["model"] == config["model"]  # the payload loads the checkpoint, not the base model
    monkeypatch.setenv("SELFLOOP_INPUT_PATH0", "/mnt/in/path0")
    assert resolve_inputs(job)["task"]["options"]["path"] == "/mnt/in/path0"
