"""`selfloop evolve` from the command line: options, clear errors, and a small run end to end."""

from __future__ import annotations

import json
import re

import pytest

TINY = """
seed = 3
[[acquire]]
name = "labelled"
options = { min_difficulty = 1, max_difficulty = 2, per_difficulty = 200 }
[[acquire]]
name = "self_label"
options = { start_difficulty = 3, count = 50 }
[optimizer]
name = "rejection_sft"
options = { base_steps = 40, steps = 10, batch_size = 32 }
[[evaluate]]
name = "dynamic_benchmark"
options = { min_difficulty = 1, max_difficulty = 3, per_difficulty = 10 }
[model]
peers = 1  # the checkpoint carries a peer into the sandbox, whose selector and refiner may use it
n_layer = 1
n_embd = 32
n_head = 2
max_positions = 64
[evolve]
rounds = 1
refine_difficulties = [1, 2]
select_difficulty = 2
smoke_per_difficulty = 4
smoke_select = 6
full_per_difficulty = 6
full_select = 8
held_out_per_difficulty = 8
held_out_select = 10
[evolve.probe]  # the default targets probe selector edits: a small probe keeps the test short
steps = 4
long_steps = 8
label_problems = 12
per_difficulty = 8
[sandbox]
backend = "process"
timeout_s = 300
"""


def test_help_lists_the_options(run_selfloop):
    result = run_selfloop("evolve", "--help")
    assert result.returncode == 0
    for option in ("--config", "--iterations", "--archive", "--resume", "--seed", "--model", "--api-base",
                   "--max-usd", "--max-tokens", "--max-seconds", "--workers"):
        assert option in result.stdout


def test_bad_model_string_is_one_line(run_selfloop, tmp_path):
    result = run_selfloop("evolve", "--model", "gpt-4", "--archive", tmp_path / "A")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error:") and "provider/name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "A").exists()


def test_resume_without_a_run_is_a_clear_error(run_selfloop, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    result = run_selfloop("evolve", "--config", config, "--archive", tmp_path / "A", "--resume",
                          env={"SELFLOOP_LLM_MODEL": None})
    assert result.returncode == 1 and "nothing to resume" in result.stderr
    assert result.stderr.strip() == (f"error: {tmp_path / 'A'}: nothing to resume (no run was started there); "
                                     "start one without --resume")
    assert "starting" not in result.stdout + result.stderr  # no header, no progress line first
    assert list(tmp_path.iterdir()) == [config]  # nothing left behind


@pytest.mark.slow
def test_small_run_end_to_end(run_selfloop, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    archive = tmp_path / "A"
    result = run_selfloop("evolve", "--config", config, "--iterations", "1", "--archive", archive,
                          env={"SELFLOOP_LLM_MODEL": None}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Champion lineage" in result.stdout and f"selfloop archive serve --archive {archive}" in result.stdout
    assert "On fresh held-out problems" in result.stdout
    # Off a terminal: a timestamped plain line per stage and per variant, never a redrawn bar.
    stamped = r"^\d\d:\d\d:\d\d "
    assert re.search(stamped + r"\[0/1\] round 0: training with seed plugins$", result.stdout, re.M)
    assert re.search(stamped + r"\[0/1\] iteration 0: validating ", result.stdout, re.M)
    # the default targets name the selector, so the seed pipeline's training probe runs first
    assert re.search(stamped + r"v1 admitted probe \d\.\d{3} ", result.stdout, re.M)
    assert re.search(stamped + r"v2 (admitted|rejected) held-out ", result.stdout, re.M)
    listed = run_selfloop("archive", "list", "--archive", archive, "--json")
    variants = json.loads(listed.stdout)
    assert len(variants) >= 2 and variants[0]["id"] == "v0" and "score" in variants[0]["scores"]
    assert any(v["parent"] == "v0" for v in variants[1:])
    # the round was trained with the lifecycle's threads, the peer in its own process beside it
    (trained,) = (archive.parent / "A.run" / "checkpoints").glob("round-0/report.json")
    assert [m["threads"] for m in json.loads(trained.read_text())["peers_optimize"]] == [1]
    # Running the same command again says how to go on; --fresh moves the old run aside and starts anew.
    again = run_selfloop("evolve", "--config", config, "--iterations", "1", "--archive", archive,
                         env={"SELFLOOP_LLM_MODEL": None})
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1
    assert f"selfloop evolve --archive {archive} --resume" in again.stderr and "--fresh" in again.stderr
    fresh = run_selfloop("evolve", "--config", config, "--iterations", "1", "--archive", archive, "--fresh",
                         env={"SELFLOOP_LLM_MODEL": None}, timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    (old,) = tmp_path.glob("A.old-*")
    (old_run,) = tmp_path.glob("A.run.old-*")
    assert (old / "HEAD").is_file() and (old_run / "journal.jsonl").is_file()  # nothing was deleted
    assert json.loads(run_selfloop("archive", "list", "--archive", archive, "--json").stdout)[0]["id"] == "v0"
