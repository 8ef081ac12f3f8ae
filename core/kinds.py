"""The kinds of component, each a ``typing.Protocol``, and the check that a component satisfies one.

A component is any object with the kind's methods; it need not inherit from anything. Parameters
after ``*`` are passed by keyword, so an implementation may take them in any order and may accept
more (with defaults, or ``**kwargs``). A keyword parameter with a default in a Protocol is one the
Protocol gained later: an implementation may leave it out, and the core passes it only to those
that take it (``call_accepting``).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .errors import PluginError
from .types import (
    Edit,
    Evaluation,
    Example,
    OptimizeResult,
    Policy,
    Problem,
    Selection,
    VariantSummary,
    VariantView,
)


class Task(Protocol):
    """Makes problems at a difficulty level and verifies answers against the ground truth.

    Optional methods (an answer extractor, token budgets, the difficulties offered, a train/held-out
    split, chat messages, sandboxed verification) are described in ``selfloop.core.tasks``; the core
    reaches every task through ``TaskView``, which supplies the defaults.
    """

    def problems(self, difficulty: int, count: int, rng: random.Random) -> list[Problem]: ...

    def verify(self, problem: Problem, completion: str) -> bool: ...


class Acquirer(Protocol):
    """Produces candidate training examples for one round (round 0 trains the base model)."""

    def acquire(
        self, *, task: Task, policy: Policy, generator: Generator, round_index: int,
        rng: random.Random,
    ) -> list[Example]: ...


class Selector(Protocol):
    """Keeps, drops or weights examples, and reports how many and why.

    ``history`` is the previous round's training set (the labelled data and earlier rounds' kept
    examples); callers outside the lifecycle may omit it, so give it a default (``()``).
    """

    def select(
        self, examples: list[Example], *, task: Task, policy: Policy | None, generator: Generator,
        round_index: int, rng: random.Random, history: Sequence[Example],
    ) -> Selection: ...


class Generator(Protocol):
    """Samples ``n`` completions for each prompt (GRO: generation)."""

    def generate(
        self, policy: Policy, prompts: Sequence[str], *, n: int, temperature: float,
        max_new_tokens: int, seed: int,
    ) -> list[list[str]]: ...


class Rewarder(Protocol):
    """Scores each completion of each problem (GRO: reward)."""

    def reward(
        self, problems: Sequence[Problem], completions: Sequence[Sequence[str]], *, task: Task,
    ) -> list[list[float]]: ...


class Optimizer(Protocol):
    """Updates a policy from examples (GRO: optimization); round 0 trains the base model."""

    def optimize(
        self, policy: Policy, examples: list[Example], *, task: Task, generator: Generator,
        rewarder: Rewarder, rng: random.Random, workdir: Path, round_index: int,
    ) -> OptimizeResult: ...


class Refiner(Protocol):
    """Turns a policy and problems into final answers, spending test-time compute.

    ``task`` (a ``TaskView``) gives the answer budget (``task.budget(problems)``) and extracts
    answers for voting (``task.extract_answer``).
    """

    def refine(
        self, policy: Policy, problems: Sequence[Problem], *, generator: Generator,
        rewarder: Rewarder, seed: int, task: Task | None = None,
    ) -> list[str]: ...


class ModelProvider(Protocol):
    """Builds the base policy of a run and loads the checkpoints saved from it.

    Checkpoints are standard Hugging Face directories written by ``selfloop.core.models.
    save_policy`` (peers in ``peers/<k>/``); ``load`` restores whatever the provider attaches to a
    model (position schemes, adapters). Optional: ``render_messages(messages) -> str`` (the chat
    template; needed by tasks that give messages), ``untrained_copy(policy, seed) -> Policy`` (the
    judge's model-free ablation; default: the same config with fresh weights), and
    ``describe() -> str``.
    """

    def create(self) -> Policy: ...

    def load(self, directory: Path) -> Policy: ...


class Evaluator(Protocol):
    """Measures a policy; returns metrics and accuracy by difficulty."""

    def evaluate(
        self, policy: Policy, *, task: Task, refiner: Refiner, generator: Generator,
        rewarder: Rewarder, seen_prompts: set[str], seed: int,
    ) -> Evaluation: ...


class Proposer(Protocol):
    """Proposes an edit to the files of the editable surface (the meta-agent).

    ``editable`` lists the paths (relative to the surface root) it may change; ``others`` are other
    archived variants: the round's best admitted ones (for crossover or inspiration), the parent's
    ancestors, and the latest attempts, rejected ones too (``VariantView.status`` and ``reasons``
    say how each ended). Raises ``ProposalError`` when it has nothing.
    """

    def propose(
        self, parent: VariantView, *, editable: Sequence[str], others: Sequence[VariantView],
        rng: random.Random,
    ) -> Edit: ...


class ParentSelector(Protocol):
    """Picks ``k`` parents (variant ids) from the archive to build on next."""

    def choose(
        self, variants: Sequence[VariantSummary], k: int, rng: random.Random
    ) -> list[str]: ...


KINDS: dict[str, type] = {
    "model": ModelProvider,
    "task": Task,
    "acquirer": Acquirer,
    "selector": Selector,
    "generator": Generator,
    "rewarder": Rewarder,
    "optimizer": Optimizer,
    "refiner": Refiner,
    "evaluator": Evaluator,
    "proposer": Proposer,
    "parent_selector": ParentSelector,
}


def protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    """The methods a Protocol asks for, with their signatures (``self`` removed)."""
    methods = {}
    for name, member in vars(protocol).items():
        if name.startswith("_") or not callable(member):
            continue
        sig = inspect.signature(member)
        methods[name] = sig.replace(parameters=list(sig.parameters.values())[1:])
    return methods


def protocol_problems(candidate: Any, protocol: type) -> list[str]:
    """Why ``candidate`` (a class or an instance) does not satisfy ``protocol``; empty if it does."""
    problems = []
    for name, wanted in protocol_methods(protocol).items():
        attr = getattr(candidate, name, None)
        if attr is None or not callable(attr):
            problems.append(f"has no method {name}()")
            continue
        try:
            have = inspect.signature(attr)
        except (TypeError, ValueError):  # builtins without signatures: trust them
            continue
        params = list(have.parameters.values())
        if inspect.isclass(candidate) and params and params[0].name == "self":
            params = params[1:]
        problems += [f"{name}() {p}" for p in _signature_gaps(wanted, params)]
    return problems


def _signature_gaps(wanted: inspect.Signature, params: list[inspect.Parameter]) -> list[str]:
    kinds = inspect.Parameter
    var_kw = any(p.kind is kinds.VAR_KEYWORD for p in params)
    var_pos = any(p.kind is kinds.VAR_POSITIONAL for p in params)
    by_name = {p.name: p for p in params}
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    gaps = []
    wanted_positional = [p for p in wanted.parameters.values() if p.kind is not kinds.KEYWORD_ONLY]
    if len(positional) < len(wanted_positional) and not var_pos:
        gaps.append(f"takes {len(positional)} positional arguments, needs {len(wanted_positional)}")
    for p in wanted.parameters.values():
        if p.kind is kinds.KEYWORD_ONLY and p.default is p.empty:
            own = by_name.get(p.name)
            if own is None and not var_kw:
                gaps.append(f"lacks keyword parameter {p.name!r}")
            elif own is not None and own.kind is kinds.POSITIONAL_ONLY:
                gaps.append(f"takes {p.name!r} positionally only")
    extra_required = [
        p.name for p in params[len(wanted_positional):]
        if p.default is p.empty and p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        and p.name not in wanted.parameters
    ]
    if extra_required:
        gaps.append(f"requires parameters the core never passes: {', '.join(extra_required)}")
    return gaps


def call_accepting(method, *args, **kwargs):
    """Call ``method`` with the keyword arguments it takes (a Protocol's later, optional ones are
    left out for implementations written before them)."""
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return method(*args, **kwargs)
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in parameters}
    return method(*args, **kwargs)


def check_component(kind: str, candidate: Any, where: str) -> None:
    """Raise PluginError naming ``where`` when ``candidate`` does not satisfy the kind's Protocol."""
    problems = protocol_problems(candidate, KINDS[kind])
    if problems:
        raise PluginError(
            f"{where}: not a valid {kind} ({KINDS[kind].__name__} protocol): {'; '.join(problems)}"
        )
