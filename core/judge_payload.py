"""What runs inside the sandbox for one variant: ``python -m selfloop.core.judge_payload``.

The sandbox mounts the variant's plugin tree at ``$SELFLOOP_CODE``, the job at
``$SELFLOOP_INPUT_JOB``, the current checkpoint at ``$SELFLOOP_INPUT_MODEL``, and the user's own
plugin directories (``--plugins-dir``: a task, a model provider) at ``$SELFLOOP_INPUT_PLUGINS<k>``
(``job["plugins_inputs"]`` names them); the result JSON goes
to ``$SELFLOOP_RESULT`` and is rewritten after every stage, so a crash still reports how far it got.

Stages, each stopping the run when it fails:

1. ``load``: the variant's plugins import, register, and every component the config names builds
   and satisfies its Protocol.
2. ``contract``: the plugins' behavioural tests: the task's problems verify against their own
   answers, the refiner answers every problem with text, every selector keeps a subset.
3. ``smoke``: the visible evaluation on a small subset (the variant's own task and verifier).
4. ``full``: the visible evaluation on the full set, only when the smoke score reaches the job's
   threshold; then the held-out prompts are answered and selected (scored later, on the host).
5. ``null``: the same again with the model taken away (the model provider's ``untrained_copy``,
   by default ``selfloop.core.models.untrained_copy``: the same architecture with random weights,
   peers too): the smoke set, the held-out refinement
   prompts, and the judge's selection probes (labels half right, half borrowed from other probes:
   ``selfloop.core.judge.make_probes``). A variant whose gain survives this does the task itself
   (the host's model-dependence test, ``selfloop.core.validate``).

Self-labels for the selection stages come from greedy decoding with the variant's generator: the
judge holds acquisition fixed so that what is measured is what the selectors keep.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .judge import combined_score, problems_from_prompts, selection_quality, verify_all
from .kinds import call_accepting
from .types import Example, Problem

LABEL_SLACK_TOKENS = 2  # beyond the task's answer budget: room for EOS and a stray token


class StageFailed(Exception):
    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage, self.message = stage, message


class StagedPayload:
    """A payload's stages: each one's output recorded in the result file (rewritten after every
    stage) and printed, except those in ``QUIET``; whatever the variant's code raises is that
    stage's failure."""

    QUIET: tuple[str, ...] = ()
    result_path: Path
    result: dict[str, Any]

    def save(self) -> None:
        tmp = self.result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result))
        os.replace(tmp, self.result_path)

    def stage(self, name: str, fn):
        start = time.perf_counter()
        try:
            out = fn()
        except StageFailed:
            raise
        except Exception as exc:  # the variant's code raised: that is this stage's verdict
            tb = traceback.format_exc(limit=-3)
            print(tb, file=sys.stderr)
            raise StageFailed(name, f"{type(exc).__name__}: {exc}") from None
        self.result["stages"][name] = {**(out or {}), "seconds": round(time.perf_counter() - start, 3)}
        self.save()
        if name not in self.QUIET:
            print(f"stage {name}: {json.dumps(out)[:500]}", flush=True)
        return out


