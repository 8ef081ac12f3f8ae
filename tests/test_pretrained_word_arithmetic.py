"""A researcher's own model: a random-weight Qwen2-shaped directory with a byte-level BPE tokenizer
(trained here) and a chat template, on the word_arithmetic task, under `selfloop run` and
`selfloop evolve`, on the process backend and, where its image is current, the Docker one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selfloop.testing import tiny_bpe_model_dir

CONFIG = """
seed = 0
[task]
name = "word_arithmetic"
[[acquire]]
name = "labelled"
options = {{ min_difficulty = 1, max_difficulty = 2, per_difficulty = 40 }}
[[acquire]]
name = "self_label"
options = {{ start_difficulty = 3, count = 16 }}
[[select]]
name = "dedup"
[[select]]
name = "format_filter"
[[select]]
name = "majority_agreement"
options = {{ votes = 2, threshold = 0.5 }}
[optimizer]
name = "rejection_sft"
options = {{ base_steps = 4, steps = 2, batch_size = 8 }}
[[evaluate]]
name = "dynamic_benchmark"
options = {{ min_difficulty = 1, max_difficulty = 3, per_difficulty = 4 }}
[model]
name = "pretrained"
options = {{ path = "{model}" }}
[lifecycle]
admission_per_difficulty = 10
[evolve]
rounds = 1
refine_difficulties = [1, 2]
select_difficulty = 2
smoke_per_difficulty = 2
smoke_select = 4
full_per_difficulty = 3
full_select = 4
held_out_per_difficulty = 4
held_out_select = 6
null_per_difficulty = 2
null_probes = 4
confirm = false
[evolve.probe]  # the default targets probe selector edits: a small probe keeps the test short
steps = 4
long_steps = 8
label_problems = 12
per_difficulty = 8
[sandbox]
backend = "{backend}"
timeout_s = 600
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_bpe_model_dir(tmp_path_factory.mktemp("bpe") / "my-qwen")


def write_config(tmp_path: Path, model: Path, backend: str = "process") -> Path:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(model=model, backend=backend))
    return config


def test_run_one_round(run_selfloop, tmp_path, model_dir):
    out = tmp_path / "run"
    result = run_selfloop("run", "--config", write_config(tmp_path, model_dir), "--rounds", "1",
                          "--out", out, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["finished"] and len(report["rounds"]) == 2
    for entry in report["rounds"]:
        assert set(entry["accuracy_by_difficulty"]) == {"1", "2", "3"}  # the task's difficulties
    selection = {s["selector"]: s for s in report["rounds"][1]["selection"]}
    assert {"dedup", "format_filter", "majority_agreement"} <= set(selection)
    for s in selection.values():
        assert isinstance(s["kept"], int) and isinstance(s["dropped"], dict)
    # a random-weight model writes no `#### n`: its labels may fail the format, never the length
    assert selection["format_filter"]["dropped"].get("length", 0) == 0
    # the checkpoint is a standard Hugging Face directory with the chat template kept
    saved = out / report["rounds"][-1]["checkpoint"]
    assert (saved / "config.json").is_file()
    assert "chat_template" in (saved / "tokenizer_config.json").read_text() or (saved / "chat_template.jinja").is_file()


@pytest.mark.parametrize("backend", ["process", "docker"])
def test_evolve_two_iterations(run_selfloop, tmp_path, model_dir, backend):
    if backend == "docker":
        from test_user_plugins import docker_current

        if why := docker_current():
            pytest.skip(f"Docker backend: {why}")
    archive = tmp_path / "archive"
    result = run_selfloop("evolve", "--config", write_config(tmp_path, model_dir, backend),
                          "--iterations", "2", "--archive", archive, "--json", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    variants = json.loads(run_selfloop("archive", "list", "--archive", archive, "--json").stdout)
    assert len(variants) >= 3
    seed = next(v for v in variants if v["id"] == "v0")
    assert seed["scores"].get("score") is not None, seed


def test_missing_chat_template_is_one_line(run_selfloop, tmp_path):
    bare = tiny_bpe_model_dir(tmp_path / "bare", chat_template=False)
    result = run_selfloop("run", "--config", write_config(tmp_path, bare), "--rounds", "0",
                          "--out", tmp_path / "run", timeout=600)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "chat_template" in lines[0], lines


def test_model_directory_that_does_not_load_is_one_line(run_selfloop, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    result = run_selfloop("run", "--config", write_config(tmp_path, broken), "--rounds", "0",
                          "--out", tmp_path / "run", timeout=600)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(broken) in lines[0], lines
