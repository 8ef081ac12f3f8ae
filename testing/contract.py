"""``check_task``: a task plugin against the Task Protocol (``selfloop.core.tasks``)."""

from __future__ import annotations

import random
from collections.abc import Callable

from selfloop.core.tasks import TaskView
from selfloop.core.types import Problem

from .models import CHATML


def chatml(messages: list[dict]) -> str:
    """``messages`` rendered with the tiny BPE model's chat template (ChatML), ready to answer."""
    import jinja2

    return jinja2.Template(CHATML).render(messages=messages, add_generation_prompt=True)


def check_task(task, *, name: str = "task", count: int = 3, levels: int = 3, seed: int = 0,
               render: Callable[[list], str] | None = chatml) -> list[int]:
    """Raise AssertionError unless ``task`` keeps the Protocol's contract; return the difficulties
    checked (the first ``levels`` it offers).

    At each: ``problems`` returns ``count`` Problems of that difficulty with text prompts (chat
    messages rendered by ``render``, each message's content in the prompt); ``max_new_tokens`` is a
    positive int; ``extract_answer`` returns a str; ``verify`` accepts the task's own answers and
    demonstrations and refuses an empty completion (skipped for a task that runs model output,
    which verifies only in the sandbox); ``split="held_out"`` works where the task takes a split.
    """
    view = TaskView(task, name=name, render=render)
    offered = view.difficulties.from_(view.difficulties.first, levels)
    assert offered, f"{name}: difficulties() offers none"
    rng = random.Random(seed)
    for d in offered:
        splits = ("train", "held_out") if view.has_split else ("train",)
        for split in splits:
            problems = view.problems(d, count, rng, split=split)
            assert len(problems) == count, f"{name}: problems({d}, {count}, split={split!r}) gave {len(problems)}"
            for p in problems:
                _check_problem(view, task, p, d, name)
        if view.runs_model_output:
            continue
        with_answers = [p for p in problems if p.answer is not None]
        verdicts = view.verify_here(with_answers, [p.answer for p in with_answers])
        assert all(verdicts), f"{name}: verify() rejects its own answers at difficulty {d}"
        shown = [(p, view.demonstration(p)) for p in with_answers]
        shown = [(p, s) for p, s in shown if s is not None]
        assert all(view.verify_here([p for p, _ in shown], [s for _, s in shown])), \
            f"{name}: verify() rejects its own demonstrations at difficulty {d}"
        assert not any(view.verify_here(problems, [""] * len(problems))), \
            f"{name}: verify() accepts an empty completion at difficulty {d}"
    return offered


def _check_problem(view: TaskView, task, problem: Problem, difficulty: int, name: str) -> None:
    assert isinstance(problem, Problem), f"{name}: problems() must return Problems, got {type(problem).__name__}"
    assert problem.difficulty == difficulty, \
        f"{name}: a problem asked at difficulty {difficulty} says {problem.difficulty}"
    assert isinstance(problem.prompt, str) and problem.prompt, f"{name}: a problem's prompt must be non-empty text"
    budget = view.max_new_tokens(problem)  # raises PluginError when not a positive int
    assert budget >= 1
    if problem.answer is not None:
        assert isinstance(view.extract_answer(problem.answer), str), f"{name}: extract_answer() must return str"
    messages = task.messages(view.original(problem)) if callable(getattr(task, "messages", None)) else None
    if messages is not None:
        assert isinstance(messages, list) and all(isinstance(m, dict) and "role" in m and "content" in m
                                                  for m in messages), \
            f"{name}: messages() must return a list of {{'role', 'content'}} dicts"
        assert all(str(m["content"]) in problem.prompt for m in messages), \
            f"{name}: the rendered prompt lost a message's content"
