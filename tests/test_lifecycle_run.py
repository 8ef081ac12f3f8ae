"""`selfloop run` end to end on a tiny model: report, plot, checkpoints, resume, clear errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import selfloop_executable

# The whole lifecycle in seconds: a 1-layer model, 1-2 digit labels, 3-digit self-labels.
TINY = """
seed = 3

[[acquire]]
name = "labelled"
options = { min_difficulty = 1, max_difficulty = 2, per_difficulty = 60 }

[[acquire]]
name = "self_label"
options = { start_difficulty = 3, count = 24, ahead = 0 }

[[select]]
name = "dedup"

[[select]]
name = "format_filter"

[[select]]
name = "majority_agreement"
options = { votes = 2, threshold = 0.0 }

[[select]]
name = "accumulate"

[optimizer]
name = "rejection_sft"
options = { base_steps = 30, steps = 10, batch_size = 16, progress = false }

[[evaluate]]
name = "dynamic_benchmark"
options = { min_difficulty = 1, max_difficulty = 4, per_difficulty = 12 }

[model]
n_layer = 1
n_embd = 32
n_head = 2
max_positions = 32
max_position_offset = 4
peers = 0  # peers have tests of their own (test_lifecycle_peers.py)

[lifecycle]
threads = 1
admission_per_difficulty = 100
"""

EXPLODING_SELECTOR = '''
from selfloop.core.hookspecs import hookimpl


class Exploding:
    def select(self, examples, *, task, policy, generator, round_index, rng, history=()):
        if round_index >= 1:
            raise RuntimeError("boom in round %d" % round_index)
        from selfloop.core.types import Selection, SelectionReport
        return Selection(list(examples), SelectionReport("exploding", len(examples)))


@hookimpl
def register_selector(register):
    register("exploding", Exploding)
'''


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def read_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


# A plugin that follows the loop: it appends every finished round's report to a file.
FOLLOWER = '''
import json
from pathlib import Path

from selfloop.core.hookspecs import hookimpl


@hookimpl
def on_round_finished(report, run_dir, config):
    with (Path(run_dir) / "followed.jsonl").open("a") as f:
        f.write(json.dumps({"round": report["round"], "seed": config["seed"]}) + "\\n")
'''


@pytest.mark.slow
def test_run_writes_report_plot_and_checkpoints(run_selfloop, tiny_config, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "follower.py").write_text(FOLLOWER)
    # stdout and stderr are pipes here: the run's log off a terminal
    result = run_selfloop("run", "--config", tiny_config, "--rounds", "1", "--out", out,
                          "--plugins-dir", plugins, env={"SELFLOOP_TENSORBOARD": "1", "COLUMNS": "35"})
    assert result.returncode == 0, result.stderr
    report = read_report(out)
    assert report["finished"] and report["seed"] == 3 and report["config"]["seed"] == 3
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    for entry in report["rounds"]:
        assert set(entry["accuracy_by_difficulty"]) == {"1", "2", "3", "4"}
        assert all(0.0 <= a <= 1.0 for a in entry["accuracy_by_difficulty"].values())
        assert isinstance(entry["warnings"], list)
        assert [s["selector"] for s in entry["selection"]] == [
            "dedup", "format_filter", "majority_agreement", "accumulate"]
        assert set(entry["seconds"]) == {"acquire", "select", "optimize", "evaluate", "admission"}
        assert isinstance(entry["admission"]["admitted"], bool) and entry["admission"]["reason"]
        assert (out / entry["checkpoint"] / "config.json").is_file()
    round1 = report["rounds"][1]
    assert round1["acquired"] == {"labelled": 0, "self_label": 24}
    assert round1["data"]["label_accuracy_acquired"] is not None
    assert (out / "accuracy_by_difficulty.png").read_bytes()[:4] == b"\x89PNG"
    assert report["peak_rss_mib"] > 0
    # off a terminal: a timestamped line per stage, and the round summary never wrapped
    lines = result.stderr.splitlines()
    stamped = [line for line in lines if re.match(r"\d\d:\d\d:\d\d round \d: ", line)]
    assert any("round 0: acquired" in line for line in stamped), result.stderr
    assert any("round 1: accumulate kept" in line for line in stamped), result.stderr
    selection = [line for line in lines if line.startswith("selection: ")]
    assert len(selection) == 2 and all(f"{s['selector']} kept {s['kept']}" in selection[1]
                                       for s in round1["selection"]), result.stderr
    assert any(re.match(r"\d\d:\d\d:\d\d finished: 2 rounds in .*; peak memory \d+ MiB$", line)
               for line in lines), result.stderr
    # the round tables: whole rows at a fixed width, whatever COLUMNS says; no library warnings
    assert "round 0: admitted" in lines
    assert "round 1: admitted" in lines or "round 1: REJECTED" in lines
    headers = [line.split() for line in lines if line.lstrip().startswith("difficulty")]
    assert headers == [["difficulty", "1", "2", "3", "4"]] * 2, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    # the plugins that follow the loop: a directory's hook, and the TensorBoard reporter
    followed = [json.loads(line) for line in (out / "followed.jsonl").read_text().splitlines()]
    assert followed == [{"round": 0, "seed": 3}, {"round": 1, "seed": 3}]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_finished_round(run_selfloop, tiny_config, tmp_path):
    straight = tmp_path / "straight"
    assert run_selfloop("run", "--config", tiny_config, "--rounds", "2", "--out",
                        straight).returncode == 0

    out = tmp_path / "killed"
    process = subprocess.Popen([selfloop_executable(), "run", "--config", str(tiny_config),
                                "--rounds", "2", "--out", str(out)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "rounds/round_000/report.json").exists():
        assert process.poll() is None and time.time() < deadline, "round 0 never finished"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    round0 = (out / "rounds/round_000/report.json").read_text()

    result = run_selfloop("run", "--config", tiny_config, "--rounds", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    assert (out / "rounds/round_000/report.json").read_text() == round0  # nothing redone
    resumed, reference = read_report(out), read_report(straight)
    assert [r["round"] for r in resumed["rounds"]] == [0, 1, 2]
    for mine, theirs in zip(resumed["rounds"], reference["rounds"]):
        # every round is seeded by (seed, round): a resumed run is the run it would have been
        assert mine["selection"] == theirs["selection"]
        assert mine["optimize"]["loss"] == pytest.approx(theirs["optimize"]["loss"], rel=1e-4)


@pytest.mark.slow
def test_plugin_that_raises_is_named_and_done_rounds_are_kept(run_selfloop, tiny_config, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "exploding.py").write_text(EXPLODING_SELECTOR)
    config = tmp_path / "exploding.toml"
    config.write_text(TINY + '\n[[select]]\nname = "exploding"\n')
    out = tmp_path / "run"
    result = run_selfloop("run", "--config", config, "--plugins-dir", plugins, "--rounds", "1",
                          "--out", out, timeout=900)  # two rounds: room for a loaded machine
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: stage 'select': component 'exploding'")
    assert "boom in round 1" in error and "Traceback" not in result.stderr
    assert (out / "rounds/round_000/model/config.json").is_file()  # round 0 survived
    assert [r["round"] for r in read_report(out)["rounds"]] == [0]


def test_malformed_config_and_unknown_component(run_selfloop, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nn_layer = 2")
    result = run_selfloop("run", "--config", bad, "--out", tmp_path / "x")
    assert result.returncode == 1 and "not valid TOML" in result.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[optimizer]\nname = "nope"\n')
    result = run_selfloop("run", "--config", unknown, "--out", tmp_path / "y")
    assert result.returncode == 1
    assert "unknown optimizer 'nope'" in result.stderr and "rejection_sft" in result.stderr


def test_model_too_large_is_refused_before_training(run_selfloop, tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("[model]\nn_layer = 48\nn_embd = 2048\nn_head = 16\nmemory_limit_gib = 2\n")
    result = run_selfloop("run", "--config", big, "--out", tmp_path / "z")
    assert result.returncode == 1
    assert "model too large" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_corrupt_checkpoint_on_resume_is_a_clear_error(run_selfloop, tiny_config, tmp_path):
    out = tmp_path / "run"
    assert run_selfloop("run", "--config", tiny_config, "--rounds", "0", "--out", out).returncode == 0
    (out / "rounds/round_000/model/model.safetensors").write_bytes(b"garbage")
    result = run_selfloop("run", "--config", tiny_config, "--rounds", "1", "--out", out)
    assert result.returncode == 1
    assert "corrupt checkpoint" in result.stderr.strip().splitlines()[-1]
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace("seed = 3", "seed = 4"))
    result = run_selfloop("run", "--config", other, "--rounds", "1", "--out", out)
    assert result.returncode == 1 and "different config" in result.stderr
