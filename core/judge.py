"""The held-out judge: the evaluation a variant can neither see nor change.

A variant's plugins (the task included) are the editable surface, so nothing a variant computes
about itself is trusted. The judge splits every evaluation in two:

- on the host (this module, in the protected core): held-out problems are drawn from the *pinned*
  task, the one the installed seed plugins register under the config's task name, with a secret
  seed the proposer never sees. Only their prompts go into the sandbox; the answers stay here.
- in the sandbox (``selfloop.core.judge_payload``): the variant's own refiner answers the held-out
  prompts, and the variant's own selectors decide which self-labelled held-out examples to keep.
  What comes back is data (answers, kept examples), never a score.

Back on the host the pinned task verifies every answer and every kept label. A variant that games
its visible score (rewrites its task's verifier, deletes the logging its checker reads, prints a
perfect score) gains nothing here: the gap between its visible and held-out scores is what rejects
it.

The score of one evaluation combines the two lifecycle stages the meta-agent improves::

    score = REFINE_WEIGHT · refined accuracy + (1 − REFINE_WEIGHT) · F0.5(selection)

where the selection's precision is the share of kept self-labels that are correct and its recall the
share of correct self-labels that were kept (precision weighs more: noisy labels compound).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .significance import Noise, Outcomes, SelectionOutcome, noise
from .types import Problem

REFINE_WEIGHT = 0.5
SELECTION_BETA = 0.5


def selection_quality(kept_correct: int, kept: int, correct_total: int) -> dict[str, float]:
    """Precision, recall and F-beta of a selection against the ground truth."""
    precision = kept_correct / kept if kept else 0.0
    # A selector may relabel what it keeps, so it can keep more correct labels than the model gave.
    correct_total = max(correct_total, kept_correct)
    recall = kept_correct / correct_total if correct_total else 0.0
    b2 = SELECTION_BETA**2
    f = (1 + b2) * precision * recall / (b2 * precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f": f, "kept": float(kept),
            "kept_correct": float(kept_correct), "correct_total": float(correct_total)}


def combined_score(refine_accuracy: float, selection_f: float) -> float:
    return REFINE_WEIGHT * refine_accuracy + (1 - REFINE_WEIGHT) * selection_f


@dataclass
class ProblemPlan:
    """Which problems an evaluation uses: refinement at several difficulties, selection at one."""

    refine_difficulties: list[int]
    select_difficulty: int
    refine_per_difficulty: int
    select_count: int
    # The model-dependence ablation's share: the first of each difficulty's refinement problems, and
    # the selection probes (a random-weight model answers at full length, so these are kept small).
    null_per_difficulty: int = 32
    probe_count: int = 64

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class HeldOutSet:
    """Held-out problems with their answers; only ``prompts()`` is sent into a sandbox."""

    refine: list[Problem]
    select: list[Problem]
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    # For the model-dependence test: the refinement problems it asks again, and selection probes
    # (other problems, each with a label the judge made: right for half, another probe's for the rest).
    null_refine: list[Problem] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)

    def prompts(self) -> dict[str, list[dict[str, Any]]]:
        strip = lambda ps: [{"prompt": p.prompt, "difficulty": p.difficulty} for p in ps]
        return {"refine": strip(self.refine), "select": strip(self.select), "null_refine": strip(self.null_refine),
                "probes": [{"prompt": q.problem.prompt, "difficulty": q.problem.difficulty, "label": q.label}
                           for q in self.probes]}


@dataclass
class Probe:
    problem: Problem
    label: str
    correct: bool


def judge_secret() -> str:
    """This machine's secret for drawing held-out problems: ``SELFLOOP_JUDGE_SECRET``, else a random
    key made once in ``$XDG_STATE_HOME/selfloop/judge-secret`` (mode 0600).

    The held-out seed of a round is derived from it and the run's seed, so a seeded run repeats on
    one machine, while a variant, which can read the run's seed in its job, still cannot derive the
    held-out problems: the key never enters a sandbox.
    """
    import os
    import secrets
    from pathlib import Path

    if os.environ.get("SELFLOOP_JUDGE_SECRET"):
        return os.environ["SELFLOOP_JUDGE_SECRET"]
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    path = state / "selfloop" / "judge-secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another run made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        return key


def pinned_task(config, plugins_dirs: Sequence[str] = ()):
    """The task the config names (a ``TaskView``), built from the installed plugins and the user's
    own plugin directories, never from a variant; its chat template is the configured model's."""
    from .registry import load_registry
    from .tasks import build_task

    registry = load_registry(list(plugins_dirs))  # the seed surface, installed packages, the user's
    try:
        return build_task(config, registry)
    except ConfigError as exc:
        raise ConfigError(f"the held-out judge pins the task from the installed plugins: {exc}") from None


