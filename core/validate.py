"""Validating one candidate variant: static checks here, then the staged evaluation in the sandbox,
then the held-out judge's score and the admission decision.

Stages, cheapest first, each one's failure a recorded reason:

1. ``static`` (on the host, nothing executed): every changed path lies inside the editable surface
   and its editable targets; every Python file parses.
2. ``load``, ``contract``, ``smoke``, ``full`` run in the sandbox (``selfloop.core.judge_payload``),
   ``full`` only when the smoke score reaches ``threshold``.
3. ``held_out``: the sandbox returns answers and kept examples for the held-out prompts; the pinned
   task scores them here (``selfloop.core.judge``).

A variant is admitted when every stage passed, its gain over the seed plugins vanishes when the
model is taken away, and its visible score does not exceed its held-out score by more than the
sampling noise of both (see ``Validator``).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .judge import (
    HeldOutSet,
    ProblemPlan,
    held_out_outcomes,
    null_outcomes,
    outcome_metrics,
    score_noise,
    score_variance,
)
from .significance import DEFAULT_Z, Noise, compare
from .tunable import parse_python

PAYLOAD = ["python", "-m", "selfloop.core.judge_payload"]
PROBE_PAYLOAD = ["python", "-m", "selfloop.core.probe_payload"]
META_PAYLOAD = ["python", "-m", "selfloop.core.meta_payload"]
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


@dataclass
class Reference:
    """The seed plugins' scores without the model, on one checkpoint: what the model-dependence test
    compares a variant with."""

    held_out: float
    noise: Noise
    visible: float | None


class Validator:
    """Runs a variant through the stages against one checkpoint and one held-out set.

    Two statistical tests (``selfloop.core.significance``, at ``z`` standard errors) follow the
    held-out judge's score:

    - model dependence: with the model taken away (the payload's ``null`` stage), the variant must
      not beat the seed plugins without the model, on the held-out problems (scored here) or on its
      own visible ones. A gain that survives the ablation comes from the plugin doing the task.
    - visible against held-out: a visible score above the held-out one by more than the noise of
      both means the variant games what it can see.

    A baseline (``baseline=True``: the seed plugins on a checkpoint) is never rejected by either:
    what fails is recorded as a note, and its scores without the model become the ``reference``.
    """

    def __init__(self, *, sandbox, config, checkpoint: Path, plan: ProblemPlan, held_out: HeldOutSet,
                 pinned_task, visible_seed: int, sample_seed: int, smoke_size: dict[str, int],
                 full_size: dict[str, int], z: float = DEFAULT_Z, timeout_s: float | None = None,
                 plugins_dirs: Sequence[str | Path] = ()):
        self.sandbox, self.config, self.checkpoint = sandbox, config, Path(checkpoint)
        self.plan, self.held_out, self.task = plan, held_out, pinned_task
        self.visible_seed, self.sample_seed = visible_seed, sample_seed
        self.smoke_size, self.full_size = smoke_size, full_size
        self.z, self.timeout_s = z, timeout_s
        self.reference: Reference | None = None
        # the user's own plugin directories (a task, a model provider): read-only inputs of every run
        self.plugins_inputs = {f"plugins{k}": Path(d).resolve() for k, d in enumerate(plugins_dirs)}
        self.job_config, self.path_inputs = mount_option_paths(config.model_dump(mode="json"))

    def validate(self, files: dict[str, str], *, changed: Sequence[str], editable: Sequence[str],
                 threshold: float | None, baseline: bool = False, run=None) -> Verdict:
        """``run(files, job, inputs, timeout_s) -> SandboxResult`` runs the payload somewhere else
        (an executor's node); by default it runs here, in ``self.sandbox``. The judging stays here."""
        start = time.perf_counter()
        problems = static_problems(changed, files, editable)
        if problems:
            return Verdict(False, [f"static: {p}" for p in problems], stages={"static": {"ok": False}},
                           seconds=time.perf_counter() - start)
        if run is None:
            run = lambda *args: run_payload(self.sandbox, *args)
        result = run(files, self._job(threshold), self.inputs(), self.timeout_s)
        verdict = self._decide(result, threshold, baseline)
        verdict.seconds = time.perf_counter() - start
        return verdict

    def inputs(self) -> dict[str, Path]:
        """The read-only host paths the payload gets besides the job: the checkpoint, the user's
        plugin directories, paths named by component options."""
        return {"model": self.checkpoint, **self.plugins_inputs, **self.path_inputs}

    def _job(self, threshold: float | None) -> dict[str, Any]:
        return {
            "config": self.job_config, "plan": self.plan.to_dict(),
            "visible": {"seed": self.visible_seed, "smoke": self.smoke_size, "full": self.full_size},
            "held_out": self.held_out.prompts(), "threshold": threshold, "sample_seed": self.sample_seed,
            # One-way from the secret held-out seed, which must never enter the sandbox.
            "null_seed": int(hashlib.sha256(f"null:{self.held_out.seed}".encode()).hexdigest()[:8], 16),
            "plugins_inputs": sorted(self.plugins_inputs),
        }

    def _sizes(self, size: dict[str, int]) -> tuple[int, int]:
        return size["refine"] * len(self.plan.refine_difficulties), size["select"]

    def _decide(self, result, threshold: float | None, baseline: bool) -> Verdict:
        sandbox = sandbox_record(result)
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
        outcomes = held_out_outcomes(self.task, self.held_out, payload["held_out_outputs"])
        held = outcome_metrics(self.held_out.refine, outcomes)
        noise = score_noise(outcomes, seed=self.held_out.seed)
        n_held = (len(self.held_out.refine), len(self.held_out.select))
        verdict.scores.update({"score": held["score"], "held_out": held,
                               "held_out_sd": round(math.sqrt(score_variance(noise, *n_held)), 4)})
        without = self._without_model(payload, verdict)
        problems = self._model_dependence(without) if not baseline else []
        visible = scores.get("full")
        if visible is not None:
            gap = compare(visible, score_variance(noise, *self._sizes(self.full_size)),
                          held["score"], score_variance(noise, *n_held), self.z)
            if gap.significant:
                problems.append(f"held-out: visible score {visible:.3f} is not confirmed by the held-out "
                                f"judge ({held['score']:.3f}; gap {gap.describe()})")
        if baseline:
            if without is not None:
                self.reference = Reference(without["score"], without["noise"], without.get("visible"))
            verdict.admitted = True
            verdict.reasons.append(f"baseline: held-out score {held['score']:.3f}")
            verdict.reasons += [f"note (a baseline is never rejected): {p}" for p in problems]
            if without is None:
                verdict.reasons.append("note: no score without the model; the model-dependence test is "
                                       "off on this checkpoint")
            return verdict
        if problems:
            verdict.reasons += problems
            return verdict
        verdict.admitted = True
        shown = "-" if visible is None else f"{visible:.3f}"
        verdict.reasons.append(f"held-out score {held['score']:.3f} (visible {shown}"
                               + (f", without the model {without['score']:.3f})" if without else ")"))
        return verdict

    def _without_model(self, payload: dict[str, Any], verdict: Verdict) -> dict[str, Any] | None:
        """The held-out score with the model taken away (and the variant's visible one), or None."""
        if not isinstance(payload.get("null_outputs"), dict):
            return None
        outcomes = null_outcomes(self.task, self.held_out, payload["null_outputs"])
        metrics = outcome_metrics(self.held_out.null_refine, outcomes)
        stage = verdict.stages.get("null") if isinstance(verdict.stages.get("null"), dict) else {}
        visible = stage.get("visible_score")
        visible = float(visible) if isinstance(visible, (int, float)) else None
        verdict.scores["without_model"] = {"score": metrics["score"], "refine_accuracy": metrics["refine_accuracy"],
                                           "select_f": metrics["select_f"], "visible": visible}
        return {"score": metrics["score"], "noise": score_noise(outcomes, seed=self.held_out.seed),
                "visible": visible}

    def _model_dependence(self, without: dict[str, Any] | None) -> list[str]:
        """Why the variant's gain does not need the model: its score without the model above the seed's."""
        ref = self.reference
        if ref is None:
            return []
        if without is None:
            return ["model dependence: the variant was not scored without the model"]
        n_held = (len(self.held_out.null_refine), len(self.held_out.probes))
        problems = []
        held = compare(without["score"], score_variance(without["noise"], *n_held),
                       ref.held_out, score_variance(ref.noise, *n_held), self.z)
        if held.significant:
            problems.append(f"model dependence: without the model the variant scores {without['score']:.3f} on "
                            f"the held-out problems against the seed's {ref.held_out:.3f} ({held.describe()}); "
                            "its gain does not come from the model")
        if without["visible"] is not None and ref.visible is not None:
            v = score_variance(ref.noise, *self._sizes(self.smoke_size))
            seen = compare(without["visible"], v, ref.visible, v, self.z)
            if seen.significant:
                problems.append(f"model dependence: without the model the variant scores {without['visible']:.3f} "
                                f"on its visible problems against the seed's {ref.visible:.3f} "
                                f"({seen.describe()}); it answers what it has seen, not what the model knows")
        return problems


def sandbox_record(result) -> dict[str, Any]:
    """What a verdict keeps of a sandbox run: how it ended, and the tail of its logs."""
    log = (result.stdout or "") + ("\n" + result.stderr if result.stderr else "")
    return {"backend": result.backend, "status": result.status, "exit_code": result.exit_code,
            "seconds": round(result.seconds, 3), "reason": result.reason,
            "protections": result.protections, "log_tail": log[-LOG_TAIL_CHARS:]}


def mount_option_paths(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """Component options that name a file or directory of the host (a dataset task's data, say)
    become read-only inputs of the sandbox run: each such value is replaced by ``{"$input": name}``,
    which the payload resolves to its mount. The model provider's options stay: the payload loads
    the checkpoint it is given, not the base model."""
    inputs: dict[str, Path] = {}

    def mounted(value):
        if isinstance(value, dict):
            return {k: mounted(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mounted(v) for v in value]
        if isinstance(value, str) and ("/" in value or "." in value) and Path(value).exists():
            name = f"path{len(inputs)}"
            inputs[name] = Path(value).resolve()
            return {"$input": name}
        return value

    out = dict(config)
    for section, value in config.items():
        if section == "model" or not isinstance(value, (dict, list)):
            continue
        items = value if isinstance(value, list) else [value]
        if all(isinstance(item, dict) and "options" in item for item in items):
            done = [{**item, "options": mounted(item["options"])} for item in items]
            out[section] = done if isinstance(value, list) else done[0]
    return out, inputs


def run_payload(sandbox, files: dict[str, str], job: dict[str, Any], inputs: dict[str, Path],
                timeout_s: float | None):
    """A judge's payload over a variant's files in ``sandbox``: the sandbox run of one validation.
    A job with ``"payload": "probe"`` runs the training probe's, whose weights come back through
    an output directory of at most ``job["output_quota_bytes"]``; ``"meta"``, the variant's own
    proposer or parent selector (``selfloop.core.meta``)."""
    probe = job.get("payload") == "probe"
    command = {"probe": PROBE_PAYLOAD, "meta": META_PAYLOAD}.get(job.get("payload"), PAYLOAD)
    with tempfile.TemporaryDirectory(prefix="selfloop-variant-") as tmp:
        code = write_tree(files, Path(tmp) / "plugins")
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        return sandbox.run(command, code_dir=code, timeout_s=timeout_s, inputs={"job": job_path, **inputs},
                           **({"output_quota_bytes": int(job["output_quota_bytes"])} if probe else {}))


def write_tree(files: dict[str, str], directory: Path) -> Path:
    """Write a plugin tree ({relative path: text}) into a fresh ``directory``."""
    if directory.exists():
        shutil.rmtree(directory)
    for rel, text in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return directory
