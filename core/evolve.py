"""The meta loop: select parent → propose edit → validate in the sandbox → admit to the archive,
interleaved with the GRO loop that trains the base model.

A run is a sequence of rounds. Each round trains a checkpoint (round 0: the base model on labelled
data; later rounds: a self-improvement round of the lifecycle with the current champion's plugins),
evaluates the seed plugins and the champion against it, and then spends its share of the iterations
evolving the plugins against that checkpoint. The best admitted variant of the round is the champion
promoted into the next training round. Scores are only compared within a round (one checkpoint, one
held-out set), so every round re-evaluates the seed and the champion as new archive entries whose
tree equals their source's.

Iterations run in batches of ``workers``: the parents of a batch are chosen from the archive as it
stood before the batch, each worker proposes and validates one child in its own sandbox, and the one
archive writer (this thread) adds the results in iteration order, so a seed gives the same run
whatever the timing. Every finished evaluation is first written to a journal (``journal.jsonl`` in
the run directory, fsync'd); ``resume`` replays it, archives what was evaluated but not yet archived
(each archived variant carries its ``evolve_key``, so nothing is added twice) and re-runs only what
never finished. Budgets (iterations, wall-clock, tokens, US dollars) are checked before every batch
and every proposal; the loop stops cleanly at the first one reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import ArchiveError, ConfigError, ProposalError, SelfloopError
from .judge import ProblemPlan, draw_held_out, judge_secret, pinned_task
from .significance import Noise
from .tasks import Difficulties
from .tunable import find_tunables, set_tunable
from .types import Edit, VariantView
from .config import ANSWER_KINDS, META_KINDS, PROBE_KINDS
from .meta import (
    TreeParentSelector,
    TreeProposer,
    TreeRunner,
    active_parent_selector,
    check,
    meta_paths,
    own_copy,
    prompt_problems,
    with_tree_prompts,
)
from .pipeline import PIPELINE_FILE
from .pipeline import render as render_pipeline
from .probe import ProbeValidator
from .validate import Reference, Validator, Verdict, static_problems, write_tree

SEED_PACKAGE = "selfloop.plugins"
# evaluations of the seed plugins: never rejected
SEED_ROLES = ("seed", "confirm-seed", "seed-probe", "confirm-seed-probe")
SELECT_AT = 0.7  # the self-label accuracy where selection has the most to decide
# the kinds a training round runs: a champion that changed one of them trains another model
TRAINING_KINDS = {"acquirer", "selector", "generator", "rewarder", "optimizer", "pipeline", "model", "task"}
CONTEXT = 6  # variants of each sort (best, ancestors, latest attempts) a proposer is shown


class Trainer(Protocol):
    """Trains one round's checkpoint; returns the model directory."""

    def train(self, round_index: int, *, plugins_dir: Path, previous: Path | None, out: Path) -> Path: ...


# --- budgets and the journal ------------------------------------------------------------------------


@dataclass
class Budget:
    """Limits of one run; ``None`` means unlimited."""

    iterations: int
    max_seconds: float | None = None
    max_tokens: int | None = None
    max_usd: float | None = None

    def reached(self, *, iterations: int, seconds: float, tokens: int, usd: float) -> str | None:
        """The first limit reached, as a sentence, or None."""
        if iterations >= self.iterations:
            return f"iteration budget reached ({iterations}/{self.iterations})"
        if self.max_seconds is not None and seconds >= self.max_seconds:
            return f"wall-clock budget reached ({seconds:.0f}/{self.max_seconds:.0f} s)"
        if self.max_tokens is not None and tokens >= self.max_tokens:
            return f"token budget reached ({tokens}/{self.max_tokens})"
        if self.max_usd is not None and usd >= self.max_usd:
            return f"cost budget reached (${usd:.4f}/${self.max_usd:.4f})"
        return None


class Journal:
    """An append-only JSON-lines log, fsync'd per event; a torn last line (kill -9) is ignored."""

    def __init__(self, path: Path):
        self.path = path  # its directory is made by the first event, not before

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # the line a kill cut short; its event is redone
        return out

    def append(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=_jsonable) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def _jsonable(value):
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return str(value)


# --- one iteration ----------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One iteration's outcome, as journalled before it is archived."""

    key: str
    iteration: int
    round: int
    parent: str
    files: dict[str, str]  # the child's full tree
    edit_summary: str
    proposer: str
    verdict: dict[str, Any]
    calls: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(int(c.get("prompt_tokens", 0)) + int(c.get("completion_tokens", 0)) for c in self.calls)

    @property
    def usd(self) -> float:
        return sum(c.get("cost_usd") or 0.0 for c in self.calls)


def tree_hash(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path].encode() + b"\0")
    return digest.hexdigest()


def surface_dir() -> Path:
    """The installed seed plugins (the editable surface's origin)."""
    import importlib.util

    spec = importlib.util.find_spec(SEED_PACKAGE)
    return Path(next(iter(spec.submodule_search_locations)))


def read_surface(directory: Path) -> dict[str, str]:
    """A plugin tree as {relative path: text}; caches and compiled files left out."""
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            out[path.relative_to(directory).as_posix()] = path.read_text()
    return out


def editable_files(config, registry, kinds: list[str], surface: Path) -> list[str]:
    """The surface files defining the components of ``kinds`` that the config uses."""
    out = set()
    for _, kind, component in config.components():
        if kind not in kinds:
            continue
        location = Path(registry.get(kind, component.name).location).resolve()
        if surface.resolve() in location.parents:
            out.add(location.relative_to(surface.resolve()).as_posix())
    return sorted(out)


def kinds_by_file(registry, surface: Path) -> dict[str, list[str]]:
    """Each surface file -> the component kinds registered from it (what an edit of it changes)."""
    root, out = surface.resolve(), {}
    for registration in registry.all():
        location = Path(registration.location).resolve()
        if root in location.parents:
            out.setdefault(location.relative_to(root).as_posix(), set()).add(registration.kind)
    return {path: sorted(kinds) for path, kinds in out.items()}