def verify_all(task, problems: Sequence[Problem], answers: Sequence[Any]) -> list[bool]:
    """Verify answers in one batch; an answer that is not text is wrong, never an error."""
    texts = [a if isinstance(a, str) else "" for a in answers]
    verdicts = task.verify_many(list(problems), texts) if problems else []
    return [isinstance(a, str) and bool(v) for a, v in zip(answers, verdicts)]


def draw_held_out(task, plan: ProblemPlan, seed: int) -> HeldOutSet:
    """Fresh held-out problems from the pinned task and a secret seed (distinct prompts)."""
    rng = random.Random(f"held-out:{seed}")

    def distinct(difficulty: int, count: int, taken: set[str]) -> list[Problem]:
        out: list[Problem] = []
        for _ in range(50):
            for problem in task.problems(difficulty, count, rng, split="held_out"):
                if problem.prompt not in taken and len(out) < count:
                    taken.add(problem.prompt)
                    out.append(problem)
            if len(out) == count:
                break
        return out

    taken: set[str] = set()
    refine = [p for d in plan.refine_difficulties for p in distinct(d, plan.refine_per_difficulty, taken)]
    select = distinct(plan.select_difficulty, plan.select_count, taken)
    probes = make_probes(task, distinct(plan.select_difficulty, plan.probe_count, taken), rng)
    null_refine = [p for d in plan.refine_difficulties
                   for p in [q for q in refine if q.difficulty == d][: plan.null_per_difficulty]]
    return HeldOutSet(refine=refine, select=select, seed=seed, null_refine=null_refine, probes=probes)


