"""The training probe: judging an edit of a stage that shapes training by the model it trains.

An acquirer, rewarder, optimizer or pipeline changes nothing about the answers a checkpoint gives;
it changes the next checkpoint. So the probe trains one: from the round's checkpoint, the
variant's pipeline runs a short self-improvement round inside the sandbox
(``selfloop.core.probe_payload``) within a fixed budget (problems acquired per difficulty,
optimizer steps) and seed, and its weights come back through an output directory of bounded size.
The host then loads those weights into its own copy of the checkpoint (the installed model
provider; no code of the variant's runs here), and scores the model's greedy answers, with the
installed generator, on held-out problems drawn from a secret seed at the checkpoint's frontier and
one difficulty past it. The seed pipeline is probed the same way on every round: the reference.

Stages, cheapest first, each one's failure a recorded reason:

1. ``static`` (host): changed paths inside the surface and its targets, Python parses, a
   ``pipeline.toml`` parses.
2. the short probe (``[evolve.probe] steps``): ``load``, ``contract``, ``null``, ``train`` in the
   sandbox; weights within the quota; the host's score. A variant whose short score falls below the
   threshold (from its parent's short score) stops here.
3. the long probe (``long_steps``): its score is the variant's ``score``.

Model dependence: with the model taken away (random weights) the variant's acquirers and selectors
run once (the payload's ``null`` stage); the host verifies what they kept with the task's own
``answer_for``. Keeping significantly more right labels without the model than the seed pipeline
does means the labels come from the pipeline (an oracle), not from the model: rejected.
"""

from __future__ import annotations

import hashlib
import math
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import SelfloopError
from .judge import verify_all
from .pipeline import PIPELINE_FILE, parse
from .validate import (
    Verdict,
    mount_option_paths,
    run_payload,
    sandbox_record,
    static_problems,
)

WEIGHTS = "model.safetensors"


