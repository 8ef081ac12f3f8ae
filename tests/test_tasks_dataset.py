"""dataset: a task read from disk (jsonl or a datasets directory), its split, and its example config."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from selfloop.core.config import load_config
from selfloop.core.errors import PluginError
from selfloop.core.registry import load_registry
from selfloop.plugins.tasks.dataset import DatasetTask
from task_contract import check_task

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples" / "configs" / "dataset.toml"
SHIPPED = REPO / "examples" / "data" / "reverse_words.jsonl"


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


GSM = [{"question": f"what is {a} plus {a}", "solution": f"{a}+{a}={2 * a}\n#### {2 * a}", "level": 1 + a % 3}
       for a in range(60)]


def test_the_contract_on_the_shipped_data():
    view = check_task(DatasetTask(str(SHIPPED), difficulty_column="difficulty"), "dataset")
    assert list(view.difficulties.values) == [2, 3, 4, 5, 6]


def test_columns_marker_and_solutions(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    task = DatasetTask(str(path), prompt_column="question", answer_column="solution",
                       difficulty_column="level", answer_marker="####")
    check_task(task, "dataset", per_difficulty=3)
    problem = task.problems(1, 1, random.Random(0))[0]
    assert "####" not in problem.answer and task.demonstration(problem).endswith(f"#### {problem.answer}")
    assert task.verify(problem, f"reasoning\n#### {problem.answer}.0") and task.extract_answer("a #### 7 ") == "7"
    assert not task.verify(problem, f"#### {problem.answer}9")


def test_samples_without_replacement_and_returns_fewer_when_exhausted(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "answer": str(i)} for i in range(30)])
    task = DatasetTask(str(path), held_out_fraction=0.3)
    assert task.difficulties() == [1]
    train = task.problems(1, 100, random.Random(0))
    held = task.problems(1, 100, random.Random(0), split="held_out")
    assert len(train) + len(held) == 30 and len({p.prompt for p in train}) == len(train)
    assert 3 <= len(held) <= 15 and not {p.prompt for p in train} & {p.prompt for p in held}
    again = DatasetTask(str(path), held_out_fraction=0.3).problems(1, 100, random.Random(5), split="held_out")
    assert {p.prompt for p in again} == {p.prompt for p in held}  # the split is deterministic


def test_a_split_column_decides_the_split(tmp_path):
    rows = [{"prompt": f"p{i}", "answer": "a", "split": "test" if i < 4 else "train"} for i in range(10)]
    task = DatasetTask(str(write_jsonl(tmp_path / "d.jsonl", rows)), split_column="split")
    assert sorted(p.prompt for p in task.problems(1, 10, random.Random(0), split="held_out")) == ["p0", "p1", "p2", "p3"]
    rows[0]["split"] = "dev"
    with pytest.raises(PluginError, match="row 1: split 'dev'"):
        DatasetTask(str(write_jsonl(tmp_path / "e.jsonl", rows)), split_column="split")


def test_a_datasets_directory_with_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"prompt": [f"p{i}" for i in range(8)], "answer": [str(i) for i in range(8)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict({"prompt": ["q"], "answer": ["9"]})}).save_to_disk(tmp_path / "dd")
    task = DatasetTask(str(tmp_path / "dd"))
    assert len(task.problems(1, 20, random.Random(0))) == 8
    assert [p.prompt for p in task.problems(1, 20, random.Random(0), split="held_out")] == ["q"]


def test_bad_input_is_one_line_naming_the_task_and_the_path(tmp_path, monkeypatch):
    cases = {
        "missing.jsonl": "cannot read it",
        write_jsonl(tmp_path / "cols.jsonl", [{"q": "x", "answer": "1"}]): "row 1 has no prompt column 'prompt'",
        write_jsonl(tmp_path / "level.jsonl", [{"prompt": "x", "answer": "1", "d": "hard"}]): "difficulty 'hard' is not an integer",
        tmp_path / "empty.jsonl": "holds no rows",
    }
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "x", "answer": "1"}\n{oops\n')
    cases[tmp_path / "broken.jsonl"] = "line 2 is not JSON"
    for path, why in cases.items():
        with pytest.raises(PluginError, match=why) as caught:
            DatasetTask(str(path), difficulty_column="d" if "level" in str(path) else None)
        assert str(caught.value).startswith(f"task 'dataset' ({path})") and "\n" not in str(caught.value)
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "datasets" else real(name, *a, **k))
    with pytest.raises(PluginError, match="needs the 'datasets' package"):
        DatasetTask(str(tmp_path))


def test_the_example_config_loads():
    config = load_config(CONFIG)
    config.check_names(load_registry())
    assert Path(config.task.options["path"]) == SHIPPED.relative_to(REPO)


@pytest.mark.slow
def test_the_example_config_runs_a_round(run_selfloop, tmp_path):
    done = run_selfloop("run", "--config", CONFIG, "--rounds", "1", "--out", tmp_path / "run", cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["finished"] and len(report["rounds"]) == 2
    assert set(report["rounds"][1]["accuracy_by_difficulty"]) == {"2", "3", "4", "5", "6"}
