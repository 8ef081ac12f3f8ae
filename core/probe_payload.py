"""What runs inside the sandbox for a training probe: ``python -m selfloop.core.probe_payload``.

The sandbox mounts the variant's plugin tree at ``$SELFLOOP_CODE``, the job at
``$SELFLOOP_INPUT_JOB``, the round's checkpoint at ``$SELFLOOP_INPUT_MODEL``, the data it was
trained on at ``$SELFLOOP_INPUT_HISTORY`` (when there is some) and the user's plugin directories
at ``$SELFLOOP_INPUT_PLUGINS<k>``. Stages, each stopping the run when it fails:

1. ``load``: the variant's plugins register, its pipeline (``pipeline.toml``) lays over the run
   config, and every component builds (a name nothing registers fails here, in one line).
2. ``contract``: the task's problems verify against their own answers; the checkpoint loads.
3. ``null``: with the model taken away (random weights, peers too) the variant's acquirers and
   selectors run once: the examples they keep go back to the host, which counts how many are right.
   Labels right without the model come from the pipeline itself (an oracle), not from the model.
4. ``train``: one self-improvement round of the variant's pipeline from the checkpoint, within the
   job's budget (problems per difficulty, optimizer steps), the peers voting but not trained, no
   evaluation here; the trained weights go to ``$SELFLOOP_OUTPUT/model.safetensors``.

The host loads those weights into its own copy of the checkpoint (no code of the variant's) and
scores the model's greedy answers on held-out problems the sandbox never sees
(``selfloop.core.probe``).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

from .judge import verify_all
from .judge_payload import StagedPayload, StageFailed, resolve_inputs

WEIGHTS = "model.safetensors"
NULL_KEPT_LIMIT = 4000  # examples returned from the null stage, at most


class ProbePayload(StagedPayload):
    def __init__(self, job: dict[str, Any], code: Path, model_dir: Path, result_path: Path,
                 output_dir: Path, history: Path | None):
        self.job, self.code, self.model_dir, self.result_path = job, code, model_dir, result_path
        self.output_dir, self.history = output_dir, history
        self.result: dict[str, Any] = {"stages": {}, "failed": None, "null_kept": None}

    def run(self) -> None:
        try:
            self.stage("load", self.load)
            self.stage("contract", self.contract)
            if self.job.get("null"):
                self.stage("null", self.null)
            self.stage("train", self.train)
        except StageFailed as exc:
            self.result["failed"] = {"stage": exc.stage, "error": exc.message}
            self.save()

    def load(self) -> dict[str, Any]:
        from .components import build_components
        from .config import RunConfig
        from .errors import SelfloopError
        from .pipeline import apply_tree, unknown_components
        from .registry import load_registry

        user_dirs = [os.environ[f"SELFLOOP_INPUT_{name.upper()}"] for name in self.job.get("plugins_inputs", [])]
        registry = load_registry([self.code, *user_dirs])
        if any(reg.source == "builtin" for reg in registry.all()):
            raise StageFailed("load", "the variant is not a surface variant (its __init__.py lost SURFACE)")
        try:
            config = apply_tree(RunConfig.model_validate(resolve_inputs(self.job["config"])), self.code)
        except SelfloopError as exc:
            raise StageFailed("load", str(exc)) from None
        unknown = unknown_components(config, registry)
        if unknown:
            raise StageFailed("load", f"the pipeline names {', '.join(unknown)}, which no plugin registers")
        self.components = build_components(config, registry)
        return {"pipeline": {"acquire": [a.name for a in config.acquire],
                             "select": [s.name for s in config.select],
                             "rewarder": config.rewarder.name, "optimizer": config.optimizer.name}}

    def contract(self) -> dict[str, Any]:
        task = self.components.task.component
        rng = random.Random(0)
        for d in self.job["check_difficulties"]:
            problems = [p for p in task.problems(d, 3, rng) if p.answer is not None]
            shown = [task.demonstration(p) or p.answer for p in problems]
            if not all(verify_all(task, problems, shown)):
                raise StageFailed("contract", f"the task's verifier rejects its own answers at difficulty {d}")
        self.policy = self.components.model.component.load(self.model_dir)
        return {"checked_difficulties": self.job["check_difficulties"], "peers": len(self.policy.peers)}

    def null(self) -> dict[str, Any]:
        from .models import untrained_copy

        model = self.components.model.component
        ablate = getattr(model, "untrained_copy", None)
        seed = int(self.job["null_seed"])
        null = ablate(self.policy, seed) if callable(ablate) else untrained_copy(self.policy, seed=seed)
        kept = self._acquire_and_select(null)
        self.result["null_kept"] = [[e.prompt, e.completion, e.difficulty] for e in kept[:NULL_KEPT_LIMIT]]
        return {"kept": len(kept)}

    def _acquire_and_select(self, policy) -> list:
        from .components import call_stage
        from .round import _budget

        c = self.components
        rng = random.Random(f"{self.job['seed']}:null")
        examples = []
        for part in c.acquirers:
            examples += call_stage("acquire", part, "acquire", task=c.task.component, policy=policy,
                                   generator=c.generator.component, round_index=self.job["round_index"],
                                   rng=rng, **_budget(part, "acquire", self.job["budget"]))
        for part in c.selectors:
            examples = list(call_stage("select", part, "select", examples, task=c.task.component,
                                       policy=policy, generator=c.generator.component,
                                       round_index=self.job["round_index"], rng=rng, history=[]).kept)
        return examples

    def train(self) -> dict[str, Any]:
        import torch
        from safetensors.torch import save_model

        from .round import run_round
        from .rundir import load_examples

        torch.set_num_threads(int(self.job.get("threads", 1)))
        history = load_examples(self.history) if self.history else []
        outcome = run_round(self.components, self.policy, self.job["round_index"], history=history,
                            seed=self.job["seed"], workdir=Path.cwd() / "probe",
                            budget=self.job["budget"], judge=False, train_peers=False)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_model(outcome.policy.model, str(self.output_dir / WEIGHTS))
        report = outcome.report
        return {"acquired": report["acquired"], "kept": len(outcome.training_set),
                "selection": [{"selector": s.get("selector"), "kept": s.get("kept")} for s in report["selection"]],
                "optimize": {k: v for k, v in report["optimize"].items() if isinstance(v, (int, float))},
                "round_seconds": {k: round(v, 2) for k, v in report["seconds"].items()}}


def main() -> int:
    job = json.loads(Path(os.environ["SELFLOOP_INPUT_JOB"]).read_text())
    history = os.environ.get("SELFLOOP_INPUT_HISTORY")
    payload = ProbePayload(job, Path(os.environ["SELFLOOP_CODE"]), Path(os.environ["SELFLOOP_INPUT_MODEL"]),
                           Path(os.environ["SELFLOOP_RESULT"]), Path(os.environ["SELFLOOP_OUTPUT"]),
                           Path(history) if history else None)
    payload.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
