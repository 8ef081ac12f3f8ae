"""word_arithmetic: GSM8K-format word problems through the widened Task Protocol, and its example config."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from selfloop.core.config import load_config
from selfloop.core.errors import PluginError
from selfloop.core.registry import load_registry
from selfloop.plugins.model.embedded import CHARS
from selfloop.plugins.tasks.word_arithmetic import MARKER, WordArithmetic
from task_contract import check_task

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples" / "configs" / "word_arithmetic.toml"


@pytest.mark.parametrize("chat", [True, False])
def test_the_contract(chat):
    check_task(WordArithmetic(chat=chat), "word_arithmetic")


def test_difficulty_is_steps_and_the_solution_works_them():
    task = WordArithmetic(chat=True)
    assert task.difficulties() == [1, 2, 3, 4, 5, 6]
    for steps in task.difficulties():
        problem = task.problems(steps, 1, random.Random(steps))[0]
        lines = task.demonstration(problem).splitlines()
        assert len(lines) == steps + 1 and lines[-1] == f"{MARKER} {problem.answer}"
        value = None
        for line in lines[:-1]:  # each line's arithmetic holds, and starts from the last result
            left, result = line.split(" = ")
            assert value is None or left.startswith(f"{value} ")
            assert eval(left.replace("/", "//")) == int(result)  # our own digits and operators
            value = int(result)
        assert str(value) == problem.answer


def test_chat_gives_messages_and_plain_stays_in_the_embedded_alphabet():
    chat, plain = WordArithmetic(chat=True), WordArithmetic(chat=False)
    problem = chat.problems(3, 1, random.Random(0))[0]
    roles = [m["role"] for m in chat.messages(problem)]
    assert roles == ["system", "user"] and chat.messages(problem)[1]["content"] == problem.prompt
    for problem in plain.problems(6, 20, random.Random(1)):
        assert plain.messages(problem) is None
        assert set(problem.prompt) <= set(CHARS)
        assert set(plain.demonstration(problem)) <= set(CHARS) | {"#"}


def test_extract_answer_reads_after_the_last_marker_else_the_last_number():
    extract = WordArithmetic.extract_answer
    assert extract("3 + 4 = 7\n#### 7") == "7"
    assert extract("#### 5 wait\n#### 8 done") == "8"
    assert extract("#### 1,200.00") == "1200" and extract("#### -3") == "-3" and extract("#### 2.5") == "2.5"
    assert extract("3+4=7  7") == "7"  # the embedded tokenizer drops '#': the last number
    assert extract("no idea") == ""
    task = WordArithmetic()
    problem = task.problems(2, 1, random.Random(3))[0]
    assert task.verify(problem, f"so #### {problem.answer}") and not task.verify(problem, f"#### {problem.answer}1")


def test_budgets_grow_with_steps_and_fit_the_worked_solution():
    task = WordArithmetic(chat=False)
    budgets = []
    for steps in task.difficulties():
        problems = task.problems(steps, 30, random.Random(steps))
        assert all(len(task.demonstration(p)) + 2 <= task.max_new_tokens(p) for p in problems)
        budgets.append(task.max_new_tokens(problems[0]))
    assert budgets == sorted(budgets) and len(set(budgets)) == len(budgets)


def test_bad_options_are_one_line_errors():
    with pytest.raises(PluginError, match="word_arithmetic.*min_steps"):
        WordArithmetic(min_steps=3, max_steps=2)
    with pytest.raises(ValueError, match="difficulty 9"):
        WordArithmetic().problems(9, 1, random.Random(0))


def test_the_example_config_loads():
    config = load_config(CONFIG)
    config.check_names(load_registry())
    assert config.task.name == "word_arithmetic" and config.model.name == "embedded"
    assert "name = \"pretrained\"" in CONFIG.read_text()  # the commented variant for a user's model


@pytest.mark.slow
def test_the_example_config_runs_its_base_round(run_selfloop, tmp_path):
    done = run_selfloop("run", "--config", CONFIG, "--rounds", "0", "--out", tmp_path / "run", "--json",
                        cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["finished"] and set(report["rounds"][0]["accuracy_by_difficulty"]) == {"1", "2", "3", "4"}
