"""Validating one candidate variant: static checks here, then the staged evaluation in the sandbox,
then the held-out judge's score and the admission decision.

Stages, cheapest first, each one's failure a recorded reason:

1. ``static`` (on the host, nothing executed): every changed path lies inside the editable surface
   and its editable targets; every Python file parses.
2. ``load``, ``contract``, ``smoke``, ``full`` run in the sandbox (``selfloop.core.judge_payload``),
   ``full`` only when the smoke score reaches ``threshold``.
3. ``held_out``: the sandbox returns answers and kept examples for the held-out prompts; the pinned
   task scores them here (``selfloop.core.judge``).

A variant is admitted when every stage passed and its visible score does not exceed its held-out
score by more than ``max_visible_gap`` (a larger gap means it games what it can see).
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .judge import HeldOutSet, ProblemPlan, score_held_out
from .tunable import parse_python

PAYLOAD = ["python", "-m", "selfloop.core.judge_payload"]
LOG_TAIL_CHARS = 4000


@dataclass
class Verdict:
    """The outcome of validating one variant."""

    admitted: bool
    reasons: list[str]
    scores: dict[str, Any] = field(default_factory=dict)  # "score" is the held-out score
    stages: dict[str, Any] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def score(self) -> float | None:
        return self.scores.get("score")

    def feedback(self) -> str:
        """What a proposer may read about this variant: visible stages and logs, not the held-out."""
        lines = []
        for name, stage in self.stages.items():
            if name == "held_out":
                continue
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in stage.items()}
            lines.append(f"{name}: {json.dumps(shown)}")
        lines += [f"reason: {r}" for r in self.reasons if not r.startswith("held-out")]
        if self.sandbox.get("log_tail"):
            lines.append("log tail:\n" + self.sandbox["log_tail"][-2000:])
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"admitted": self.admitted, "reasons": self.reasons, "scores": self.scores,
                "stages": self.stages, "sandbox": self.sandbox, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(**data)


def static_problems(changed: Sequence[str], files: dict[str, str], editable: Sequence[str]) -> list[str]:
    """Why a change cannot even be tried: paths outside the surface or its targets, files that do not parse."""
    problems = []
    allowed = set(editable)
    for path in changed:
        clean = posixpath.normpath(path)
        if path.startswith("/") or clean.startswith("..") or clean != path or "\\" in path:
            problems.append(f"{path!r} lies outside the editable surface (plugins/): the core, the "
                            "sandbox and the judge cannot be edited")
        elif path not in allowed:
            problems.append(f"{path!r} is not one of the editable targets ({', '.join(sorted(allowed))})")
    for path, text in sorted(files.items()):
        if path.endswith(".py") and text is not None:
            try:
                parse_python(text, filename=path)
            except SyntaxError as exc:
                problems.append(f"{path}:{exc.lineno}: syntax error: {exc.msg}")
    return problems


class Validator:
    """Runs a variant through the stages against one checkpoint and one held-out set."""

    def __init__(self, *, sandbox, config, checkpoint: Path, plan: ProblemPlan, held_out: HeldOutSet,
                 pinned_task, visible_seed: int, sample_seed: int, smoke_size: dict[str, int],
                 full_size: dict[str, int], max_visible_gap: float, timeout_s: float | None = None):
        self.sandbox, self.config, self.checkpoint = sandbox, config, Path(checkpoint)
        self.plan, self.held_out, self.task = plan, held_out, pinned_task
        self.visible_seed, self.sample_seed = visible_seed, sample_seed
        self.smoke_size, self.full_size = smoke_size, full_size
        self.max_visible_gap, self.timeout_s = max_visible_gap, timeout_s

    def validate(self, files: dict[str, str], *, changed: Sequence[str], editable: Sequence[str],
                 threshold: float | None) -> Verdict:
        start = time.perf_counter()
        problems = static_problems(changed, files, editable)
        if problems:
            return Verdict(False, [f"static: {p}" for p in problems], stages={"static": {"ok": False}},
                           seconds=time.perf_counter() - start)
        with tempfile.TemporaryDirectory(prefix="selfloop-variant-") as tmp:
            code = write_tree(files, Path(tmp) / "plugins")
            job = Path(tmp) / "job.json"
            job.write_text(json.dumps(self._job(threshold)))
            result = self.sandbox.run(PAYLOAD, code_dir=code, inputs={"job": job, "model": self.checkpoint},
                                      timeout_s=self.timeout_s)
        verdict = self._decide(result, threshold)
        verdict.seconds = time.perf_counter() - start
        return verdict

    def _job(self, threshold: float | None) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"), "plan": self.plan.to_dict(),
            "visible": {"seed": self.visible_seed, "smoke": self.smoke_size, "full": self.full_size},
            "held_out": self.held_out.prompts(), "threshold": threshold, "sample_seed": self.sample_seed,
        }

    def _decide(self, result, threshold: float | None) -> Verdict:
        log = (result.stdout or "") + ("\n" + result.stderr if result.stderr else "")
        sandbox = {"backend": result.backend, "status": result.status, "exit_code": result.exit_code,
                   "seconds": round(result.seconds, 3), "reason": result.reason,
                   "protections": result.protections, "log_tail": log[-LOG_TAIL_CHARS:]}
        payload = result.result if isinstance(result.result, dict) else {}
        stages = {"static": {"ok": True}, **(payload.get("stages") or {})}
        scores: dict[str, Any] = {}
        for name in ("smoke", "full"):
            if isinstance(stages.get(name), dict) and isinstance(stages[name].get("score"), (int, float)):
                scores[name] = stages[name]["score"]
        verdict = Verdict(False, [], scores=scores, stages=stages, sandbox=sandbox)
        if payload.get("failed"):
            failed = payload["failed"]
            verdict.reasons.append(f"{failed.get('stage')}: {failed.get('error')}")
            return verdict
        if not result.ok:
            verdict.reasons.append(f"sandbox {result.status}: {result.reason or 'no result'}")
            return verdict
        if payload.get("stopped"):
            verdict.reasons.append(f"smoke: {payload['stopped']}")
            return verdict
        if not isinstance(payload.get("held_out_outputs"), dict):
            verdict.reasons.append("held-out: the payload returned no held-out outputs")
            return verdict
        held = score_held_out(self.task, self.held_out, payload["held_out_outputs"])
        verdict.scores.update({"score": held["score"], "held_out": held})
        visible = scores.get("full")
        gap = None if visible is None else visible - held["score"]
        if gap is not None and gap > self.max_visible_gap:
            verdict.reasons.append(
                f"held-out: visible score {visible:.3f} is not confirmed by the held-out judge "
                f"({held['score']:.3f}; gap {gap:.3f} > {self.max_visible_gap:.3f})")
            return verdict
        verdict.admitted = True
        verdict.reasons.append(f"held-out score {held['score']:.3f} (visible {visible:.3f})")
        return verdict


def write_tree(files: dict[str, str], directory: Path) -> Path:
    """Write a plugin tree ({relative path: text}) into a fresh ``directory``."""
    if directory.exists():
        shutil.rmtree(directory)
    for rel, text in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return directory