def bake_options(config, registry, files: dict[str, str], kinds: list[str], surface: Path):
    """Write the config's options of the evolved components into their files' tunables.

    A config option overrides a plugin's code default, so a mutated ``VOTES = tunable(4, ...)`` would
    change nothing while the config says ``votes = 4``. Each option whose name matches a tunable of
    the component's file (``votes`` -> ``VOTES``) and fits its bounds moves into the code; the rest
    stay options. Returns (the config without the moved options, the files, what moved).
    """
    config = config.model_copy(deep=True)
    files = dict(files)
    moved = []
    root = surface.resolve()
    for _, kind, component in config.components():
        if kind not in kinds:
            continue
        location = Path(registry.get(kind, component.name).location).resolve()
        if root not in location.parents:
            continue
        path = location.relative_to(root).as_posix()
        declared = {t.name: t for t in find_tunables(files[path])}
        for key, value in list(component.options.items()):
            t = declared.get(key.upper())
            if t is None or not _fits(t, value):
                continue
            files[path] = set_tunable(files[path], t.name, value)
            del component.options[key]
            moved.append(f"{path}: {t.name} = {value!r}")
    return config, files, moved


def _fits(t, value) -> bool:
    if type(value) is not type(t.value) and not (isinstance(value, (int, float)) and isinstance(t.value, float)):
        return False
    if t.choices is not None:
        return value in t.choices
    return (t.low is None or value >= t.low) and (t.high is None or value <= t.high)


def frontier(accuracy_by_difficulty: dict, count: int = 3, offered: Difficulties | None = None,
             ) -> tuple[list[int], int] | None:
    """(refinement difficulties, selection difficulty) where a checkpoint's problems discriminate.

    A difficulty the checkpoint gets all right or all wrong tells no plugin from another: every
    variant scores the same there. So refinement is measured at the ``count`` consecutive
    difficulties with the most binomial variance, Σ a(1 − a) (ties: the easier), and selection at
    the one nearest ``SELECT_AT`` among those neither all right nor all wrong: enough right
    self-labels to keep and wrong ones to drop. On a cliff that is the last length it nearly
    solves (96% right leaves 4% to filter; 1% right leaves nothing to keep). A checkpoint that
    solves every measured difficulty is measured beyond them (when the task offers more); one that
    solves none, at the easiest. Only difficulties the task offers (``offered``) are chosen.
    """
    offered = offered or Difficulties()
    acc = {int(d): float(a) for d, a in accuracy_by_difficulty.items() if int(d) in offered}
    if not acc:
        return None
    discriminating = [d for d in sorted(acc) if 0.0 < acc[d] < 1.0]
    beyond = offered.from_(max(acc) + 1, count)
    if not discriminating and min(acc.values()) >= 1.0 and beyond:
        return beyond, beyond[0]
    ordered = sorted(acc)
    windows = [ordered[i:i + count] for i in range(max(1, len(ordered) - count + 1))]
    refine = max(windows, key=lambda w: (sum(acc[d] * (1 - acc[d]) for d in w), -w[0]))
    select = min(discriminating or [min(acc)], key=lambda d: (abs(acc[d] - SELECT_AT), d))
    return refine, select


def _crowned(result) -> int:
    """The round whose checkpoint a round's champion first won on (older journals: that round)."""
    return result.round if result.crowned is None else result.crowned


# --- the loop ---------------------------------------------------------------------------------------


@dataclass
class RoundResult:
    round: int
    checkpoint: str
    seed_variant: str
    seed_score: float | None
    champion: str
    champion_score: float | None
    variants: list[str]
    crowned: int | None = None  # the round whose checkpoint the champion first won on
    no_signal: str | None = None  # why the round could tell no variant from another, if it could not