class ProbeValidator:
    """Runs a variant's pipeline through the staged training probe against one checkpoint.

    ``validate`` has the signature of ``Validator.validate``, so every executor runs it; a baseline
    (``baseline=True``: the seed pipeline) is never rejected and becomes the ``reference``.
    """

    def __init__(self, *, sandbox, config, checkpoint: Path, history: Path | None, pinned_task,
                 difficulties: Sequence[int], secret: int, round_index: int, settings, seed: int,
                 z: float, timeout_s: float | None, plugins_dirs: Sequence[str | Path] = ()):
        self.sandbox, self.config, self.checkpoint = sandbox, config, Path(checkpoint)
        self.history = Path(history) if history is not None and Path(history).is_file() else None
        self.task, self.settings, self.seed, self.z = pinned_task, settings, seed, z
        self.round_index, self.timeout_s = round_index, timeout_s
        self.difficulties = list(difficulties)
        rng = random.Random(f"probe-held-out:{secret}")
        self.problems = [p for d in self.difficulties
                         for p in pinned_task.problems(d, settings.per_difficulty, rng, split="held_out")]
        self.null_seed = int(hashlib.sha256(f"probe-null:{secret}".encode()).hexdigest()[:8], 16)
        self.plugins_inputs = {f"plugins{k}": Path(d).resolve() for k, d in enumerate(plugins_dirs)}
        self.plugins_dirs = list(plugins_dirs)
        self.job_config, self.path_inputs = mount_option_paths(config.model_dump(mode="json"))
        self.reference: dict[str, Any] | None = None
        self._host = None  # the installed model provider and generator, built on first use

    # --- the stages ----------------------------------------------------------------------------

    def validate(self, files: dict[str, str], *, changed: Sequence[str], editable: Sequence[str],
                 threshold: float | None, baseline: bool = False, run=None) -> Verdict:
        start = time.perf_counter()
        problems = static_problems(changed, files, editable)
        if PIPELINE_FILE in files and not problems:
            try:
                parse(files[PIPELINE_FILE])
            except SelfloopError as exc:
                problems.append(str(exc))
        if problems:
            return Verdict(False, [f"static: {p}" for p in problems], stages={"static": {"ok": False}},
                           seconds=time.perf_counter() - start)
        run = run or (lambda *args: run_payload(self.sandbox, *args))
        verdict = Verdict(False, [], stages={"static": {"ok": True}})
        short = self._probe(run, files, self.settings.steps, verdict, "probe_short", null=True)
        if short is not None and threshold is not None and short < threshold and not baseline:
            verdict.reasons.append(f"probe: the short probe's model scores {short:.3f}, below the "
                                   f"threshold {threshold:.3f} from its parent's")
            short = None
        score = self._probe(run, files, self.settings.long_steps, verdict, "probe") if short is not None else None
        verdict.seconds = time.perf_counter() - start
        if score is None:
            if baseline:
                verdict.reasons.append("baseline: the seed pipeline's probe failed; probes are off on "
                                       "this checkpoint")
            return verdict
        verdict.scores["score"] = score
        right = verdict.stages["null"].get("right") if isinstance(verdict.stages.get("null"), dict) else None
        if baseline:
            self.reference = {"score": score, "short": short, "null_right": right}
            verdict.admitted = True
            verdict.reasons.append(f"baseline: the seed pipeline's probe model scores {score:.3f}")
            return verdict
        problems = self._model_dependence(right)
        if problems:
            verdict.reasons += problems
            return verdict
        verdict.admitted = True
        seed = self.reference["score"] if self.reference else None
        verdict.reasons.append(f"probe: the model its pipeline trained scores {score:.3f}"
                               + (f" (the seed pipeline's {seed:.3f})" if seed is not None else ""))
        return verdict

    def _probe(self, run, files, steps: int, verdict: Verdict, name: str, null: bool = False) -> float | None:
        """One probe run of ``steps`` steps; its score (recorded in the verdict), or None on failure."""
        job = self._job(steps, null)
        result = run(files, job, self.inputs(), self.timeout_s)
        verdict.sandbox = sandbox_record(result)
        payload = result.result if isinstance(result.result, dict) else {}
        for stage, value in (payload.get("stages") or {}).items():
            verdict.stages[stage if stage in ("load", "contract", "null") else f"{name}.{stage}"] = value
        if payload.get("failed"):
            failed = payload["failed"]
            verdict.reasons.append(f"{name}: {failed.get('stage')}: {failed.get('error')}")
            return None
        if not result.ok:
            verdict.reasons.append(f"{name}: sandbox {result.status}: {result.reason or 'no result'}")
            return None
        if WEIGHTS not in result.outputs:
            verdict.reasons.append(f"{name}: the probe returned no weights ({WEIGHTS})")
            return None
        if null:
            verdict.stages.setdefault("null", {})["right"] = self._right(payload.get("null_kept"))
        try:
            accuracy = self._score(result.outputs[WEIGHTS])
        except Exception as exc:  # noqa: BLE001 - weights the host cannot load are the variant's failure
            verdict.reasons.append(f"{name}: its weights do not load into the checkpoint's model: "
                                   f"{type(exc).__name__}: {str(exc)[:200]}")
            return None
        score = sum(accuracy.values()) / len(accuracy)
        verdict.scores[name] = round(score, 4)
        verdict.scores[f"{name}_by_difficulty"] = {str(d): round(a, 4) for d, a in accuracy.items()}
        return score

    def _job(self, steps: int, null: bool) -> dict[str, Any]:
        return {"payload": "probe", "config": self.job_config, "round_index": self.round_index + 1,
                "seed": self.seed, "budget": {"max_steps": steps, "max_problems": self.settings.label_problems},
                "null": null, "null_seed": self.null_seed,
                "check_difficulties": sorted({self.task.difficulties.first, *self.difficulties}),
                "output_quota_bytes": self.settings.output_mb << 20,
                "threads": self.config.lifecycle.threads or 1,
                "plugins_inputs": sorted(self.plugins_inputs)}

    def inputs(self) -> dict[str, Path]:
        extra = {"history": self.history} if self.history is not None else {}
        return {"model": self.checkpoint, **extra, **self.plugins_inputs, **self.path_inputs}

    # --- the host's judging ---------------------------------------------------------------------

    def _score(self, weights: bytes) -> dict[int, float]:
        """Accuracy by difficulty of the installed generator's greedy answers with ``weights``."""
        import torch
        from safetensors.torch import load_model

        from .models import greedy_answers

        provider, generator = self._installed()
        policy = provider.load(self.checkpoint)
        with tempfile.TemporaryDirectory(prefix="selfloop-probe-") as tmp:
            path = Path(tmp) / WEIGHTS
            path.write_bytes(weights)
            load_model(policy.model, str(path), strict=True)
        if any(not torch.isfinite(p).all() for p in policy.model.parameters()):
            raise ValueError("the weights hold NaN or infinite values")
        policy.model.eval()
        answers = greedy_answers(policy, generator, [p.prompt for p in self.problems],
                                 max_new_tokens=self.task.budget(self.problems) + 2, seed=self.seed)
        right = verify_all(self.task, self.problems, answers)
        out: dict[int, list[bool]] = {}
        for problem, ok in zip(self.problems, right):
            out.setdefault(problem.difficulty, []).append(ok)
        return {d: sum(v) / len(v) for d, v in sorted(out.items())}

    def _installed(self):
        if self._host is None:
            from .registry import load_registry

            registry = load_registry(list(self.plugins_dirs))  # the installed plugins, never a variant's
            c = self.config
            self._host = (registry.create("model", c.model.name, c.model.options),
                          registry.create("generator", c.generator.name, c.generator.options))
        return self._host

    def _right(self, kept) -> int | None:
        """How many of the examples kept without the model are right (None: the task cannot say)."""
        solve = getattr(self.task, "answer_for", None)
        if not callable(solve) or not isinstance(kept, list):
            return None
        from .types import Problem

        rows = [k for k in kept if isinstance(k, list) and len(k) == 3 and all(isinstance(x, (str, int)) for x in k)]
        problems, answers = [], []
        for prompt, completion, difficulty in rows:
            truth = solve(str(prompt))
            if truth is not None:
                problems.append(Problem(str(prompt), truth, int(difficulty) if isinstance(difficulty, int) else 0))
                answers.append(str(completion))
        return sum(verify_all(self.task, problems, answers))

    def _model_dependence(self, right: int | None) -> list[str]:
        ref = None if self.reference is None else self.reference.get("null_right")
        if right is None or ref is None:
            return []
        margin = self.z * math.sqrt(right + ref + 1)  # counts: Poisson noise of both
        if right - ref > margin:
            return [f"model dependence: with the model taken away the variant's pipeline keeps {right} "
                    f"right labels against the seed pipeline's {ref} (margin {margin:.1f}); its labels "
                    "do not come from the model"]
        return []
