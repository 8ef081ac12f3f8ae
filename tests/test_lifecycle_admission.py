"""The round admission gate: its statistical test, its verdicts in the report, the round table and
the plot, and (end to end) a round that hurts is rejected, the next round starts from the last
admitted checkpoint with stricter selection, and a run with a rejected round resumes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from statistics import NormalDist

import pytest
from conftest import selfloop_executable
from selfloop.core.admission import admit, drop_margin
from test_lifecycle_run import TINY


def counts(correct: dict[int, int], n: int) -> dict[int, tuple[int, int]]:
    return {d: (c, n) for d, c in correct.items()}


def test_a_small_drop_on_few_problems_is_noise_a_large_one_is_not():
    before = counts({1: 45}, 50)  # 90%
    assert admit(before, counts({1: 43}, 50), alpha=0.05).admitted  # 86%: 4 points
    verdict = admit(before, counts({1: 30}, 50), alpha=0.05)  # 60%: 30 points
    assert not verdict.admitted
    assert verdict.reason == ("accuracy dropped beyond its margin at difficulty 1: 90% -> 60% "
                              f"(margin {verdict.by_difficulty[1]['margin']:.1%})")
    assert verdict.by_difficulty[1] == pytest.approx(
        {"before": 0.9, "after": 0.6, "n": 50, "margin": drop_margin(45, 30, 50, 1.6448536)})


def test_a_perfect_cell_still_has_a_variance():
    # 100% -> 96% on 200 problems: 8 errors where there were none is no accident ...
    assert not admit(counts({8: 200}, 200), counts({8: 192}, 200), alpha=0.05).admitted
    # ... one error is, and so is the same 4-point drop on 25 problems
    assert admit(counts({8: 200}, 200), counts({8: 199}, 200), alpha=0.05).admitted
    assert admit(counts({8: 25}, 25), counts({8: 24}, 25), alpha=0.05).admitted
    assert admit(counts({1: 0}, 200), counts({1: 0}, 200), alpha=0.05).admitted
    assert 0 < drop_margin(200, 200, 200, 2.0) < drop_margin(100, 100, 200, 2.0)


def test_bonferroni_widens_the_margin_with_the_difficulties_compared():
    # 50% -> 40% on 200 problems: significant checked alone, not as one of five difficulties
    before, after = {1: 100}, {1: 80}
    assert not admit(counts(before, 200), counts(after, 200), alpha=0.05).admitted
    others = {d: 150 for d in range(2, 6)}
    assert admit(counts(before | others, 200), counts(after | others, 200), alpha=0.05).admitted


def test_the_gate_rejects_a_round_that_changed_nothing_at_most_alpha_of_the_time():
    """Simulated: both checkpoints equally good at 5 difficulties; and a 30-point drop at one."""
    rng = random.Random(0)
    accuracy, n, trials = [0.99, 0.95, 0.8, 0.6, 0.3], 100, 400

    def sample(shift=0.0):
        return {d: (sum(rng.random() < p - (shift if d == 3 else 0) for _ in range(n)), n)
                for d, p in enumerate(accuracy)}

    false_rejections = sum(not admit(sample(), sample(), alpha=0.05).admitted for _ in range(trials))
    assert false_rejections / trials <= 0.05 + 0.03  # alpha, and room for 400 trials' noise
    caught = sum(not admit(sample(), sample(0.3), alpha=0.05).admitted for _ in range(trials))
    assert caught / trials >= 0.9


def test_admit_checks_its_inputs():
    with pytest.raises(ValueError, match="different difficulties"):
        admit(counts({1: 5}, 10), counts({2: 5}, 10), alpha=0.05)
    with pytest.raises(ValueError, match="difficulty 1: 10 problems before but 12 after"):
        admit(counts({1: 5}, 10), counts({1: 5}, 12), alpha=0.05)
    assert admit({}, {}, alpha=0.05).admitted


def rejected_round() -> dict:
    return {
        "round": 1, "accuracy_by_difficulty": {"1": 0.5, "2": 0.4, "4": 0.0},
        "admission": {"admitted": False, "reason": "accuracy dropped beyond its margin at difficulty 1",
                      "by_difficulty": {"1": {"before": 0.96, "after": 0.5, "n": 200, "margin": 0.07},
                                        "3": {"before": 0.9, "after": 0.2, "n": 200, "margin": 0.08}},
                      "continues_from": "rounds/round_000/model",
                      "tightened": ["majority_agreement: threshold 0.8 -> 0.9, quorum 0.6 -> 0.8"]},
        "selection": [], "data": {}, "seconds": {"optimize": 1.0},
    }


def test_the_round_table_shows_the_gate():
    from rich.console import Console
    from selfloop.core.run_cli import round_table

    console = Console(record=True, width=200)
    console.print(round_table(rejected_round()))
    text = console.export_text()
    assert "round 1: REJECTED" in text
    rows = {line.split("  ")[0].strip(): line.split() for line in text.splitlines()}
    assert rows["difficulty"][-4:] == ["1", "2", "3", "4"]  # the evaluator's and the gate's
    assert rows["gate before %"][-2:] == ["96", "90"] and rows["gate after %"][-2:] == ["50", "20"]
    caption = " ".join(text.split())
    assert "next round from rounds/round_000/model" in caption
    assert "selection tightened: majority_agreement: threshold 0.8 -> 0.9" in caption


def test_the_plot_draws_rejected_rounds_grey_and_dashed(tmp_path):
    from selfloop.core.rundir import accuracy_figure

    base = {"round": 0, "accuracy_by_difficulty": {"1": 0.96, "2": 0.9},
            "admission": {"admitted": True, "reason": "base round", "by_difficulty": {}}}
    figure = accuracy_figure([base, rejected_round()])
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["round 0", "round 1 (rejected)"]
    assert lines[0].get_linestyle() == "-" and lines[1].get_linestyle() == "--"
    assert lines[1].get_color() == "grey"
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == [
        "round 0", "round 1 (rejected)"]


# --- end to end: a round that hurts ---------------------------------------------------------------

# An optimizer that trains like rejection_sft and then, in the rounds it is told to, wrecks the
# checkpoint; a refiner whose answers are right exactly when the checkpoint is intact. Accuracy is
# 100% before such a round and 0% after it, whatever a 1-layer model learns in a few steps.
HURTS = '''
from selfloop.core.hookspecs import hookimpl
from selfloop.plugins.optimize.rejection_sft import RejectionSFT


class Hurts(RejectionSFT):
    def __init__(self, hurt_rounds=(), **options):
        super().__init__(**options)
        self.hurt_rounds = list(hurt_rounds)

    def optimize(self, policy, examples, **kwargs):
        result = super().optimize(policy, examples, **kwargs)
        if kwargs["round_index"] in self.hurt_rounds:
            result.policy.model.config.selfloop_test_wrecked = True  # saved in config.json
        return result


class RightUnlessWrecked:
    def refine(self, policy, problems, *, generator, rewarder=None, seed=0):
        wrecked = getattr(policy.model.config, "selfloop_test_wrecked", False)
        return ["x" if wrecked else p.answer for p in problems]


@hookimpl
def register_optimizer(register):
    register("hurts", Hurts)


@hookimpl
def register_refiner(register):
    register("right_unless_wrecked", RightUnlessWrecked)
'''


@pytest.fixture
def hurting(tmp_path):
    """A plugins directory and a tiny config whose round 1 (only) hurts."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hurts.py").write_text(HURTS)
    text = TINY.replace('[optimizer]\nname = "rejection_sft"\noptions = {',
                        '[optimizer]\nname = "hurts"\noptions = { hurt_rounds = [1],')
    # no format filter: the few-step model's self-labels are kept, wrong length or not
    text = text.replace('[[select]]\nname = "format_filter"\n\n', "")
    assert text.count("[[select]]") == TINY.count("[[select]]") - 1
    text = text.replace("admission_per_difficulty = 100", "admission_per_difficulty = 40")
    assert "admission_per_difficulty = 40" in text
    text += ('keep_checkpoints = false\n'
             'admission_refiner = "right_unless_wrecked"\n\n'  # the gate answers with it too
             '[refiner]\nname = "right_unless_wrecked"\n')
    config = tmp_path / "hurts.toml"
    config.write_text(text)
    return plugins, config


