"""What a task is to the rest of selfloop: the Task Protocol's optional methods, with their defaults.

A task plugin needs only ``problems(difficulty, count, rng)`` and ``verify(problem, completion)``.
Everything else a task may offer, and what is assumed when it does not:

- ``messages(problem) -> list[dict] | None``: chat messages for the problem. The model provider's
  chat template renders them into the text the model sees (``Problem.prompt``); the task's own
  ``verify`` still gets the problem as the task made it. Default: the plain ``prompt``.
- ``extract_answer(completion) -> str``: the answer part of a completion; votes and agreement
  compare extracted answers. Default: the completion, stripped.
- ``max_new_tokens(problem) -> int``: the token budget of an answer; every budget goes through it.
  Default: ``DEFAULT_MAX_NEW_TOKENS``.
- ``difficulties() -> list[int] | range``: the difficulties it offers, a finite list or a range
  (``range(1, None)`` is not a thing in Python: return ``Difficulties(low=1)`` for an open one).
  Default: every integer from 1.
- ``problems(..., split="train"|"held_out")``: a task over finite data takes ``split``; the judge
  and the evaluators draw only from ``"held_out"``, acquirers from ``"train"``. A task without the
  keyword has one infinite source, and both splits draw from it with different seeds.
- ``demonstration(problem) -> str``: the completion to learn for a labelled problem (worked
  reasoning, then the answer). Default: ``problem.answer``.
- ``runs_model_output = True`` (an attribute): its ``verify`` executes what the model wrote (code).
  Such answers are verified only inside the sandbox (``TaskView.verifier``), never on the host.
- ``verify_many(problems, completions) -> list[bool]``: a batched verifier. Default: ``verify``
  in a loop.

``TaskView`` wraps a task and offers all of these, checked: a budget or a difficulty list a task
gets wrong is a one-line ``PluginError`` naming the task.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .errors import PluginError
from .types import Problem

DEFAULT_MAX_NEW_TOKENS = 256
SPLITS = ("train", "held_out")
TASK_PROMPT = "task_prompt"  # Problem.meta key: the prompt as the task wrote it, before rendering
SANDBOXED_ENV = "SELFLOOP_SANDBOXED"  # set by the sandbox runner: model output may run here


@dataclass(frozen=True)
class Difficulties:
    """The difficulties a task offers: ``values`` when finite, else every integer from ``low``."""

    low: int = 1
    values: tuple[int, ...] | None = None

    def __contains__(self, difficulty: object) -> bool:
        if not isinstance(difficulty, int):
            return False
        return difficulty in self.values if self.values is not None else difficulty >= self.low

    @property
    def first(self) -> int:
        return self.values[0] if self.values is not None else self.low

    @property
    def finite(self) -> bool:
        return self.values is not None

    def from_(self, start: int, count: int) -> list[int]:
        """Up to ``count`` offered difficulties from ``start`` on, in order."""
        if self.values is not None:
            return [d for d in self.values if d >= start][:count]
        return list(range(max(start, self.low), max(start, self.low) + count))

    def up_to(self, last: int) -> list[int]:
        """The offered difficulties up to ``last``, in order."""
        if self.values is not None:
            return [d for d in self.values if d <= last]
        return list(range(self.low, last + 1))

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)} if self.values is not None else {"low": self.low}


class TaskView:
    """A task with every optional method of the Protocol: its own where it has one, else the default.

    ``render`` turns chat messages into the model's prompt text (the model provider's chat
    template); ``verifier(problems, completions) -> list[bool]`` verifies a task's answers in the
    sandbox when the task runs model output. Attributes the task has and this view does not (say,
    ``answer_for``) are the task's own.
    """

    def __init__(self, task: Any, *, name: str = "task", render: Callable[[list], str] | None = None,
                 verifier: Callable[[Sequence[Problem], Sequence[str]], list[bool]] | None = None):
        if isinstance(task, TaskView):
            task = task.task
        self.task, self.name, self.render, self.verifier = task, name, render, verifier
        self._takes_split = _takes_keyword(task.problems, "split")
        self.difficulties = self._difficulties()

    def __getattr__(self, attribute: str):
        return getattr(self.__dict__["task"], attribute)

    # --- problems ---------------------------------------------------------------------------

    @property
    def has_split(self) -> bool:
        return self._takes_split

    def problems(self, difficulty: int, count: int, rng: random.Random, split: str = "train") -> list[Problem]:
        """Problems as the model sees them: chat messages rendered, the task's own prompt kept."""
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        if self._takes_split:
            made = self.task.problems(difficulty, count, rng, split=split)
        else:
            made = self.task.problems(difficulty, count, rng)
        if not isinstance(made, list) or not all(isinstance(p, Problem) for p in made):
            raise PluginError(f"task {self.name!r}: problems() must return a list of Problem")
        return [self._rendered(p) for p in made]

    def _rendered(self, problem: Problem) -> Problem:
        messages = self.task.messages(problem) if callable(getattr(self.task, "messages", None)) else None
        if messages is None:
            return problem
        if self.render is None:
            raise PluginError(f"task {self.name!r} gives chat messages but the model has no chat "
                              "template; give the model one or use a task option for plain prompts")
        return replace(problem, prompt=self.render(messages),
                       meta={**problem.meta, TASK_PROMPT: problem.prompt})

    @staticmethod
    def original(problem: Problem) -> Problem:
        """The problem as the task made it (before its messages were rendered)."""
        raw = problem.meta.get(TASK_PROMPT)
        return problem if raw is None else replace(problem, prompt=raw)

    # --- answers ----------------------------------------------------------------------------

    def extract_answer(self, completion: str) -> str:
        own = getattr(self.task, "extract_answer", None)
        if not callable(own):
            return completion.strip()
        answer = own(completion)
        return "" if answer is None else str(answer)

    def demonstration(self, problem: Problem) -> str | None:
        """The completion a labelled problem teaches: the task's worked solution, else its answer."""
        own = getattr(self.task, "demonstration", None)
        return own(self.original(problem)) if callable(own) else problem.answer

    def max_new_tokens(self, problem: Problem) -> int:
        own = getattr(self.task, "max_new_tokens", None)
        budget = own(self.original(problem)) if callable(own) else DEFAULT_MAX_NEW_TOKENS
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise PluginError(f"task {self.name!r}: max_new_tokens() returned {budget!r}; it must "
                              "be a positive int (tokens the model may write for an answer)")
        return budget

    def budget(self, problems: Sequence[Problem]) -> int:
        """One token budget for a batch: the largest of its problems'."""
        return max((self.max_new_tokens(p) for p in problems), default=1)

    @property
    def runs_model_output(self) -> bool:
        return bool(getattr(self.task, "runs_model_output", False))

    def verify(self, problem: Problem, completion: str) -> bool:
        return self.verify_many([problem], [completion])[0]

    def verify_many(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[bool]:
        """Verify answers in one batch (in the sandbox when the task runs model output)."""
        problems, completions = list(problems), list(completions)
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        if not problems:
            return []
        if self.runs_model_output and not os.environ.get(SANDBOXED_ENV):
            if self.verifier is None:
                raise PluginError(f"task {self.name!r} runs model output to verify it, and no "
                                  "sandbox verifier is set up here; it never runs on the host")
            return [bool(v) for v in self.verifier(problems, completions)]
        return self.verify_here(problems, completions)

    def verify_here(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[bool]:
        """Verify in this process (the sandbox's payload, or a task that runs nothing)."""
        originals = [self.original(p) for p in problems]
        own = getattr(self.task, "verify_many", None)
        if callable(own):
            verdicts = list(own(originals, list(completions)))
            if len(verdicts) != len(originals):
                raise PluginError(f"task {self.name!r}: verify_many() returned {len(verdicts)} "
                                  f"verdicts for {len(originals)} answers")
            return [bool(v) for v in verdicts]
        return [bool(self.task.verify(p, c)) for p, c in zip(originals, completions)]

    # --- difficulties -----------------------------------------------------------------------

    def _difficulties(self) -> Difficulties:
        own = getattr(self.task, "difficulties", None)
        if not callable(own):
            return Difficulties(low=int(getattr(self.task, "min_difficulty", 1) or 1))
        offered = own()
        if isinstance(offered, Difficulties):
            return offered
        try:
            values = tuple(offered)
        except TypeError:
            values = None
        if (not values or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in values)
                or len(set(values)) != len(values)):
            raise PluginError(f"task {self.name!r}: difficulties() returned {offered!r}; it must be "
                              "a non-empty list of distinct non-negative ints, or Difficulties(low=n)")
        return Difficulties(low=min(values), values=tuple(sorted(values)))


def in_held_out(prompt: str, fraction: float) -> bool:
    """Whether a prompt falls in the held-out part of a hash split: a fixed share ``fraction`` of
    all prompts, the same on every machine, so the two parts never share a problem."""
    return int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) < fraction * 16**8


def _takes_keyword(function, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def task_view(task: Any, **kwargs) -> TaskView:
    """``task`` as a TaskView (unchanged when it is one)."""
    return task if isinstance(task, TaskView) and not kwargs else TaskView(task, **kwargs)


def build_task(config, registry, *, model: Any = None) -> TaskView:
    """The config's task as a TaskView: its chat messages rendered by ``model`` (the config's model
    provider, built when not given), its verification sandboxed when it runs model output."""
    if model is None:
        model = registry.create("model", config.model.name, config.model.options)
    task = registry.create("task", config.task.name, config.task.options)
    view = TaskView(task, name=config.task.name, render=getattr(model, "render_messages", None))
    if view.runs_model_output:
        from selfloop.sandbox.verify import SandboxVerifier

        view.verifier = SandboxVerifier(config, list(getattr(registry, "plugins_dirs", [])))
    return view
