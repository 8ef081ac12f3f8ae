"""The closed loop of self-improvement: acquire → select → GRO (generate, reward, optimize) →
refine → evaluate, round after round, resumable.

Round 0 trains the base model (the acquirers that offer labelled data); rounds 1..N are
self-improvement rounds (the acquirers that label harder problems with the current model). Every
stage is a component from the registry, so this module knows no task and no training recipe.

Every round after the base one passes the admission gate (``core/admission.py``): its checkpoint
replaces the previous one only if held-out accuracy at no difficulty already trained on drops
beyond a confidence margin. A rejected round is still a finished round on disk (its report says
why); the next round starts from the last admitted checkpoint and its training set (the rejected
round's self-labels are not carried on), and every selector offering the optional ``tighten()``
method is made stricter first.

What other parts of selfloop (the meta-agent's ``evolve``) build on:

1. ``build_components(config, registry) -> Components``: every lifecycle component of a RunConfig.
2. ``components.model.component.create()`` / ``.load(dir)`` and ``selfloop.core.models.
   save_policy(policy, dir)``: a Policy from the model provider, or from/to a standard Hugging Face
   model directory (``CheckpointError`` when missing, corrupt, or too large).
3. ``run_round(components, policy, round_index, *, history, seed, workdir) -> RoundResult``: one
   round (training included); ``RoundResult.policy`` is the new policy, ``.report`` the round's
   report entry (below), ``.training_set`` the examples to pass as ``history`` to the next round.
   ``LifecycleTrainer(config).train(round_index, plugins_dir=, previous=, out=)`` wraps it for
   checkpoints on disk (``out/model`` is returned, or ``previous`` when the gate rejects the
   round; ``out/data.jsonl`` holds the training set, ``out/report.json`` the round's report).
4. ``evaluate_problems(policy, problems, *, components, refiner=None, seed=0) ->
   dict[int, float]``: accuracy by difficulty of a refiner's answers on given problems (a few
   hundred short problems take seconds); ``draw_problems(task, difficulties, per_difficulty,
   seed)`` draws such a set; ``evaluate_policy(policy, components, *, seen_prompts, seed)`` runs the
   configured evaluators.
5. ``DIR/report.json``::

     {"config": {...validated RunConfig...}, "seed": 0, "started": <unix time>,
      "finished": true|false, "peak_rss_mib": ...,
      "rounds": [{"round": 0, "accuracy_by_difficulty": {"1": 1.0, ...},   # first evaluator
                  "evaluations": [{"evaluator", "metrics", "accuracy_by_difficulty", "details"}],
                  "acquired": {"labelled": 20000}, "selection": [{"selector", "kept", "dropped"}],
                  "data": {"new": n, "training_set": n, "label_accuracy_acquired": x|null,
                           "label_accuracy_kept": x|null, "distinct_ratio": x, ...},
                  "optimize": {"steps", "loss", "tokens_per_second", "seconds", ...},
                  "peers_optimize": [{..., "peak_rss_mib"}, ...],  # model.peers: each peer's
                  "admission": {"admitted": bool, "reason": "...",
                                "by_difficulty": {"1": {"before", "after", "n", "margin"}, ...},
                                # rejected rounds only: where the next round starts, and how
                                # selection was tightened
                                "continues_from": "rounds/round_000/model", "tightened": [...]},
                  "trained_difficulties": [1, 2, 3],  # what the checkpoint was trained on, ever
                  "seconds": {"acquire": s, "select": s, "optimize": s, "evaluate": s,
                              "admission": s},
                  "checkpoint": "rounds/round_000/model", "peak_rss_mib": ...}, ...]}

On disk, round r lives in ``DIR/rounds/round_{r:03d}/`` (``model/`` with its peers in
``model/peers/``, ``data.jsonl``, ``report.json``); a round counts as finished once its
``report.json`` exists (written last, atomically), so a run killed at any point resumes after the
last finished round, from the last admitted one. Without ``keep_checkpoints`` only the last
admitted round's model is kept.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .admission import BASE_ROUND, Admission, admit
from .config import Component
from .errors import CheckpointError, ConfigError, SelfloopError, StageError
from .kinds import call_accepting
from .peers import PeerTraining
from .tasks import TaskView
from .types import Evaluation, Example, Policy, Problem

REPORT = "report.json"
PLOT = "accuracy_by_difficulty.png"
ROUNDS_DIR = "rounds"
# Settings that may differ between a run and its resumption.
RESUMABLE_CHANGES = {("lifecycle", key) for key in
                     ("rounds", "out", "max_seconds", "threads", "plot", "keep_checkpoints")}
# Sections a lifecycle run does not use: they may change freely between a run and its resumption.
UNUSED_SECTIONS = {"evolve", "sandbox", "llm", "proposer", "parent_selector"}


@dataclass
class Part:
    """A built component and where it came from (for error messages)."""

    kind: str
    name: str
    plugin: str
    component: Any


@dataclass
class Components:
    """Every lifecycle component of a run config, built. ``task.component`` is a ``TaskView``."""

    model: Part
    task: Part
    acquirers: list[Part]
    selectors: list[Part]
    generator: Part
    rewarder: Part
    optimizer: Part
    refiner: Part
    evaluators: list[Part]
    config: Any = None
    plugins_dirs: list[str] = field(default_factory=list)  # where the plugins came from (for peers)
    gate_refiner: Part | None = None  # what the admission gate answers with (lifecycle.admission_refiner)


@dataclass
class RoundResult:
    policy: Policy
    report: dict[str, Any]
    training_set: list[Example]

    @property
    def admitted(self) -> bool:
        return self.report["admission"]["admitted"]


def build_components(config, registry) -> Components:
    """Build the task and every lifecycle component the config names (not proposer/parents)."""
    config.check_names(registry)

    def part(kind, component):
        reg = registry.get(kind, component.name)
        return Part(kind, component.name, reg.plugin,
                    registry.create(kind, component.name, component.options))

    model = part("model", config.model)
    task = part("task", config.task)
    task.component = TaskView(task.component, name=config.task.name,
                              render=getattr(model.component, "render_messages", None))
    if task.component.runs_model_output:
        from selfloop.sandbox.verify import SandboxVerifier

        task.component.verifier = SandboxVerifier(config, list(getattr(registry, "plugins_dirs", [])))
    return Components(
        model=model,
        task=task,
        acquirers=[part("acquirer", c) for c in config.acquire],
        selectors=[part("selector", c) for c in config.select],
        generator=part("generator", config.generator),
        rewarder=part("rewarder", config.rewarder),
        optimizer=part("optimizer", config.optimizer),
        refiner=part("refiner", config.refiner),
        evaluators=[part("evaluator", c) for c in config.evaluate],
        config=config,
        plugins_dirs=list(getattr(registry, "plugins_dirs", [])),
        gate_refiner=part("refiner", Component(name=config.lifecycle.admission_refiner)),
    )


def call_stage(stage: str, part: Part, method: str, *args, **kwargs):
    """Run one component method; anything it raises becomes a StageError naming it."""
    try:
        return getattr(part.component, method)(*args, **kwargs)
    except (SelfloopError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise StageError(stage, part.name, part.plugin, exc) from exc


# --- one round ----------------------------------------------------------------------------------

def run_round(components: Components, policy: Policy, round_index: int, *,
              history: list[Example], seed: int, workdir: Path, log=None,
              trained_difficulties=()) -> RoundResult:
    """One round: acquire, select, optimize, evaluate, and the admission gate's verdict.

    ``trained_difficulties``: what ``policy`` was trained on before (beyond ``history``'s). The
    policy is trained in place: a caller that rejects the round reloads the previous checkpoint.
    """
    import torch

    log = log or (lambda message: None)
    rng = random.Random(f"{seed}:{round_index}")
    torch.manual_seed(rng.randrange(2**31))
    c = components
    seconds: dict[str, float] = {}
    task, generator = c.task.component, c.generator.component

    started = time.perf_counter()
    acquired, acquired_by = [], {}
    for part in c.acquirers:
        examples = call_stage("acquire", part, "acquire", task=task, policy=policy,
                              generator=generator, round_index=round_index, rng=rng)
        _check_examples(examples, "acquire", part)
        acquired_by[part.name] = len(examples)
        acquired += examples
    seconds["acquire"] = time.perf_counter() - started
    log(f"round {round_index}: acquired {len(acquired)} examples {acquired_by}")

    started = time.perf_counter()
    kept, selection = list(acquired), []
    for part in c.selectors:
        result = call_stage("select", part, "select", kept, task=task, policy=policy,
                            generator=generator, round_index=round_index, rng=rng, history=history)
        _check_examples(result.kept, "select", part)
        kept = list(result.kept)
        selection.append(result.report.to_dict())
        log(f"round {round_index}: {part.name} kept {result.report.kept}, dropped "
            f"{result.report.dropped or 'none'}")
    seconds["select"] = time.perf_counter() - started
    old_keys = {(e.prompt, e.completion) for e in history}
    new_kept = [e for e in kept if (e.prompt, e.completion) not in old_keys]
    training_set = kept
    if round_index > 0 and not new_kept:
        log(f"round {round_index}: WARNING: no new examples kept ({len(acquired)} acquired); "
            "this round trains on the previous data only. See the selection above for why")
    trained = set(trained_difficulties) | {e.difficulty for e in history}
    gate = AdmissionGate(c, trained | {e.difficulty for e in training_set}, seed, round_index)
    if round_index > 0:
        gate.measure_before(policy)  # before training: the optimizer updates the policy in place

    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    peers = PeerTraining(policy.peers, training_set, components=c, round_index=round_index,
                         seed=random.Random(f"{seed}:{round_index}:peers").randrange(2**31),
                         workdir=workdir / "peers",
                         threads=torch.get_num_threads())
    with peers:  # the peers train in their own processes while the policy trains here
        result = call_stage("optimize", c.optimizer, "optimize", policy, training_set, task=task,
                            generator=generator, rewarder=c.rewarder.component, rng=rng,
                            workdir=workdir, round_index=round_index)
    policy = result.policy
    policy.peers = peers.policies
    seconds["optimize"] = time.perf_counter() - started

    started = time.perf_counter()
    seen = {e.prompt for e in training_set} | {e.prompt for e in history}
    evaluations = evaluate_policy(policy, c, seen_prompts=seen, seed=rng.randrange(2**31))
    seconds["evaluate"] = time.perf_counter() - started
    admission = gate.decide(policy) if round_index > 0 else Admission(True, BASE_ROUND)
    seconds["admission"] = gate.seconds
    log(f"round {round_index}: {'admitted' if admission.admitted else 'REJECTED'}: "
        f"{admission.reason}")

    report = {
        "round": round_index,
        "accuracy_by_difficulty": {str(d): a for d, a in
                                   (evaluations[0].accuracy_by_difficulty if evaluations else {}).items()},
        "evaluations": [_evaluation_dict(e) for e in evaluations],
        "acquired": acquired_by,
        "selection": selection,
        "data": _data_report(acquired, new_kept, training_set),
        "optimize": {k: _plain(v) for k, v in result.metrics.items()},
        **({"peers_optimize": [{k: _plain(v) for k, v in m.items()} for m in peers.metrics]}
           if peers.metrics else {}),
        "admission": admission.to_dict(),
        # what the checkpoint has been trained on, for the next round's gate
        "trained_difficulties": sorted(gate.difficulties),
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }
    return RoundResult(policy, report, training_set)


class AdmissionGate:
    """Measures the checkpoints before and after a round on the same fresh problems, and admits.

    The problems are drawn from a seed of their own (``admission:<seed>:<round>``), which no
    acquirer or evaluator draw shares, at every difficulty either checkpoint is trained on.
    """

    def __init__(self, components: Components, difficulties, seed: int, round_index: int):
        settings = getattr(components.config, "lifecycle", None)
        self.components, self.difficulties = components, set(difficulties)
        self.enabled = settings is None or settings.admission
        self.per_difficulty = settings.admission_per_difficulty if settings else 200
        self.alpha = settings.admission_alpha if settings else 0.05
        self.seed = f"admission:{seed}:{round_index}"
        self.before: dict[int, tuple[int, int]] = {}
        self.seconds = 0.0
        self._problems: list[Problem] = []

    def measure_before(self, policy: Policy) -> None:
        if self.enabled and self.difficulties:
            self._problems = draw_problems(self.components.task.component,
                                           sorted(self.difficulties), self.per_difficulty, self.seed)
            self.before = self._measure(policy)

    def decide(self, policy: Policy) -> Admission:
        if not self.enabled:
            return Admission(True, "admission gate off (lifecycle.admission = false)")
        return admit(self.before, self._measure(policy) if self._problems else {}, self.alpha)

    def _measure(self, policy: Policy) -> dict[int, tuple[int, int]]:
        started = time.perf_counter()
        gate = self.components.gate_refiner
        counts = count_correct(policy, self._problems, components=self.components,
                               refiner=gate.component if gate else None)
        self.seconds += time.perf_counter() - started
        return counts


def _check_examples(examples, stage, part) -> None:
    if not isinstance(examples, list) or not all(isinstance(e, Example) for e in examples):
        raise StageError(stage, part.name, part.plugin,
                         TypeError(f"expected a list of Example, got {type(examples).__name__}"))


def _data_report(acquired: list[Example], kept_new: list[Example], training_set: list[Example]):
    """Sizes, diversity, and (when the acquirer recorded the truth) how clean the labels are."""
    import math
    from collections import Counter

    def label_accuracy(examples):
        audited = [e for e in examples if e.meta.get("audit_answer") is not None]
        if not audited:
            return None
        return sum(e.completion == e.meta["audit_answer"] for e in audited) / len(audited)

    completions = [e.completion for e in kept_new]
    chars = Counter("".join(completions))
    total = sum(chars.values()) or 1
    return {
        "acquired": len(acquired), "new": len(kept_new), "training_set": len(training_set),
        "difficulties": sorted({e.difficulty for e in kept_new}),
        "label_accuracy_acquired": label_accuracy(acquired),
        "label_accuracy_kept": label_accuracy(kept_new),
        "distinct_ratio": len(set(completions)) / len(completions) if completions else None,
        "char_entropy_bits": -sum(n / total * math.log2(n / total) for n in chars.values())
        if completions else None,
    }


def _evaluation_dict(e: Evaluation) -> dict[str, Any]:
    return {"evaluator": e.evaluator, "metrics": {k: _plain(v) for k, v in e.metrics.items()},
            "accuracy_by_difficulty": {str(k): v for k, v in e.accuracy_by_difficulty.items()},
            "details": e.details}


def _plain(value):
    if isinstance(value, float) and math.isnan(value):  # NaN is not JSON
        return None
    return value


# --- evaluation ---------------------------------------------------------------------------------

def evaluate_policy(policy: Policy, components: Components, *, seen_prompts: set[str],
                    seed: int) -> list[Evaluation]:
    """Run every configured evaluator on ``policy`` with the configured refiner."""
    out = []
    for part in components.evaluators:
        evaluation = call_stage(
            "evaluate", part, "evaluate", policy, task=components.task.component,
            refiner=TaskRefiner(components.refiner, components),
            generator=components.generator.component,
            rewarder=components.rewarder.component, seen_prompts=seen_prompts, seed=seed)
        if not isinstance(evaluation, Evaluation):
            raise StageError("evaluate", part.name, part.plugin,
                             TypeError(f"expected an Evaluation, got {type(evaluation).__name__}"))
        out.append(evaluation)
    return out


class TaskRefiner:
    """A refiner that is handed the run's task whether its caller passes it or not (evaluators
    written before refiners took a task keep working)."""

    def __init__(self, part: Part, components: Components):
        self.part, self.components = part, components

    def refine(self, policy, problems, *, generator=None, rewarder=None, seed=0, task=None):
        return refine(self.part, policy, list(problems), components=self.components, seed=seed)


def draw_problems(task, difficulties, per_difficulty: int, seed: int | str, *,
                  split: str = "held_out") -> list[Problem]:
    """``per_difficulty`` problems of ``task`` (a TaskView) at each difficulty, from a seed; from
    the held-out part of a task over finite data unless ``split`` says otherwise."""
    rng = random.Random(f"problems:{seed}")
    view = task if isinstance(task, TaskView) else TaskView(task)
    return [p for d in difficulties for p in view.problems(d, per_difficulty, rng, split=split)]


def evaluate_problems(policy: Policy, problems: list[Problem], *, components: Components,
                      refiner=None, seed: int = 0) -> dict[int, float]:
    """Accuracy by difficulty of ``refiner`` (default: the configured one) on ``problems``."""
    counts = count_correct(policy, problems, components=components, refiner=refiner, seed=seed)
    return {d: correct / n for d, (correct, n) in counts.items()}


def count_correct(policy: Policy, problems: list[Problem], *, components: Components,
                  refiner=None, seed: int = 0) -> dict[int, tuple[int, int]]:
    """(correct, problems) by difficulty of ``refiner``'s answers on ``problems``."""
    refiner_part = components.refiner if refiner is None else Part("refiner", "given", "?", refiner)
    answers = refine(refiner_part, policy, problems, components=components, seed=seed)
    verdicts = components.task.component.verify_many(problems, answers)
    by: dict[int, list[bool]] = {}
    for problem, verdict in zip(problems, verdicts, strict=True):
        by.setdefault(problem.difficulty, []).append(verdict)
    return {d: (sum(v), len(v)) for d, v in sorted(by.items())}


