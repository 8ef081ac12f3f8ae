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

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class HeldOutSet:
    """Held-out problems with their answers; only ``prompts()`` is sent into a sandbox."""

    refine: list[Problem]
    select: list[Problem]
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def prompts(self) -> dict[str, list[dict[str, Any]]]:
        strip = lambda ps: [{"prompt": p.prompt, "difficulty": p.difficulty} for p in ps]
        return {"refine": strip(self.refine), "select": strip(self.select)}


def pinned_task(config):
    """The task the config names, built from the installed plugins, never from a variant."""
    from .registry import load_registry

    registry = load_registry()  # no plugins directory: the seed surface and installed packages
    try:
        return registry.create("task", config.task.name, config.task.options)
    except ConfigError as exc:
        raise ConfigError(f"the held-out judge pins the task from the installed plugins: {exc}") from None


def draw_held_out(task, plan: ProblemPlan, seed: int) -> HeldOutSet:
    """Fresh held-out problems from the pinned task and a secret seed (distinct prompts)."""
    rng = random.Random(f"held-out:{seed}")

    def distinct(difficulty: int, count: int, taken: set[str]) -> list[Problem]:
        out: list[Problem] = []
        for _ in range(50):
            for problem in task.problems(difficulty, count, rng):
                if problem.prompt not in taken and len(out) < count:
                    taken.add(problem.prompt)
                    out.append(problem)
            if len(out) == count:
                break
        return out

    taken: set[str] = set()
    refine = [p for d in plan.refine_difficulties for p in distinct(d, plan.refine_per_difficulty, taken)]
    select = distinct(plan.select_difficulty, plan.select_count, taken)
    return HeldOutSet(refine=refine, select=select, seed=seed)


def score_held_out(task, held_out: HeldOutSet, outputs: dict[str, Any]) -> dict[str, float]:
    """Score what a variant returned for the held-out prompts, with the pinned task's verifier.

    ``outputs`` is ``{"refine": [answer per refine prompt], "select_labels": [the model's label per
    select prompt], "select_kept": [[prompt, completion], ...]}`` as the payload wrote it; anything malformed scores as wrong, never as an error of the judge.
    """
    answers = outputs.get("refine") if isinstance(outputs, dict) else None
    if not isinstance(answers, list) or len(answers) != len(held_out.refine):
        answers = [""] * len(held_out.refine)
    metrics: dict[str, float] = {}
    by_difficulty: dict[int, list[bool]] = {}
    for problem, answer in zip(held_out.refine, answers):
        ok = isinstance(answer, str) and task.verify(problem, answer)
        by_difficulty.setdefault(problem.difficulty, []).append(ok)
    for d, oks in sorted(by_difficulty.items()):
        metrics[f"refine_acc_{d}"] = sum(oks) / len(oks)
    refine_accuracy = sum(sum(v) for v in by_difficulty.values()) / max(1, len(held_out.refine))

    pool = {p.prompt: p for p in held_out.select}
    labels = outputs.get("select_labels") if isinstance(outputs, dict) else None
    kept_pairs = outputs.get("select_kept") if isinstance(outputs, dict) else None
    labels = labels if isinstance(labels, list) and len(labels) == len(held_out.select) else [""] * len(held_out.select)
    correct_total = sum(isinstance(c, str) and task.verify(p, c) for p, c in zip(held_out.select, labels))
    kept: dict[str, str] = {}
    for pair in kept_pairs if isinstance(kept_pairs, list) else []:
        if (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[0] in pool
                and isinstance(pair[1], str)):
            kept.setdefault(pair[0], pair[1])  # each held-out prompt counts once
    kept_correct = sum(task.verify(pool[prompt], completion) for prompt, completion in kept.items())
    selection = selection_quality(kept_correct, len(kept), correct_total)
    metrics.update({f"select_{k}": v for k, v in selection.items()})
    metrics["refine_accuracy"] = refine_accuracy
    metrics["score"] = combined_score(refine_accuracy, selection["f"])
    return metrics


def visible_gap(visible: float | None, held_out: float) -> float | None:
    """How far the variant's own (visible) score exceeds the judge's; None without a visible score."""
    return None if visible is None else visible - held_out


def problems_from_prompts(items: Sequence[dict[str, Any]]) -> list[Problem]:
    """Problems as a variant receives held-out prompts: no answer attached."""
    return [Problem(prompt=item["prompt"], answer=None, difficulty=int(item["difficulty"])) for item in items]