class Payload(StagedPayload):
    QUIET = ("held_out",)  # the logs are shown to proposers; the held-out part is not theirs

    def __init__(self, job: dict[str, Any], code: Path, model_dir: Path, result_path: Path):
        self.job, self.code, self.model_dir, self.result_path = job, code, model_dir, result_path
        self.result: dict[str, Any] = {"stages": {}, "failed": None, "held_out_outputs": None,
                                       "null_outputs": None}
        self.labels: dict[str, str] = {}

    def run(self) -> None:
        try:
            self.stage("load", self.load)
            self.stage("contract", self.contract)
            smoke = self.stage("smoke", lambda: self.visible(self.job["visible"]["smoke"]))
            threshold = self.job.get("threshold")
            if threshold is not None and smoke["score"] < threshold:
                self.result["stopped"] = f"smoke score {smoke['score']:.3f} is below the threshold {threshold:.3f}"
                self.save()
                return
            self.stage("full", lambda: self.visible(self.job["visible"]["full"]))
            self.stage("held_out", self.held_out)
            self.stage("null", self.null)
        except StageFailed as exc:
            self.result["failed"] = {"stage": exc.stage, "error": exc.message}
            self.save()

    # --- stages ---------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        from .config import RunConfig
        from .errors import SelfloopError
        from .pipeline import apply_tree
        from .registry import load_registry
        from .tasks import build_task

        try:  # the variant's pipeline.toml, if it has one, lays over the run config
            self.config = apply_tree(RunConfig.model_validate(resolve_inputs(self.job["config"])), self.code)
        except SelfloopError as exc:
            raise StageFailed("load", str(exc)) from None

        user_dirs = [os.environ[f"SELFLOOP_INPUT_{name.upper()}"] for name in self.job.get("plugins_inputs", [])]
        registry = load_registry([self.code, *user_dirs])
        if any(reg.source == "builtin" for reg in registry.all()):
            raise StageFailed("load", "the variant is not a surface variant (its __init__.py lost SURFACE)")
        c = self.config
        self.model = registry.create("model", c.model.name, c.model.options)
        self.task = build_task(c, registry, model=self.model)
        self.generator = registry.create("generator", c.generator.name, c.generator.options)
        self.rewarder = registry.create("rewarder", c.rewarder.name, c.rewarder.options)
        self.refiner = registry.create("refiner", c.refiner.name, c.refiner.options)
        self.selectors = [registry.create("selector", s.name, s.options) for s in c.select]
        return {"components": [f"{kind}:{comp.name}" for _, kind, comp in c.components()]}

    def contract(self) -> dict[str, Any]:
        rng = random.Random(0)
        plan = self.job["plan"]
        self.policy = self.model.load(self.model_dir)  # first: a chat template may come with it
        checked = sorted({self.task.difficulties.first, plan["select_difficulty"], *plan["refine_difficulties"]})
        for d in checked:
            problems = self.task.problems(d, 3, rng)
            if not problems or not all(isinstance(p, Problem) for p in problems):
                raise StageFailed("contract", f"task.problems({d}, 3) returned no Problems")
            labelled = [p for p in problems if p.answer is not None]
            shown = [self.task.demonstration(p) or p.answer for p in labelled]
            if not all(verify_all(self.task, labelled, shown)):
                raise StageFailed("contract", f"the task's verifier rejects its own answers at difficulty {d}")
        return {"checked_difficulties": checked}

    def visible(self, size: dict[str, int], policy=None) -> dict[str, Any]:
        """The variant's own view of itself: its task makes the problems and judges the answers."""
        plan = self.job["plan"]
        rng = random.Random(f"visible:{self.job['visible']['seed']}")
        refine = [p for d in plan["refine_difficulties"] for p in self.task.problems(d, size["refine"], rng)]
        answers = self.refine(refine, policy)
        refine_accuracy = sum(verify_all(self.task, refine, answers)) / max(1, len(refine))
        pool = self.task.problems(plan["select_difficulty"], size["select"], rng)
        labels = self.label(pool)
        kept = self.select(pool, labels, policy)
        by_prompt = {p.prompt: p for p in pool}
        ours = [e for e in kept if e.prompt in by_prompt]
        kept_correct = sum(verify_all(self.task, [by_prompt[e.prompt] for e in ours], [e.completion for e in ours]))
        correct_total = sum(verify_all(self.task, pool, labels))
        selection = selection_quality(kept_correct, len(kept), correct_total)
        return {"score": combined_score(refine_accuracy, selection["f"]), "refine_accuracy": refine_accuracy,
                **{f"select_{k}": v for k, v in selection.items()}}

    def held_out(self) -> dict[str, Any]:
        prompts = self.job["held_out"]
        refine = problems_from_prompts(prompts["refine"])
        answers = self.refine(refine)
        pool = problems_from_prompts(prompts["select"])
        labels = self.label(pool)
        kept = self.select(pool, labels)
        self.result["held_out_outputs"] = {
            "refine": answers, "select_labels": labels,
            "select_kept": [[e.prompt, e.completion] for e in kept],
        }
        return {"answered": len(answers), "kept": len(kept)}

    def null(self) -> dict[str, Any]:
        from .models import untrained_copy

        ablate = getattr(self.model, "untrained_copy", None)
        seed = int(self.job.get("null_seed", 0))
        null = ablate(self.policy, seed) if callable(ablate) else untrained_copy(self.policy, seed=seed)
        null.path = self.policy.path  # nothing but the weights tells the two apart
        for real, fake in zip(self.policy.peers, null.peers):
            fake.path = real.path
        visible = self.visible(self.job["visible"]["smoke"], null)
        prompts = self.job["held_out"]
        probes = prompts.get("probes") or []
        kept = self.select(problems_from_prompts(probes), [str(q["label"]) for q in probes], null)
        self.result["null_outputs"] = {
            "refine": self.refine(problems_from_prompts(prompts.get("null_refine") or []), null),
            "probes_kept": [[e.prompt, e.completion] for e in kept],
        }
        return {"visible_score": visible["score"], "visible_refine_accuracy": visible["refine_accuracy"],
                "visible_select_f": visible["select_f"]}

    # --- the lifecycle pieces under test ---------------------------------------------------------

    def refine(self, problems: list[Problem], policy=None) -> list[str]:
        answers = call_accepting(self.refiner.refine, policy or self.policy, problems, generator=self.generator,
                                 rewarder=self.rewarder, seed=self.job["sample_seed"], task=self.task)
        if not isinstance(answers, list) or len(answers) != len(problems) or not all(isinstance(a, str) for a in answers):
            raise StageFailed("refine", f"the refiner must return one str per problem ({len(problems)})")
        return answers

    def label(self, pool: list[Problem]) -> list[str]:
        """The real model's greedy self-labels (each prompt labelled once, then remembered)."""
        todo = [p for p in pool if p.prompt not in self.labels]
        if todo:
            longest = self.task.budget(todo) + LABEL_SLACK_TOKENS
            samples = self.generator.generate(self.policy, [p.prompt for p in todo], n=1, temperature=0.0,
                                              max_new_tokens=longest, seed=self.job["sample_seed"])
            for problem, group in zip(todo, samples):
                self.labels[problem.prompt] = group[0] if group else ""
        return [self.labels[p.prompt] for p in pool]

    def select(self, pool: list[Problem], labels: list[str], policy=None) -> list[Example]:
        examples = [Example(prompt=p.prompt, completion=c, difficulty=p.difficulty, source="self_label")
                    for p, c in zip(pool, labels)]
        rng = random.Random(self.job["sample_seed"])
        for selector in self.selectors:
            selection = selector.select(examples, task=self.task, policy=policy or self.policy,
                                        generator=self.generator,
                                        round_index=1, rng=rng, history=[])
            examples = list(selection.kept)
        return examples


def resolve_inputs(value):
    """The job's config with each ``{"$input": name}`` (a host path the judge mounted) replaced by
    where the sandbox mounted it."""
    if isinstance(value, dict):
        if set(value) == {"$input"}:
            return os.environ[f"SELFLOOP_INPUT_{value['$input'].upper()}"]
        return {k: resolve_inputs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_inputs(v) for v in value]
    return value


def main() -> int:
    result_path = Path(os.environ["SELFLOOP_RESULT"])
    job = json.loads(Path(os.environ["SELFLOOP_INPUT_JOB"]).read_text())
    payload = Payload(job, Path(os.environ["SELFLOOP_CODE"]), Path(os.environ["SELFLOOP_INPUT_MODEL"]), result_path)
    payload.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
