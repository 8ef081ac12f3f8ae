"""One round of the closed loop: acquire → select → GRO (generate, reward, optimize) → evaluate,
and the admission gate's verdict; and the evaluation helpers other parts build on.

Round 0 trains the base model (the acquirers that offer labelled data); rounds 1..N are
self-improvement rounds (the acquirers that label harder problems with the current model). Every
stage is a component from the registry (``core/components.py``), so this module knows no task and
no training recipe.

Every round after the base one passes the admission gate (``core/admission.py``): its checkpoint
replaces the previous one only if held-out accuracy at no difficulty already trained on drops
beyond a confidence margin. A caller that rejects a round starts the next one from the last
admitted checkpoint, after ``tighten_selectors``.

What other parts of selfloop (the meta-agent's ``evolve``, the benchmarks) build on:

- ``run_round(components, policy, round_index, *, history, seed, workdir) -> RoundOutcome``: one
  round (training included); ``.policy`` is the new policy, ``.report`` the round's report entry
  (its format: ``selfloop.core.lifecycle``), ``.training_set`` the examples to pass as ``history``
  to the next round.
- ``evaluate_problems(policy, problems, *, components, refiner=None, seed=0) -> dict[int, float]``:
  accuracy by difficulty of a refiner's answers on given problems; ``draw_problems(task,
  difficulties, per_difficulty, seed)`` draws such a set; ``evaluate_policy(policy, components, *,
  seen_prompts, seed)`` runs the configured evaluators.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .admission import BASE_ROUND, Admission, admit
from .components import Components, Part, call_stage
from .errors import SelfloopError, StageError
from .kinds import call_accepting
from .peers import PeerTraining
from .tasks import TaskView
from .types import Evaluation, Example, Policy, Problem

NO_NEW_EXAMPLES = "no new examples kept"


@dataclass
class RoundOutcome:
    """What ``run_round`` returns: the trained policy, the round's report entry, its training set."""

    policy: Policy
    report: dict[str, Any]
    training_set: list[Example]

    @property
    def admitted(self) -> bool:
        return self.report["admission"]["admitted"]