def refine(part: Part, policy: Policy, problems: list[Problem], *, components: Components,
           seed: int = 0) -> list[str]:
    """A refiner's answers (the task is passed to refiners that take it)."""
    try:
        answers = call_accepting(part.component.refine, policy, problems,
                                 generator=components.generator.component,
                                 rewarder=components.rewarder.component, seed=seed,
                                 task=components.task.component)
    except (SelfloopError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise StageError("refine", part.name, part.plugin, exc) from exc
    if not isinstance(answers, list) or len(answers) != len(problems):
        raise StageError("refine", part.name, part.plugin,
                         TypeError(f"expected {len(problems)} answers, got "
                                   f"{len(answers) if isinstance(answers, list) else type(answers).__name__}"))
    return answers


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the run on disk ----------------------------------------------------------------------------

def round_dir(out: Path, round_index: int) -> Path:
    return out / ROUNDS_DIR / f"round_{round_index:03d}"


def save_examples(examples: list[Example], path: Path) -> None:
    tmp = path.with_suffix(".partial")
    with tmp.open("w") as f:
        for e in examples:
            f.write(json.dumps(asdict(e)) + "\n")
    os.replace(tmp, path)


def load_examples(path: Path) -> list[Example]:
    try:
        return [Example(**json.loads(line)) for line in path.read_text().splitlines() if line]
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: corrupt training data: {exc}") from None


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def finished_rounds(out: Path) -> list[dict[str, Any]]:
    """The reports of the rounds finished in ``out``, in order (stops at the first gap)."""
    reports = []
    index = 0
    while (round_dir(out, index) / REPORT).is_file():
        try:
            reports.append(json.loads((round_dir(out, index) / REPORT).read_text()))
        except ValueError as exc:
            raise CheckpointError(f"{round_dir(out, index) / REPORT}: corrupt: {exc}") from None
        index += 1
    return reports


class Lifecycle:
    """A run of the closed loop in ``out``: builds the components, trains, resumes."""

    def __init__(self, config, registry, out: str | os.PathLike, *, log=None):
        self.config = config
        self.out = Path(out)
        self.log = log or (lambda message: None)
        self.components = build_components(config, registry)

    def _check_same_config(self) -> dict[str, Any] | None:
        path = self.out / REPORT
        if not path.is_file():
            return None
        try:
            previous = json.loads(path.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{path}: corrupt report: {exc}") from None
        now = self.config.model_dump(mode="json")
        before = previous.get("config", {})
        for section in sorted((set(now) | set(before)) - UNUSED_SECTIONS):
            a, b = now.get(section), before.get(section)
            if isinstance(a, dict) and isinstance(b, dict):
                diff = [k for k in set(a) | set(b) if a.get(k) != b.get(k)
                        and (section, k) not in RESUMABLE_CHANGES]
                if diff:
                    raise ConfigError(f"{self.out} holds a run with a different config "
                                      f"([{section}] {', '.join(sorted(diff))}); resume it with "
                                      "its own config or choose another --out")
            elif a != b:
                raise ConfigError(f"{self.out} holds a run with a different config ({section}); "
                                  "resume it with its own config or choose another --out")
        return previous

    def run(self, rounds: int | None = None, *, on_round=None) -> dict[str, Any]:
        """Run (or resume) rounds 0..``rounds``; returns the report (also in ``out/report.json``)."""
        from .models import save_policy

        settings = self.config.lifecycle
        provider = self.components.model.component
        rounds = settings.rounds if rounds is None else rounds
        use_threads(settings.threads)
        self.out.mkdir(parents=True, exist_ok=True)
        previous = self._check_same_config()
        done = finished_rounds(self.out)
        report = {
            "config": self.config.model_dump(mode="json"), "seed": self.config.seed,
            "started": previous.get("started", time.time()) if previous else time.time(),
            "finished": False, "rounds": done, "peak_rss_mib": peak_rss_mib(),
        }
        write_json(self.out / REPORT, report)
        if done:
            admitted = last_admitted(done)
            start = round_dir(self.out, admitted)
            self.log(f"resuming after round {len(done) - 1} from {start}"
                     + (" (the last admitted round)" if admitted < len(done) - 1 else ""))
            policy = provider.load(start / "model")
            history = load_examples(start / "data.jsonl")
            trained = done[admitted].get("trained_difficulties", ())
            for entry in done:  # replay the tightening every rejected round made
                if not is_admitted(entry):
                    tighten_selectors(self.components.selectors)
        else:
            policy, history, trained, admitted = provider.create(), [], (), 0
        run_started = time.monotonic()
        for index in range(len(done), rounds + 1):
            if settings.max_seconds is not None and time.monotonic() - run_started > settings.max_seconds:
                self.log(f"stopping before round {index}: lifecycle.max_seconds reached")
                break
            directory = round_dir(self.out, index)
            result = run_round(self.components, policy, index, history=history,
                               seed=self.config.seed, workdir=directory / "work", log=self.log,
                               trained_difficulties=trained)
            save_policy(result.policy, directory / "model")
            save_examples(result.training_set, directory / "data.jsonl")
            result.report["checkpoint"] = str((directory / "model").relative_to(self.out))
            if result.admitted:
                policy, history, admitted = result.policy, result.training_set, index
                trained = result.report["trained_difficulties"]
            else:  # the next round starts where this one did, with stricter selection
                result.report["admission"]["continues_from"] = str(
                    (round_dir(self.out, admitted) / "model").relative_to(self.out))
                result.report["admission"]["tightened"] = self._tighten()
                policy = provider.load(round_dir(self.out, admitted) / "model")
            write_json(directory / REPORT, result.report)  # the round is finished from here on
            if not settings.keep_checkpoints:
                _drop_models(self.out, index, keep=admitted)
            report["rounds"].append(result.report)
            report["peak_rss_mib"] = peak_rss_mib()
            write_json(self.out / REPORT, report)
            if settings.plot:
                plot_accuracy(report["rounds"], self.out / PLOT)
            if on_round:
                on_round(result.report)
        report["finished"] = len(report["rounds"]) >= rounds + 1
        write_json(self.out / REPORT, report)
        if settings.plot and report["rounds"]:
            plot_accuracy(report["rounds"], self.out / PLOT)
        return report


    def _tighten(self) -> list[str]:
        changes = tighten_selectors(self.components.selectors)
        self.log("selection tightened: " + ("; ".join(changes) if changes else
                                            "no selector offers a stricter setting"))
        return changes


def is_admitted(entry: dict[str, Any]) -> bool:
    """Whether a round report's checkpoint was admitted (reports from before the gate: yes)."""
    return entry.get("admission", {}).get("admitted", True)


def last_admitted(reports: list[dict[str, Any]]) -> int:
    """The index of the last admitted round (round 0 always is)."""
    return max(i for i, entry in enumerate(reports) if i == 0 or is_admitted(entry))


def tighten_selectors(selectors: list[Part]) -> list[str]:
    """Make every selector that offers ``tighten()`` stricter, after a rejected round.

    ``tighten()`` is an optional selector method: it makes the selector keep less (a higher
    agreement quorum, a higher confidence floor...) and returns what it changed, or None when it is
    already as strict as it gets. The core knows nothing of what the options mean.
    """
    changes = []
    for part in selectors:
        if callable(getattr(part.component, "tighten", None)):
            change = call_stage("select", part, "tighten")
            if change:
                changes.append(f"{part.name}: {change}")
    return changes


def use_threads(threads: int | None) -> None:
    """torch's CPU threads for this process (and, through it, for the peer workers)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _drop_models(out: Path, last: int, *, keep: int) -> None:
    """Remove the models of rounds 0..``last`` but round ``keep``'s (the last admitted)."""
    import shutil

    for index in range(last + 1):
        model = round_dir(out, index) / "model"
        if index != keep and model.is_dir():
            shutil.rmtree(model)


class LifecycleTrainer:
    """Trains one round's checkpoint from a plugins directory (for the meta-agent's ``evolve``).

    ``train(r, plugins_dir=, previous=, out=)``: loads the plugins, starts from ``previous`` (a
    model directory whose parent holds ``data.jsonl`` and ``report.json``; None for round 0), runs
    round ``r`` and writes ``out/data.jsonl`` and ``out/report.json``. Returns ``out/model`` when
    the admission gate admits the round; else ``previous`` (``out/report.json`` says rejected, and
    later calls on this trainer tighten the selectors once more).
    """

    def __init__(self, config, *, log=None):
        self.config = config
        self.log = log
        self.rejections = 0  # rounds this trainer rejected: how often to tighten the selectors

    def train(self, round_index: int, *, plugins_dir: Path | None, previous: Path | None,
              out: Path) -> Path:
        from .models import save_policy
        from .registry import load_registry

        use_threads(self.config.lifecycle.threads)
        registry = load_registry([plugins_dir] if plugins_dir else [])
        components = build_components(self.config, registry)
        for _ in range(self.rejections):
            tighten_selectors(components.selectors)
        trained = ()
        if previous is None:
            policy, history = components.model.component.create(), []
        else:
            policy = components.model.component.load(Path(previous))
            data, report = Path(previous).parent / "data.jsonl", Path(previous).parent / REPORT
            history = load_examples(data) if data.is_file() else []
            if report.is_file():
                trained = json.loads(report.read_text()).get("trained_difficulties", ())
        out = Path(out)
        result = run_round(components, policy, round_index, history=history,
                           seed=self.config.seed, workdir=out / "work", log=self.log,
                           trained_difficulties=trained)
        save_examples(result.training_set, out / "data.jsonl")
        model = out / "model"
        if result.admitted or previous is None:  # no checkpoint before to fall back on
            save_policy(result.policy, model)
        else:
            model = Path(previous)
            result.report["admission"]["continues_from"] = str(model)
            result.report["admission"]["tightened"] = tighten_selectors(components.selectors)
            self.rejections += 1
        write_json(out / REPORT, result.report)
        return model


# --- the plot -----------------------------------------------------------------------------------

def plot_accuracy(rounds: list[dict[str, Any]], path: Path) -> None:
    """``accuracy_figure`` as a PNG."""
    fig = accuracy_figure(rounds)  # first: it picks the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def accuracy_of(entry: dict[str, Any]) -> dict[str, float]:
    """A round report's accuracy by difficulty (reports written before the rename: by digits)."""
    return entry.get("accuracy_by_difficulty") or entry.get("accuracy_by_digits") or {}


def accuracy_figure(rounds: list[dict[str, Any]]):
    """Accuracy by difficulty, one line per round; rejected rounds grey and dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for entry in rounds:
        acc = accuracy_of(entry)
        xs = sorted(int(d) for d in acc)
        if is_admitted(entry):
            ax.plot(xs, [acc[str(x)] for x in xs], marker="o", label=f"round {entry['round']}")
        else:
            ax.plot(xs, [acc[str(x)] for x in xs], marker="x", linestyle="--", color="grey",
                    alpha=0.7, label=f"round {entry['round']} (rejected)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("difficulty")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("accuracy by difficulty, per round")
    fig.tight_layout()
    return fig