class Evolution:
    """One `selfloop evolve` run: rounds of training and evolving, journalled for resume."""

    def __init__(self, config, *, archive_path: Path, out: Path, sandbox, registry,
                 trainer: Callable[[Any], Trainer],
                 proposer, parent_selector, progress: Callable[[str, dict], None] | None = None,
                 seed_dir: Path | None = None, plugins_dirs: Sequence[str | Path] = (), executor=None):
        from .executor import LocalExecutor

        self.settings = config.evolve
        self.executor = executor or LocalExecutor()
        self.archive_path, self.out = Path(archive_path), Path(out)
        self.sandbox, self.registry = sandbox, registry
        self.proposer, self.parent_selector = proposer, parent_selector
        self.progress = progress or (lambda event, data: None)
        self.seed_dir = Path(seed_dir) if seed_dir else surface_dir()
        self.journal = Journal(self.out / "journal.jsonl")
        self.seed = config.seed
        self.budget = Budget(self.settings.iterations, self.settings.max_seconds, self.settings.max_tokens,
                             self.settings.max_usd)
        if self.settings.refiner is not None:
            config = config.model_copy(update={"refiner": self.settings.refiner}, deep=True)
        targets = list(self.settings.targets)
        self.config, self.seed_files, self.baked = bake_options(
            config, registry, read_surface(self.seed_dir), targets, self.seed_dir)
        self.editable = editable_files(self.config, registry, targets, self.seed_dir)
        self.file_kinds = kinds_by_file(registry, self.seed_dir)
        if "pipeline" in targets:  # the composition itself, as a file proposers edit
            self.seed_files[PIPELINE_FILE] = render_pipeline(self.config)
            self.editable = sorted({*self.editable, PIPELINE_FILE})
            self.file_kinds[PIPELINE_FILE] = ["pipeline"]
        # the meta-agent's own files, when targeted: a tree's edited copy acts for it (core/meta.py)
        self.meta_files = {kind: meta_paths(self.file_kinds, self.editable, kind)
                           for kind in META_KINDS if kind in targets}
        if not self.editable:
            raise ConfigError(f"[evolve] targets {list(self.settings.targets)}: the config's components of "
                              "these kinds are not in the editable surface; nothing to evolve")
        # the user's own plugin directories (not the surface): they reach the judge, every sandbox run
        # and the trainer (through the registry's plugins_dirs)
        self.plugins_dirs = [str(Path(d).resolve()) for d in plugins_dirs]
        self.task = pinned_task(config, self.plugins_dirs)
        self.secret = judge_secret()
        self.trainer = trainer(self.config)  # trains with the evolved components' options baked in
        self.archive = None
        self.probes: dict[int, ProbeValidator] = {}  # each round's training probe
        self.refs: dict[int, dict[str, float | None]] = {}  # each round's seed scores, by judge

    # --- state ----------------------------------------------------------------------------------

    def _replay(self) -> dict[str, Any]:
        state: dict[str, Any] = {"trained": {}, "rounds": {}, "attempts": {}, "archived": {},
                                 "baselines": {}, "started": None, "spent_seconds": 0.0}
        for event in self.journal.events():
            kind = event["event"]
            if kind == "start":
                if event["seed"] != self.seed:
                    raise ConfigError(f"{self.out}: this run was started with seed {event['seed']}, "
                                      f"not {self.seed}; resume it with the same config")
                state["started"] = event
            elif kind == "trained":
                state["trained"][event["round"]] = event["checkpoint"]
            elif kind == "baseline":
                state["baselines"].setdefault(event["round"], {})[event["role"]] = event["variant"]
            elif kind == "attempt":
                state["attempts"][event["attempt"]["key"]] = Attempt(**event["attempt"])
            elif kind == "archived":
                state["archived"][event["key"]] = event["variant"]
            elif kind == "round_done":
                state["rounds"][event["round"]] = event["result"]
            elif kind == "session":
                state["spent_seconds"] += event["seconds"]
        return state

    def _archived_keys(self) -> dict[str, str]:
        """evolve_key -> variant id, from the archive itself (covers a kill between add and journal)."""
        out = {}
        for variant in self.archive.list():
            key = variant.meta.get("evolve_key")
            if key and variant.meta.get("run") == self.run_id:
                out[key] = variant.id
        return out

    # --- the run --------------------------------------------------------------------------------

    def run(self, *, resume: bool = False) -> list[RoundResult]:
        from selfloop.archive import Archive

        state = self._replay()
        if state["started"] and not resume:
            done = len(state["attempts"])
            raise ConfigError(f"{self.archive_path} already holds a run ({done} of {self.settings.iterations} "
                              f"iterations done): continue it with `selfloop evolve --archive {self.archive_path} "
                              "--resume`, or start afresh with `--fresh` (the old run is moved aside, not deleted)")
        if resume and not state["started"]:
            raise ConfigError(f"{self.archive_path}: nothing to resume (no run was started there); "
                              "start one without --resume")
        if not state["started"]:
            if self.archive_path.exists() and any(self.archive_path.iterdir()):
                raise ConfigError(f"{self.archive_path} already exists; a new run needs a new --archive, or "
                                  "`--fresh` to move it aside")
            self.run_id = hashlib.sha1(f"{time.time()}:{os.getpid()}".encode()).hexdigest()[:12]
            self.journal.append({"event": "start", "seed": self.seed, "run": self.run_id,
                                 "editable": self.editable, "time": time.time()})
        else:
            self.run_id = state["started"]["run"]
        if self.archive_path.exists() and (self.archive_path / "HEAD").exists():
            self.archive = Archive(self.archive_path)
            state["archived"].update(self._archived_keys())

        session_start = time.monotonic()
        self.spent_before = state["spent_seconds"]
        self.stopped: str | None = None
        self.confirmation: dict[str, Any] | None = None
        results = [RoundResult(**state["rounds"][r]) for r in sorted(state["rounds"])]
        try:
            for r in range(self.settings.rounds):
                if r in state["rounds"]:
                    continue
                results.append(self._round(r, state, results[-1] if results else None, session_start))
                self.journal.append({"event": "round_done", "round": r, "result": vars(results[-1])})
                state["rounds"][r] = vars(results[-1])
                reason = self._stop_reason(state, session_start)
                if reason and not reason.startswith("iteration"):  # iterations are split per round
                    self.stopped = reason
                    break
            if results and self.settings.confirm and not self.stopped:  # a spent budget is spent
                self.confirmation = self._confirm(results, state)
        finally:
            self.journal.append({"event": "session", "seconds": time.monotonic() - session_start})
        return results

    def placement(self) -> dict[str, Any]:
        """The executor, its nodes, and how many of this run's evaluations each node ran."""
        counts: dict[str, int] = {}
        for variant in self.archive.list() if self.archive else []:
            sandbox = variant.meta.get("sandbox") or {}
            if variant.meta.get("run") == self.run_id and sandbox.get("node"):
                where = sandbox["node"] + (f" ({sandbox['ip']})" if sandbox.get("ip") else "")
                counts[where] = counts.get(where, 0) + 1
        return {**self.executor.describe(), "evaluated_on": counts}

    def _seconds(self, session_start: float) -> float:
        return self.spent_before + time.monotonic() - session_start

    def _stop_reason(self, state, session_start) -> str | None:
        attempts = list(state["attempts"].values())
        return self.budget.reached(iterations=len(attempts), seconds=self._seconds(session_start),
                                   tokens=sum(a.tokens for a in attempts), usd=sum(a.usd for a in attempts))

    def _quota(self, r: int) -> int:
        """Iterations of round ``r``: the total split evenly, the remainder to the first rounds."""
        total, rounds = self.settings.iterations, self.settings.rounds
        return total // rounds + (1 if r < total % rounds else 0)

    def _round(self, r: int, state, previous: RoundResult | None, session_start: float) -> RoundResult:
        ckpt_dir = self.out / "checkpoints" / f"round-{r}"
        if r in state["trained"] and Path(state["trained"][r]).is_dir():
            checkpoint = Path(state["trained"][r])
        else:
            champion_dir = self.out / "champion"
            files = self.archive.files(previous.champion) if previous else self.seed_files
            write_tree(files, champion_dir)
            self.progress("train", {"round": r, "champion": previous.champion if previous else "seed"})
            checkpoint = Path(self.trainer.train(r, plugins_dir=champion_dir,
                                                 previous=Path(previous.checkpoint) if previous else None,
                                                 out=ckpt_dir))
            self.journal.append({"event": "trained", "round": r, "checkpoint": str(checkpoint)})
        validator = self._validator(r, checkpoint)
        seed_id = self._baseline(r, "seed", validator, state, "v0" if previous else None)
        self.refs[r] = {"answers": self.archive.get(seed_id).scores.get("score")}
        if self.settings.probed:  # the seed pipeline's training probe: what probed edits are compared with
            self.probes[r] = self._probe_validator(r, checkpoint)
            seed_probe = self.archive.get(self._baseline(r, "seed-probe", self.probes[r], state, seed_id))
            self.refs[r].update(probe=seed_probe.scores.get("score"), probe_short=seed_probe.scores.get("probe_short"))
        members = [seed_id]
        incumbent = seed_id
        if previous and previous.champion != previous.seed_variant:
            carried = self._baseline(r, "champion", validator, state, previous.champion)
            if self.archive.get(carried).admitted:
                incumbent = carried
                members.append(carried)
        # Attempts journalled before a crash: archive what was evaluated but not archived.
        finished = sorted((a for a in state["attempts"].values() if a.round == r), key=lambda a: a.iteration)
        for attempt in finished:
            variant = state["archived"].get(attempt.key) or self._archive_attempt(attempt, state)
            if attempt.verdict["admitted"]:
                members.append(variant)
        first = sum(self._quota(q) for q in range(r))
        todo = [i for i in range(first, first + self._quota(r)) if f"r{r}-i{i}" not in state["attempts"]]
        if self.archive.get(seed_id).scores.get("score") is None and todo:
            # Without the seed's score nothing can be compared on this checkpoint: the round's
            # iterations are skipped (and journalled as such), and the run goes on to the next round.
            self.progress("skipped", {"round": r, "iterations": len(todo),
                                      "reason": "; ".join(self.archive.get(seed_id).meta.get("reasons") or [])})
            self.journal.append({"event": "skipped", "round": r, "iterations": len(todo)})
            todo = []
        while todo:
            reason = self._stop_reason(state, session_start)
            if reason:
                self.stopped = reason
                break
            batch, todo = todo[: self.settings.workers], todo[self.settings.workers:]
            members += self._batch(r, batch, validator, state, members)
        best = self._best(members, incumbent, self.refs[r].get("probe"))
        kept = best.id == incumbent != seed_id  # the champion carried over held its place
        no_signal = self._no_signal(r, state, seed_id)
        if no_signal:
            self.progress("warning", {"message": f"round {r}: {no_signal}"})
        return RoundResult(round=r, checkpoint=str(checkpoint), seed_variant=seed_id,
                           seed_score=self.archive.get(seed_id).scores.get("score"), champion=best.id,
                           champion_score=best.scores.get("score"), variants=members,
                           crowned=_crowned(previous) if kept else r, no_signal=no_signal)

    def _no_signal(self, r: int, state, seed_id: str) -> str | None:
        """A round whose every scored variant scored the same (judged the same way) gave no signal:
        its evaluation could not tell one edit from another. That is reported, never a result."""
        keys = [k for k in state["archived"] if k.startswith(f"r{r}-i")]
        variants = [self.archive.get(state["archived"][k]) for k in keys]
        by_judge: dict[str, list[float]] = {}
        for v in [self.archive.get(seed_id), *variants]:
            judged = v.meta.get("judged_by") or "answers"
            if v.scores.get("score") is not None and judged != "meta":
                by_judge.setdefault(judged, []).append(v.scores["score"])
        flat = [(j, s) for j, s in by_judge.items() if len(s) >= 3 and max(s) - min(s) < 1e-9]
        if not flat:
            return None
        judged, scores = flat[0]
        return (f"no signal: all {len(scores)} variants judged by {judged} scored {scores[0]:.3f}; "
                "the round's problems do not discriminate between them (a frontier all right or all "
                "wrong): widen evolve.refine_difficulties or the held-out sizes")

    def _best(self, members: list[str], incumbent: str, seed_probe: float | None = None):
        """The best admitted variant by its gain over the round's seed (in what it was judged by:
        answers, the training probe, or both); the incumbent unless one beats it by
        ``champion_margin``. A variant whose probe model scored below the seed pipeline's
        (``seed_probe``) is no candidate: the champion trains the next round, and an answer gain
        does not pay for a worse model."""
        variants = [self.archive.get(v) for v in members]
        trains_worse = lambda v: (seed_probe is not None and v.scores.get("probe") is not None
                                  and v.scores["probe"] < seed_probe)
        scored = [v for v in variants if v.admitted and v.scores.get("score") is not None
                  and not trains_worse(v)]
        if not scored:
            return variants[0]
        # A run journalled before gains were recorded ranks by its one kind of score.
        metric = "gain" if all(v.scores.get("gain") is not None for v in scored) else "score"
        top = max(scored, key=lambda v: (v.scores[metric], -v.seq))
        holder = next((v for v in scored if v.id == incumbent), None)
        if holder is not None and top.scores[metric] <= holder.scores[metric] + self.settings.champion_margin:
            return holder
        return top

    def _probe_validator(self, r: int, checkpoint: Path, salt: str = "") -> ProbeValidator:
        """The training probe on round ``r``'s checkpoint: held-out problems at its frontier and
        one difficulty past it, from a secret seed of their own."""
        refine, _ = self._difficulties(checkpoint)
        beyond = self.task.difficulties.from_(max(refine) + 1, 1)
        secret = int(hashlib.sha256(f"selfloop-probe:{self.secret}:{self.seed}:{r}{salt}".encode())
                     .hexdigest()[:12], 16)
        return ProbeValidator(
            sandbox=self.sandbox, config=self.config, checkpoint=checkpoint,
            history=checkpoint.parent / "data.jsonl", pinned_task=self.task,
            difficulties=sorted({*refine, *beyond}), secret=secret, round_index=r,
            settings=self.settings.probe, seed=self.seed, z=self.settings.significance_z,
            timeout_s=self.config.sandbox.timeout_s, plugins_dirs=self.plugins_dirs)

    def _validator(self, r: int, checkpoint: Path, salt: str = "") -> Validator:
        s = self.settings
        refine, select = self._difficulties(checkpoint)
        plan = ProblemPlan(refine_difficulties=refine, select_difficulty=select,
                           refine_per_difficulty=s.held_out_per_difficulty, select_count=s.held_out_select,
                           null_per_difficulty=min(s.null_per_difficulty, s.held_out_per_difficulty),
                           probe_count=s.null_probes)
        secret = int(hashlib.sha256(f"selfloop-held-out:{self.secret}:{self.seed}:{r}{salt}".encode())
                     .hexdigest()[:12], 16)
        held_out = draw_held_out(self.task, plan, secret)
        return Validator(
            sandbox=self.sandbox, config=self.config, checkpoint=checkpoint, plan=plan, held_out=held_out,
            pinned_task=self.task, visible_seed=self.seed * 1000 + r, sample_seed=self.seed,
            smoke_size={"refine": s.smoke_per_difficulty, "select": s.smoke_select},
            full_size={"refine": s.full_per_difficulty, "select": s.full_select},
            z=s.significance_z, timeout_s=self.config.sandbox.timeout_s, plugins_dirs=self.plugins_dirs)

    def _confirm(self, results: list[RoundResult], state) -> dict[str, Any]:
        """Seed against the final champion on fresh held-out problems of the checkpoint it won on.

        The champion was chosen as the best of many on one held-out set, so its score there is
        biased upward; this second draw, which chose nothing, is the honest comparison. It is made
        on the checkpoint the champion first won on: a later checkpoint may leave nothing for the
        plugins to decide (a model right at every length up to a cliff, and wrong past it).
        """
        last = results[-1]
        r = _crowned(last)
        validator = self._validator(r, Path(results[r].checkpoint), salt=":confirm")
        seed = self._baseline(r, "confirm-seed", validator, state, "v0")
        champion = seed
        if last.champion != last.seed_variant:
            champion = self._baseline(r, "confirm-champion", validator, state, last.champion)
        score = lambda v: self.archive.get(v).scores.get("score")
        out = {"round": r, "seed_variant": seed, "seed_score": score(seed), "champion": last.champion,
               "champion_variant": champion, "champion_score": score(champion)}
        if self.settings.confirm_trained and self._trains_differently(last.champion):
            # What the evolved plugins do to the next model: one probe round with the champion's
            # pipeline, one with the seed's, same budget and seed, scored on fresh problems.
            probe = self._probe_validator(r, Path(results[r].checkpoint), salt=":confirm")
            seed_probe = self._baseline(r, "confirm-seed-probe", probe, state, "v0")
            champion_probe = self._baseline(r, "confirm-champion-probe", probe, state, last.champion)
            out["probe"] = {"seed_variant": seed_probe, "seed_score": score(seed_probe),
                            "champion_variant": champion_probe, "champion_score": score(champion_probe)}
        return out

    def _trains_differently(self, variant: str) -> bool:
        """Whether a variant's tree differs from the seed's in a file the training round runs."""
        files = self.archive.files(variant)
        changed = {p for p in set(files) | set(self.seed_files) if files.get(p) != self.seed_files.get(p)}
        kinds = {k for p in changed for k in self.file_kinds.get(p, ["unknown"])}
        return bool(kinds & TRAINING_KINDS)

    def _difficulties(self, checkpoint: Path) -> tuple[list[int], int]:
        """The configured difficulties, else the checkpoint's frontier from its round report."""
        s = self.settings
        found = None
        report = checkpoint.parent / "report.json"
        if report.is_file():
            entry = json.loads(report.read_text())
            found = frontier(entry.get("accuracy_by_difficulty") or {},
                             offered=self.task.difficulties)
        refine = list(s.refine_difficulties) if s.refine_difficulties else (found[0] if found else None)
        select = s.select_difficulty or (found[1] if found else None)
        if refine is None or select is None:
            raise ConfigError(f"{checkpoint}: no round report to find the frontier in; set [evolve] "
                              "refine_difficulties and select_difficulty")
        outside = [d for d in [*refine, select] if d not in self.task.difficulties]
        if outside:
            raise ConfigError(f"[evolve] difficulties {outside} are not offered by task "
                              f"{self.config.task.name!r} ({self.task.difficulties.to_dict()})")
        return refine, select

    def _baseline(self, r: int, role: str, validator: Validator, state, source: str | None) -> str:
        """Evaluate the seed files (``source`` None) or a variant's on a checkpoint; archive the result."""
        from selfloop.archive import Archive

        key = f"r{r}-{role}"
        probe = isinstance(validator, ProbeValidator)
        done = state["baselines"].get(r, {}).get(role) or state["archived"].get(key)
        if done:  # evaluated before a crash (or archived, then killed before the journal said so)
            meta = self.archive.get(done).meta
            if role in SEED_ROLES and probe and meta.get("probe_reference"):
                validator.reference = meta["probe_reference"]
            elif role in SEED_ROLES and meta.get("reference"):
                reference = meta["reference"]
                validator.reference = Reference(held_out=reference["held_out"], visible=reference["visible"],
                                                noise=Noise(**reference["noise"]))
            return done
        files = self.seed_files if source is None else self.archive.files(source)
        self.progress("baseline", {"round": r, "role": role, "source": source})
        # The seed plugins are the yardstick: recorded whatever happens, never rejected. A champion
        # carried over is judged again like any variant (and, if rejected, is no incumbent).
        verdict = self._validate(validator, files, changed=[], threshold=None, baseline=role in SEED_ROLES)
        extra = {}
        if role in SEED_ROLES and validator.reference:
            extra = {"probe_reference": validator.reference} if probe else {"reference": asdict(validator.reference)}
        if verdict.score is not None and role in ("seed", "seed-probe"):
            verdict.scores["gain"] = 0.0
        elif verdict.score is not None and role == "champion" and self.refs.get(r, {}).get("answers") is not None:
            verdict.scores["gain"] = round(verdict.score - self.refs[r]["answers"], 4)
        operator = "seed" if source is None or role in SEED_ROLES else "re-evaluation"
        extra.update({"operator": operator, "changed_kinds": [], "judged_by": "probe" if probe else "answers"})
        meta = self._meta(verdict, proposer=operator, round_=r, key=key, extra=extra,
                          summary=(f"seed plugins on round {r}'s checkpoint" if source is None else
                                   f"{'the seed pipeline' if role in SEED_ROLES else source}'s training "
                                   f"probe from round {r}'s checkpoint" if probe else
                                   f"{source} ({role}) re-evaluated on round {r}'s checkpoint"
                                   + (", fresh held-out problems" if role.startswith("confirm") else "")))
        if self.archive is None:
            if self.archive_path.exists() and any(self.archive_path.iterdir()):
                raise ArchiveError(f"{self.archive_path}: exists but is not an archive")
            meta["baked_options"] = self.baked
            self.archive = Archive.init(self.archive_path, write_tree(files, self.out / "seed"), meta=meta)
            variant = "v0"
        else:
            variant = self.archive.add(parent=source, files=files, meta=meta,
                                       status="admitted" if verdict.admitted else "rejected")
        self.journal.append({"event": "baseline", "round": r, "role": role, "variant": variant})
        state["baselines"].setdefault(r, {})[role] = variant
        self._announce(variant)
        self.progress("variant", {"round": r, "variant": variant, "verdict": verdict, "summary": meta["summary"],
                                  "judged_by": extra["judged_by"]})
        return variant

    def _validate(self, validator: Validator, files: dict[str, str], *, changed: list[str],
                  threshold: float | None, baseline: bool = False) -> Verdict:
        """Validate, turning any failure of the machinery (a sandbox that cannot start, a bug) into
        this evaluation's recorded verdict: it is journalled, so a resume never replays it."""
        try:
            return self.executor.evaluate(validator, files, changed=changed, editable=self.editable,
                                          threshold=threshold, baseline=baseline)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one evaluation's failure is not the run's
            return Verdict(False, [f"validation error: {type(exc).__name__}: {str(exc)[:300]}"],
                           stages={})

    def _meta(self, verdict: Verdict, *, proposer: str, round_: int, key: str, summary: str,
              calls: list | None = None, extra: dict | None = None) -> dict[str, Any]:
        model = calls[0]["model"] if calls else None
        return {
            "proposer": proposer, "model": model, "summary": summary, "calls": calls or [],
            "tokens": sum(int(c.get("prompt_tokens", 0)) + int(c.get("completion_tokens", 0)) for c in calls or []),
            "cost_usd": _total_cost(calls or []),
            "scores": verdict.scores, "decision": "admitted" if verdict.admitted else "rejected",
            "reasons": verdict.reasons, "stages": verdict.stages, "sandbox": verdict.sandbox,
            "feedback": verdict.feedback(), "seconds": round(verdict.seconds, 3),
            "round": round_, "evolve_key": key, "run": self.run_id, **(extra or {}),
        }

    # --- a batch of iterations -------------------------------------------------------------------

    def _batch(self, r: int, iterations: list[int], validator: Validator, state, members: list[str]) -> list[str]:
        # parents compare by their gain over the round's seed (older journals: by their score)
        metric = "gain" if all(self.archive.get(v).scores.get("gain") is not None for v in members) else None
        summaries = [s for s in self.archive.summaries(metric=metric) if s.id in set(members)]
        rng = random.Random(f"{self.seed}:parents:{iterations[0]}")
        parents = self._choose_parents(r, summaries, len(iterations), rng, metric)
        if len(parents) < len(iterations):
            raise SelfloopError(f"round {r}: the parent selector chose {len(parents)} parents for "
                                f"{len(iterations)} iterations")
        seen = {tree_hash(self.archive.files(v)) for v in members}
        shown = self._context(r, members, parents, state)
        # the parents' scores (held-out: for thresholds and inheritance, never shown to a proposer)
        self.batch_scores = {v: dict(self.archive.get(v).scores) for v in set(parents)}
        self.probe_short = {v: self.batch_scores[v].get("probe_short") for v in set(parents)}
        self.batch_summaries = summaries
        views = {v: self._view(v) for v in set(parents) | {v for ids in shown.values() for v in ids}}
        self.progress("batch", {"round": r, "iterations": iterations, "parents": parents})
        with ThreadPoolExecutor(max_workers=self.settings.workers) as pool:
            futures = [pool.submit(self._attempt, r, i, p, [views[v] for v in shown[p]], views[p],
                                   validator, seen)
                       for i, p in zip(iterations, parents)]
            for future in as_completed(futures):  # journalled the moment it finishes
                attempt = future.result()
                self.journal.append({"event": "attempt", "attempt": vars(attempt), "time": time.time()})
                state["attempts"][attempt.key] = attempt
        attempts = [state["attempts"][f"r{r}-i{i}"] for i in iterations]
        admitted = []
        for attempt in attempts:  # archived by this one writer, in iteration order
            variant = self._archive_attempt(attempt, state)
            if attempt.verdict["admitted"]:
                admitted.append(variant)
        return admitted

    def _archive_attempt(self, attempt: Attempt, state) -> str:
        verdict = Verdict.from_dict(attempt.verdict)
        meta = self._meta(verdict, proposer=attempt.proposer, round_=attempt.round, key=attempt.key,
                          summary=attempt.edit_summary, calls=attempt.calls,
                          extra={"iteration": attempt.iteration, **attempt.meta})
        variant = self.archive.add(parent=attempt.parent, files=attempt.files, meta=meta,
                                   status="admitted" if verdict.admitted else "rejected")
        self.journal.append({"event": "archived", "key": attempt.key, "variant": variant, "time": time.time()})
        state["archived"][attempt.key] = variant
        self._announce(variant)
        self.progress("variant", {"round": attempt.round, "variant": variant, "verdict": verdict,
                                  "summary": attempt.edit_summary, "parent": attempt.parent,
                                  "judged_by": attempt.meta.get("judged_by")})
        return variant

    def _announce(self, variant: str) -> None:
        """Tell the plugins that follow the loop (``on_variant_archived``) of an archived variant."""
        v = self.archive.get(variant)
        record = {"id": v.id, "parent": v.parent, "status": v.status, "scores": dict(v.scores),
                  "round": v.meta.get("round"), "summary": v.meta.get("summary"),
                  "proposer": v.meta.get("proposer"), "reasons": v.meta.get("reasons", [])}
        self.registry.notify("on_variant_archived", variant=record, archive_dir=self.archive_path,
                             log=lambda message: self.progress("warning", {"message": message}))

    def _view(self, variant: str) -> VariantView:
        v = self.archive.get(variant)
        visible = {k: val for k, val in v.scores.items() if k.split(".")[0] in ("smoke", "full")}
        return VariantView(id=v.id, files=self.archive.files(v.id), scores=visible,
                           feedback=v.meta.get("feedback", ""), parent=v.parent,
                           summary=v.meta.get("summary", ""), operator=v.meta.get("operator") or "",
                           status="admitted" if v.admitted else "rejected",
                           reasons=[x for x in v.meta.get("reasons") or [] if "held-out" not in x])

    def _runner(self, files: dict[str, str], variant: str) -> TreeRunner:
        return TreeRunner(files, variant, sandbox=self.sandbox, config=self.config,
                          timeout_s=self.config.sandbox.timeout_s, plugins_dirs=self.plugins_dirs)

    def _proposer_for(self, parent: VariantView):
        """Who proposes the parent's children: its tree's own proposer when it has an edited one
        (in the sandbox), else the installed one."""
        paths = self.meta_files.get("proposer")
        if paths and own_copy(parent.files, self.seed_files, paths):
            prompted = with_tree_prompts(self.proposer, parent.files, self.seed_files, paths, parent.id)
            return prompted or TreeProposer(self._runner(parent.files, parent.id))
        return self.proposer

    def _choose_parents(self, r: int, summaries, k: int, rng, metric: str | None) -> list[str]:
        """A batch's parents, by the parent selector whose clade leads (the seed's by default);
        a tree's selector that fails is recorded and the seed's chooses."""
        paths = self.meta_files.get("parent_selector")
        if paths:
            carriers = [v.id for v in summaries if v.admitted
                        and own_copy(self.archive.files(v.id), self.seed_files, paths)]
            ids = {v.id for v in summaries}
            everyone = [v for v in self.archive.summaries(metric=metric, status=None)
                        if v.id in ids or self.archive.get(v.id).meta.get("round") == r]
            lead = active_parent_selector(everyone, carriers, summaries[0].id) if carriers else None
            if lead is not None:
                try:
                    chosen = TreeParentSelector(self._runner(self.archive.files(lead), lead)).choose(summaries, k, rng)
                    self.progress("parents", {"round": r, "selector": lead})
                    return chosen
                except SelfloopError as exc:
                    self.progress("warning", {"message": f"{exc}; the seed parent selector chooses instead"})
                    self.journal.append({"event": "parent_selector_fallback", "round": r, "variant": lead,
                                         "reason": str(exc)})
        return self.parent_selector.choose(summaries, k, rng)

    def _context(self, r: int, members: list[str], parents: list[str], state) -> dict[str, list[str]]:
        """What each parent's proposer sees besides the parent: the round's best admitted variants
        by visible score (inspirations), the parent's ancestors (its lineage), and this run's latest
        attempts of the round, rejected ones too (what was tried and how it ended)."""
        smoke = lambda v: self.archive.get(v).scores.get("smoke")
        best = sorted(members, key=lambda v: -(smoke(v) if smoke(v) is not None else -1.0))[:CONTEXT]
        tried = sorted((int(key.split("-i")[1]), v) for key, v in state["archived"].items()
                       if key.startswith(f"r{r}-i"))
        recent = [v for _, v in tried][-CONTEXT:]
        out = {}
        for parent in set(parents):
            lineage, at = [], self.archive.get(parent).parent
            while at is not None and len(lineage) < CONTEXT:
                lineage.append(at)
                at = self.archive.get(at).parent
            out[parent] = [v for v in dict.fromkeys(best + lineage + recent) if v != parent]
        return out

    def _attempt(self, r: int, i: int, parent: str, others: list[VariantView], view: VariantView,
                 validator: Validator, seen: set[str]) -> Attempt:
        rng = random.Random(f"{self.seed}:propose:{i}")
        started = time.time()
        key = f"r{r}-i{i}"
        calls: list[dict] = []
        edit: Edit | None = None
        failure = None
        proposer, fallback = self._proposer_for(view), None
        for _ in range(self.settings.novelty_attempts):
            try:
                edit = proposer.propose(view, editable=self.editable, others=others, rng=rng)
            except ProposalError as exc:
                if proposer is not self.proposer:  # the tree's own proposer failed: the seed's proposes
                    fallback, proposer = str(exc), self.proposer
                    self.progress("warning", {"message": f"{exc}; the seed proposer proposes instead"})
                    continue
                calls += [_call_dict(c) for c in getattr(exc, "calls", [])]
                failure, edit = f"proposal: {exc}", None
                break
            except SelfloopError as exc:
                calls += [_call_dict(c) for c in getattr(exc, "calls", [])]
                failure, edit = f"proposal: {exc}", None
                break
            except Exception as exc:  # a proposer plugin's bug is this iteration's failure, not the run's
                failure, edit = f"proposal: the proposer raised {type(exc).__name__}: {exc}", None
                break
            calls += [_call_dict(c) for c in edit.calls]
            files = _apply(view.files, edit)
            if tree_hash(files) not in seen:
                break
            failure, edit = "proposal: only produced variants already in this round", None
        if edit is None:
            verdict = Verdict(False, [failure or "proposal: nothing proposed"], stages={})
            return Attempt(key=key, iteration=i, round=r, parent=parent, files=view.files,
                           edit_summary=failure or "no edit", proposer=_proposer_name(self.proposer),
                           verdict=verdict.to_dict(), calls=calls,
                           meta={"proposed_at": started, "operator": _proposer_name(self.proposer),
                                 "changed_kinds": [], **({"proposer_fallback": fallback} if fallback else {})})
        if fallback:
            edit.meta = {**edit.meta, "proposer_fallback": fallback}
        proposed = time.time()
        files = _apply(view.files, edit)
        changed_kinds = sorted({k for path in edit.files for k in self.file_kinds.get(path, ["unknown"])})
        self.progress("validate", {"round": r, "iteration": i, "parent": parent, "summary": edit.summary})
        verdict, judged_by = self._judge(r, validator, files, sorted(edit.files), changed_kinds, view)
        if any(r_.startswith("static: ") and "outside" in r_ for r_ in verdict.reasons):
            files = view.files  # never archive files from beyond the surface; the edit is in the meta
        return Attempt(key=key, iteration=i, round=r, parent=parent, files=files, edit_summary=edit.summary,
                       proposer=edit.proposer, verdict=verdict.to_dict(), calls=calls,
                       meta={"edit_paths": sorted(edit.files), "proposed_at": started,
                             "propose_seconds": round(proposed - started, 3), "judged_by": judged_by,
                             "operator": edit.proposer, "changed_kinds": changed_kinds, **edit.meta})

    def _judge(self, r: int, validator: Validator, files: dict[str, str], changed: list[str],
               changed_kinds: list[str], parent: VariantView) -> tuple[Verdict, str]:
        """Validate an edit by what it changes: the answers (refiner, selector, generator, and
        anything else), the training probe (acquirer, rewarder, optimizer, pipeline), or both; the
        verdict carries its ``gain`` over the round's seed in what it was judged by."""
        s, refs = self.settings, self.refs.get(r, {})
        meta = sorted(set(changed_kinds) & set(self.meta_files))
        if meta:
            prompted = ("proposer" in meta and with_tree_prompts(
                self.proposer, files, self.seed_files, self.meta_files["proposer"], parent.id))
            problems = static_problems(changed, files, self.editable)
            if not problems and prompted:  # only its prompts changed: they must fill in
                problems = prompt_problems(prompted, self.proposer.prompts)
                meta = [k for k in meta if k != "proposer"]
            if not problems and meta:
                problems = check(self._runner(files, f"the child of {parent.id}"), meta,
                                 VariantView(parent.id, files), self.editable, self.batch_summaries,
                                 seed=self.seed)
            meta = sorted(set(changed_kinds) & set(self.meta_files))
            if set(changed_kinds) <= set(self.meta_files):  # nothing the lifecycle runs changed
                if problems:
                    return Verdict(False, problems, stages={"meta": {"ok": False}}), "meta"
                inherited = dict(self.batch_scores.get(parent.id) or {})
                return Verdict(True, [f"meta: its {' and '.join(k.replace('_', ' ') for k in meta)} works; "
                                      f"what the lifecycle runs is {parent.id}'s, whose scores it inherits"],
                               scores=inherited, stages={"meta": {"ok": True, "inherited_from": parent.id}}), "meta"
            if problems:
                return Verdict(False, problems, stages={"meta": {"ok": False}}), "meta"
        kinds = set(changed_kinds) - set(META_KINDS)
        probed = self.settings.probed and bool(kinds & set(PROBE_KINDS))
        by_answers = not probed or bool(kinds - (set(PROBE_KINDS) - set(ANSWER_KINDS)))
        verdicts = {}
        if by_answers:
            smoke = parent.scores.get("smoke")
            threshold = None if smoke is None else s.full_threshold * smoke - s.smoke_margin
            verdicts["answers"] = self._validate(validator, files, changed=changed, threshold=threshold)
        if probed and (not by_answers or verdicts["answers"].admitted):
            if refs.get("probe") is None:
                verdicts["probe"] = Verdict(False, ["probe: the seed pipeline's probe failed on this "
                                                    "checkpoint, so no training edit can be judged"])
            else:
                short = self.probe_short.get(parent.id) or refs.get("probe_short")
                threshold = None if short is None else s.full_threshold * short - s.smoke_margin
                verdicts["probe"] = self._validate(self.probes[r], files, changed=changed, threshold=threshold)
        judged_by = "both" if len(verdicts) == 2 else next(iter(verdicts))
        verdict = verdicts.get("answers") or verdicts["probe"]
        if len(verdicts) == 2:
            verdict = _merge(verdicts["answers"], verdicts["probe"])
        gains = [verdicts[j].score - refs[j] for j in verdicts
                 if verdicts[j].score is not None and refs.get(j) is not None]
        if verdict.admitted and gains:
            verdict.scores["gain"] = round(sum(gains), 4)
        return verdict, judged_by