def make_probes(task, problems: list[Problem], rng: random.Random) -> list[Probe]:
    """Label half of ``problems`` with their worked answer and the rest with another problem's.

    Borrowed answers have the task's own format and length, so nothing but the truth tells the two
    halves apart: a selector that cannot consult a model can only sort them by working the task.
    """
    problems = [p for p in problems if p.answer is not None]
    shown = [task.demonstration(p) or p.answer for p in problems]
    order = list(range(len(problems)))
    rng.shuffle(order)
    wrong = set(order[: len(order) // 2])
    labels = list(shown)
    for i in sorted(wrong):  # another problem's answer (the next one, unless it is right here too)
        candidates = [shown[(i + shift) % len(problems)] for shift in range(1, min(4, len(problems)))]
        fits = verify_all(task, [problems[i]] * len(candidates), candidates)
        labels[i] = next((c for c, ok in zip(candidates, fits) if not ok), shown[i])
    correct = verify_all(task, problems, labels)
    return [Probe(p, label, ok) for p, label, ok in zip(problems, labels, correct)]


def held_out_outcomes(task, held_out: HeldOutSet, outputs: dict[str, Any]) -> Outcomes:
    """Verify what a variant returned for the held-out prompts with the pinned task, problem by problem.

    ``outputs`` is ``{"refine": [answer per refine prompt], "select_labels": [the model's label per
    select prompt], "select_kept": [[prompt, completion], ...]}`` as the payload wrote it; anything
    malformed counts as wrong, never as an error of the judge.
    """
    outputs = outputs if isinstance(outputs, dict) else {}
    answers = outputs.get("refine")
    if not isinstance(answers, list) or len(answers) != len(held_out.refine):
        answers = [""] * len(held_out.refine)
    refine = verify_all(task, held_out.refine, answers)
    labels = outputs.get("select_labels")
    if not isinstance(labels, list) or len(labels) != len(held_out.select):
        labels = [""] * len(held_out.select)
    pool = {p.prompt for p in held_out.select}
    kept: dict[str, str] = {}
    pairs = outputs.get("select_kept")
    for pair in pairs if isinstance(pairs, list) else []:
        if (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[0] in pool
                and isinstance(pair[1], str)):
            kept.setdefault(pair[0], pair[1])  # each held-out prompt counts once
    label_ok = verify_all(task, held_out.select, labels)
    kept_ok = verify_all(task, held_out.select, [kept.get(p.prompt) for p in held_out.select])
    select = [SelectionOutcome(label_correct=ok, kept=p.prompt in kept, kept_correct=p.prompt in kept and good)
              for p, ok, good in zip(held_out.select, label_ok, kept_ok)]
    return Outcomes(refine=refine, select=select)


def null_outcomes(task, held_out: HeldOutSet, outputs: dict[str, Any]) -> Outcomes:
    """Outcomes with the model taken away: the held-out answers, and the selection of the probes."""
    outputs = outputs if isinstance(outputs, dict) else {}
    answers = outputs.get("refine")
    if not isinstance(answers, list) or len(answers) != len(held_out.null_refine):
        answers = [""] * len(held_out.null_refine)
    refine = verify_all(task, held_out.null_refine, answers)
    pool = {q.problem.prompt: q for q in held_out.probes}
    kept: dict[str, str] = {}
    pairs = outputs.get("probes_kept")
    for pair in pairs if isinstance(pairs, list) else []:
        if (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[0] in pool
                and isinstance(pair[1], str)):
            kept.setdefault(pair[0], pair[1])
    kept_ok = verify_all(task, [q.problem for q in held_out.probes],
                         [kept.get(q.problem.prompt) for q in held_out.probes])
    select = [SelectionOutcome(label_correct=q.correct, kept=q.problem.prompt in kept,
                               kept_correct=q.problem.prompt in kept and good)
              for q, good in zip(held_out.probes, kept_ok)]
    return Outcomes(refine=refine, select=select)


def outcome_metrics(refine_problems: list[Problem], outcomes: Outcomes) -> dict[str, float]:
    """The score and its parts (accuracy by difficulty, the selection's precision and recall)."""
    metrics: dict[str, float] = {}
    by_difficulty: dict[int, list[bool]] = {}
    for problem, ok in zip(refine_problems, outcomes.refine):
        by_difficulty.setdefault(problem.difficulty, []).append(ok)
    for d, oks in sorted(by_difficulty.items()):
        metrics[f"refine_acc_{d}"] = sum(oks) / len(oks)
    refine_accuracy = sum(outcomes.refine) / max(1, len(outcomes.refine))
    selection = selection_quality(sum(o.kept_correct for o in outcomes.select),
                                  sum(o.kept for o in outcomes.select),
                                  sum(o.label_correct for o in outcomes.select))
    metrics.update({f"select_{k}": v for k, v in selection.items()})
    metrics["refine_accuracy"] = refine_accuracy
    metrics["score"] = combined_score(refine_accuracy, selection["f"])
    return metrics


def score_held_out(task, held_out: HeldOutSet, outputs: dict[str, Any]) -> dict[str, float]:
    """The judge's metrics of what a variant returned for the held-out prompts."""
    return outcome_metrics(held_out.refine, held_out_outcomes(task, held_out, outputs))


def score_noise(outcomes: Outcomes, *, seed: int = 0) -> Noise:
    """Per-problem variances of a score's two parts (``selfloop.core.significance``)."""
    return noise(outcomes, SELECTION_BETA, seed=seed)


def score_variance(noise_: Noise, n_refine: int, n_select: int) -> float:
    return noise_.variance(n_refine, n_select, REFINE_WEIGHT)


def problems_from_prompts(items: Sequence[dict[str, Any]]) -> list[Problem]:
    """Problems as a variant receives held-out prompts: no answer attached."""
    return [Problem(prompt=item["prompt"], answer=None, difficulty=int(item["difficulty"])) for item in items]