def prompts(path) -> set[str]:
    return {json.loads(line)["prompt"] for line in path.read_text().splitlines()}


def round_report(out, index) -> dict:
    return json.loads((out / f"rounds/round_{index:03d}/report.json").read_text())


@pytest.mark.slow
def test_a_round_that_hurts_is_rejected_and_the_run_resumes_around_it(run_selfloop, hurting,
                                                                       tmp_path):
    plugins, config = hurting
    straight = tmp_path / "straight"
    result = run_selfloop("run", "--config", config, "--plugins-dir", plugins, "--rounds", "2",
                          "--out", straight)
    assert result.returncode == 0, result.stderr
    assert "round 1: REJECTED" in result.stderr
    rounds = json.loads((straight / "report.json").read_text())["rounds"]
    assert [r["admission"]["admitted"] for r in rounds] == [True, False, True]
    assert rounds[0]["admission"] == {"admitted": True, "by_difficulty": {},
                                      "reason": "base round: nothing to compare with"}
    rejected = rounds[1]["admission"]
    # trained before: the labelled 1-2 digits; this round's new self-labels: 3 digits
    margin = drop_margin(40, 0, 40, NormalDist().inv_cdf(1 - 0.05 / 3))  # Bonferroni over 3
    assert rejected["by_difficulty"] == {
        d: {"before": 1.0, "after": 0.0, "n": 40, "margin": pytest.approx(margin)}
        for d in ("1", "2", "3")}
    assert rejected["continues_from"] == "rounds/round_000/model"
    assert rejected["tightened"] == ["majority_agreement: threshold 0 -> 0.5, quorum 0.6 -> 0.8"]
    # round 2 starts from round 0's checkpoint (intact: 100% before), with round 0's training set
    assert {d: v["before"] for d, v in rounds[2]["admission"]["by_difficulty"].items()} == {
        "1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0}
    round1_new = prompts(straight / "rounds/round_001/data.jsonl") - prompts(
        straight / "rounds/round_000/data.jsonl")
    assert round1_new and not round1_new & prompts(straight / "rounds/round_002/data.jsonl")
    # keep_checkpoints = false keeps the last admitted model only
    assert [(straight / f"rounds/round_{i:03d}/model").is_dir() for i in range(3)] == [
        False, False, True]

    # Stopped after the rejected round (only round 0's model left), then killed in round 2 and
    # resumed: the run it would have been, tightened selection included.
    out = tmp_path / "resumed"
    result = run_selfloop("run", "--config", config, "--plugins-dir", plugins, "--rounds", "1",
                          "--out", out)
    assert result.returncode == 0, result.stderr
    assert [(out / f"rounds/round_{i:03d}/model").is_dir() for i in range(2)] == [True, False]
    assert not round_report(out, 1)["admission"]["admitted"]
    process = subprocess.Popen([selfloop_executable(), "run", "--config", str(config),
                                "--plugins-dir", str(plugins), "--rounds", "2", "--out", str(out)],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "rounds/round_002/work").exists() and process.poll() is None:
        assert time.time() < deadline, "round 2 never started"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    result = run_selfloop("run", "--config", config, "--plugins-dir", plugins, "--rounds", "2",
                          "--out", out)
    assert result.returncode == 0, result.stderr
    logged = "".join(result.stderr.split())  # rich wraps the log at the terminal's width
    assert f"from{out / 'rounds/round_000'}(thelastadmittedround)" in logged
    for index in range(3):
        mine, theirs = round_report(out, index), round_report(straight, index)
        assert mine["admission"] == theirs["admission"]
        assert mine["selection"] == theirs["selection"]  # round 2's: the tightened selector's
        assert mine["optimize"]["loss"] == pytest.approx(theirs["optimize"]["loss"], rel=1e-4)


@pytest.mark.slow
def test_the_trainer_returns_the_last_admitted_checkpoint_when_a_round_hurts(hurting, tmp_path):
    from selfloop.core.config import load_config
    from selfloop.core.rundir import load_examples
    from selfloop.core.trainer import LifecycleTrainer

    plugins, config = hurting
    trainer = LifecycleTrainer(load_config(config))
    first = trainer.train(0, plugins_dir=plugins, previous=None, out=tmp_path / "r0")
    assert first == tmp_path / "r0/model"
    second = trainer.train(1, plugins_dir=plugins, previous=first, out=tmp_path / "r1")
    assert second == first and not (tmp_path / "r1/model").exists()
    report = json.loads((tmp_path / "r1/report.json").read_text())
    assert not report["admission"]["admitted"]
    assert report["admission"]["continues_from"] == str(first)
    assert (second.parent / "data.jsonl").is_file() and (second.parent / "report.json").is_file()
    # the next round starts from round 0's checkpoint and data, with stricter selection
    third = trainer.train(2, plugins_dir=plugins, previous=second, out=tmp_path / "r2")
    assert third == tmp_path / "r2/model"
    report = json.loads((tmp_path / "r2/report.json").read_text())
    assert report["admission"]["admitted"]
    assert {v["before"] for v in report["admission"]["by_difficulty"].values()} == {1.0}
    labelled = {e.prompt for e in load_examples(tmp_path / "r0/data.jsonl")}
    assert labelled <= {e.prompt for e in load_examples(tmp_path / "r2/data.jsonl")}