def _merge(answers: Verdict, probe: Verdict) -> Verdict:
    """One verdict from an edit judged both ways: admitted only if both admit it; the answers'
    scores and stages, and the probe's under ``probe``. The reasons of the judge that rejected it
    come first (the one-line reason a rejection is shown with)."""
    scores = {**answers.scores, **{k: v for k, v in probe.scores.items() if k != "score"},
              "probe": probe.score}
    stages = {**answers.stages, **{f"probe.{k}": v for k, v in probe.stages.items()}}
    reasons = (probe.reasons + answers.reasons if answers.admitted and not probe.admitted
               else answers.reasons + probe.reasons)
    return Verdict(answers.admitted and probe.admitted, reasons, scores=scores,
                   stages=stages, sandbox=probe.sandbox or answers.sandbox,
                   seconds=answers.seconds + probe.seconds)


def _apply(files: dict[str, str], edit: Edit) -> dict[str, str]:
    out = dict(files)
    for path, text in edit.files.items():
        if text is None:
            out.pop(path, None)
        else:
            out[path] = text
    return out


def _call_dict(call) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(call) if is_dataclass(call) else dict(call)


def _total_cost(calls: list[dict]) -> float | None:
    costs = [c.get("cost_usd") for c in calls]
    if not costs or all(c is None for c in costs):
        return None
    return sum(c or 0.0 for c in costs)


def _proposer_name(proposer) -> str:
    return getattr(proposer, "name", type(proposer).__name__)
