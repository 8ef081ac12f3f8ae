"""python_functions: template problems with hidden tests, through the widened Task Protocol (the
sandboxed verdicts are in test_sandbox_verify.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from selfloop.core.config import load_config
from selfloop.core.registry import load_registry
from selfloop.core.tasks import SANDBOXED_ENV
from selfloop.plugins.tasks.python_functions import PythonFunctions
from task_contract import check_task

REPO = Path(__file__).resolve().parent.parent


def here(view, problems, completions):
    """Our own reference solutions (not model output) verified in this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SANDBOXED_ENV, "1")
        return view.verify_here(problems, completions)


@pytest.mark.parametrize("chat", [True, False])
def test_the_contract(chat):
    view = check_task(PythonFunctions(chat=chat), "python_functions", per_difficulty=4, verify=here)
    assert view.runs_model_output


def test_problems_hide_tests_that_tell_answers_apart():
    task = PythonFunctions()
    for operations in task.difficulties():
        for problem in task.problems(operations, 10, random.Random(operations)):
            tests = problem.meta["tests"]
            assert len(tests) == 6 and len({y for _, y in tests}) >= 3
            assert problem.prompt.count(", then ") == operations - 1
            hidden = [x for x, _ in tests if f"f({x})" not in problem.prompt]
            assert len(hidden) == 5


def test_extract_answer_takes_the_code_block():
    extract = PythonFunctions.extract_answer
    assert extract("Sure:\n```python\ndef f(x):\n    return x\n```\nThat is it.") == "def f(x):\n    return x"
    assert extract("```\ndef f(x): return 1\n```\n```python\ndef f(x): return 2\n```") == "def f(x): return 2"
    assert extract("```py\ndef f(x):\n    return 3") == "def f(x):\n    return 3"  # cut off at the budget
    assert extract("def f(x): return 4") == "def f(x): return 4"


def test_budgets_and_options():
    task = PythonFunctions(max_operations=3)
    assert task.difficulties() == [1, 2, 3]
    budgets = [task.max_new_tokens(task.problems(n, 1, random.Random(0))[0]) for n in (1, 2, 3)]
    assert budgets == sorted(budgets) and all(b >= len(task.make(n, random.Random(0)).answer) // 4 for b, n in zip(budgets, (1, 2, 3)))


def test_the_example_config_loads():
    config = load_config(REPO / "examples" / "configs" / "python_functions.toml")
    config.check_names(load_registry())
    assert config.task.name == "python_functions"
