"""A run of the closed loop in a directory, round after round, resumable: ``Lifecycle``.

Each round is ``run_round`` (``core/round.py``) on the components of the run config
(``core/components.py``); the run directory's layout is ``core/rundir.py``. A rejected round is
still a finished round on disk (its report says why); the next round starts from the last admitted
checkpoint and its training set (the rejected round's self-labels are not carried on), and every
selector offering the optional ``tighten()`` method is made stricter first. After every finished
round the plugins' ``on_round_finished`` hooks are called (an experiment tracker is such a plugin).

``DIR/report.json``::

  {"config": {...validated RunConfig...}, "seed": 0, "started": <unix time>,
   "finished": true|false, "peak_rss_mib": ...,
   "rounds": [{"round": 0, "accuracy_by_difficulty": {"1": 1.0, ...},   # first evaluator
               "evaluations": [{"evaluator", "metrics", "accuracy_by_difficulty", "details"}],
               "acquired": {"labelled": 20000}, "selection": [{"selector", "kept", "dropped"}],
               "data": {"new": n, "training_set": n, "label_accuracy_acquired": x|null,
                        "label_accuracy_kept": x|null, "distinct_ratio": x, ...},
               "warnings": ["no new examples kept"],  # [] when nothing needs saying
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

A run killed at any point resumes after the last finished round, from the last admitted one.
Without ``keep_checkpoints`` only the last admitted round's model is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .components import build_components
from .errors import CheckpointError, ConfigError
from .models import save_policy
from .round import peak_rss_mib, run_round, tighten_selectors, use_threads
from .rundir import (
    PLOT,
    REPORT,
    finished_rounds,
    is_admitted,
    last_admitted,
    load_examples,
    plot_accuracy,
    round_dir,
    save_examples,
    write_json,
)

# Settings that may differ between a run and its resumption.
RESUMABLE_CHANGES = {("lifecycle", key) for key in
                     ("rounds", "out", "max_seconds", "threads", "plot", "keep_checkpoints")}
# Sections a lifecycle run does not use: they may change freely between a run and its resumption.
UNUSED_SECTIONS = {"evolve", "sandbox", "llm", "proposer", "parent_selector"}


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
            self.components.registry.notify("on_round_finished", log=self.log, report=result.report,
                                            run_dir=self.out, config=report["config"])
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


def _drop_models(out: Path, last: int, *, keep: int) -> None:
    """Remove the models of rounds 0..``last`` but round ``keep``'s (the last admitted)."""
    for index in range(last + 1):
        model = round_dir(out, index) / "model"
        if index != keep and model.is_dir():
            shutil.rmtree(model)