def run_round(components: Components, policy: Policy, round_index: int, *,
              history: list[Example], seed: int, workdir: Path, log=None,
              trained_difficulties=(), budget: dict[str, int] | None = None,
              judge: bool = True, train_peers: bool = True) -> RoundOutcome:
    """One round: acquire, select, optimize, evaluate, and the admission gate's verdict.

    ``trained_difficulties``: what ``policy`` was trained on before (beyond ``history``'s). The
    policy is trained in place: a caller that rejects the round reloads the previous checkpoint.
    ``budget`` (the training probe's: ``max_problems`` per acquired difficulty, ``max_steps``) goes
    to the acquirers and the optimizer that take a ``budget`` keyword; ``judge=False`` skips the
    evaluators and the admission gate (whoever asked judges the model itself); ``train_peers=False``
    leaves the peers as they are (they still vote in selection).
    """
    import torch

    log = log or (lambda message: None)
    rng = random.Random(f"{seed}:{round_index}")
    torch.manual_seed(rng.randrange(2**31))
    c = components
    seconds: dict[str, float] = {}
    cpu = CpuMeter()  # how busy the machine's cores are in each phase
    task, generator = c.task.component, c.generator.component

    started = time.perf_counter()
    cpu.start()
    acquired, acquired_by = [], {}
    for part in c.acquirers:
        examples = call_stage("acquire", part, "acquire", task=task, policy=policy,
                              generator=generator, round_index=round_index, rng=rng,
                              **_budget(part, "acquire", budget))
        _check_examples(examples, "acquire", part)
        acquired_by[part.name] = len(examples)
        acquired += examples
    seconds["acquire"] = time.perf_counter() - started
    cpu.mark("acquire")
    log(f"round {round_index}: acquired {len(acquired)} examples {acquired_by}")

    started = time.perf_counter()
    cpu.start()
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
    cpu.mark("select")
    old_keys = {(e.prompt, e.completion) for e in history}
    new_kept = [e for e in kept if (e.prompt, e.completion) not in old_keys]
    training_set = kept
    warnings = []
    if round_index > 0 and not new_kept:
        warnings.append(NO_NEW_EXAMPLES)
        log(f"round {round_index}: WARNING: {NO_NEW_EXAMPLES} ({len(acquired)} acquired); "
            "this round trains on the previous data only. See the selection above for why")
    trained = set(trained_difficulties) | {e.difficulty for e in history}
    gate = AdmissionGate(c, trained | {e.difficulty for e in training_set}, seed, round_index)
    if round_index > 0 and judge:
        gate.measure_before(policy)  # before training: the optimizer updates the policy in place

    started = time.perf_counter()
    cpu.start()
    workdir.mkdir(parents=True, exist_ok=True)
    voters = policy.peers
    peers = PeerTraining(policy.peers if train_peers else [], training_set, components=c,
                         round_index=round_index,
                         seed=random.Random(f"{seed}:{round_index}:peers").randrange(2**31),
                         workdir=workdir / "peers",
                         threads=torch.get_num_threads())
    with peers:  # the peers train in their own processes while the policy trains here
        result = call_stage("optimize", c.optimizer, "optimize", policy, training_set, task=task,
                            generator=generator, rewarder=c.rewarder.component, rng=rng,
                            workdir=workdir, round_index=round_index,
                            **_budget(c.optimizer, "optimize", budget))
    policy = result.policy
    policy.peers = peers.policies if train_peers else voters
    seconds["optimize"] = time.perf_counter() - started
    cpu.mark("optimize")

    started = time.perf_counter()
    cpu.start()
    seen = {e.prompt for e in training_set} | {e.prompt for e in history}
    evaluations = evaluate_policy(policy, c, seen_prompts=seen, seed=rng.randrange(2**31)) if judge else []
    seconds["evaluate"] = time.perf_counter() - started
    cpu.mark("evaluate")
    admission = (gate.decide(policy) if round_index > 0 and judge else
                 Admission(True, BASE_ROUND if judge else "not judged here"))
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
        "data": _data_report(acquired, new_kept, training_set, task),
        "warnings": warnings,  # what a reader of the round must not miss
        "optimize": {k: _plain(v) for k, v in result.metrics.items()},
        **({"peers_optimize": [{k: _plain(v) for k, v in m.items()} for m in peers.metrics]}
           if peers.metrics else {}),
        "admission": admission.to_dict(),
        # what the checkpoint has been trained on, for the next round's gate
        "trained_difficulties": sorted(gate.difficulties),
        "seconds": seconds,
        "cpu_busy": cpu.shares,  # the share of all cores busy (the whole machine) per phase
        "peak_rss_mib": peak_rss_mib(),
    }
    return RoundOutcome(policy, report, training_set)


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


def _budget(part: Part, method: str, budget: dict[str, int] | None) -> dict[str, Any]:
    """``{"budget": budget}`` for a component method that takes one (an optional keyword)."""
    if not budget:
        return {}
    import inspect

    try:
        parameters = inspect.signature(getattr(part.component, method)).parameters
    except (TypeError, ValueError):
        return {}
    takes = "budget" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    return {"budget": budget} if takes else {}


def _check_examples(examples, stage, part) -> None:
    if not isinstance(examples, list) or not all(isinstance(e, Example) for e in examples):
        raise StageError(stage, part.name, part.plugin,
                         TypeError(f"expected a list of Example, got {type(examples).__name__}"))


def _data_report(acquired: list[Example], kept_new: list[Example], training_set: list[Example], task):
    """Sizes, diversity, and (when the acquirer recorded the truth) how clean the labels are: the
    share whose extracted answer is the recorded true one."""

    def label_accuracy(examples):
        audited = [e for e in examples if e.meta.get("audit_answer") is not None]
        if not audited:
            return None
        return sum(task.extract_answer(e.completion) == e.meta["audit_answer"] for e in audited) / len(audited)

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


class CpuMeter:
    """The share of the machine's cores busy between ``start()`` and ``mark(phase)``, from
    ``/proc/stat`` (every process: the peers training beside the policy count, and so does anything
    else running on the machine). Empty where there is no ``/proc/stat``."""

    def __init__(self):
        self.shares: dict[str, float] = {}
        self._at = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    def start(self) -> None:
        self._at = self._read()

    def mark(self, phase: str) -> None:
        now = self._read()
        if now is not None and self._at is not None and now[1] > self._at[1]:
            self.shares[phase] = round((now[0] - self._at[0]) / (now[1] - self._at[1]), 3)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
