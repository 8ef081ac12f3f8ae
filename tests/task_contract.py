"""The widened Task Protocol, checked on one task through TaskView: what every built-in task's tests
share. ``selfloop.testing.check_task`` (the plugin author's check) first, then what a built-in task
promises beyond it: disjoint splits at every difficulty, JSON-safe problems, demonstrations that
extract to the answer, wrong answers refused."""

from __future__ import annotations

import json
import random

from selfloop.core.tasks import TaskView
from selfloop.testing import check_task as protocol_check


def check_task(task, name: str, *, per_difficulty: int = 8, verify=None) -> TaskView:
    """Problems at every offered difficulty, in both splits, disjoint; JSON-safe; positive budgets;
    its own demonstrations verify (through ``verify(view, problems, completions)``, default the
    view's own) and extract to the answer; a wrong answer does not verify."""
    protocol_check(task, name=name, levels=len(TaskView(task).difficulties.values))
    view = TaskView(task, name=name, render=lambda messages: "\n".join(m["content"] for m in messages))
    assert view.difficulties.finite and view.difficulties.values
    verify = verify or (lambda v, problems, completions: v.verify_many(problems, completions))
    for difficulty in view.difficulties.values:
        train = view.problems(difficulty, per_difficulty, random.Random(difficulty), split="train")
        held = view.problems(difficulty, per_difficulty, random.Random(difficulty + 100), split="held_out")
        assert train and held, f"difficulty {difficulty} gave no problems"
        assert all(p.difficulty == difficulty and p.answer is not None for p in train + held)
        assert not {p.prompt for p in train} & {p.prompt for p in held}, "a problem is in both splits"
        json.dumps([[p.prompt, p.answer, p.difficulty, p.meta] for p in train + held])
        demonstrations = [view.demonstration(p) for p in train]
        assert verify(view, train, demonstrations) == [True] * len(train)
        assert verify(view, train[:1], ["no answer at all"]) == [False]
        for problem, shown in zip(train, demonstrations):
            assert view.extract_answer(shown) == view.extract_answer(problem.answer)
            assert 1 <= view.max_new_tokens(problem) <= 4096
    return view
