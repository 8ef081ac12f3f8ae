"""Evolve's trainer: one round's checkpoint from a plugins directory, on disk.

``LifecycleTrainer(config).train(r, plugins_dir=, previous=, out=)`` runs ``run_round`` with the
plugins of ``plugins_dir`` and writes the round like a run directory's round (``out/model``,
``out/data.jsonl``, ``out/report.json``); the plugins' ``on_round_finished`` hooks follow it, with
``out``'s parent (where evolve keeps every round's checkpoint) as the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from .components import build_components
from .models import save_policy
from .pipeline import apply_tree
from .registry import load_registry
from .round import run_round, tighten_selectors, use_threads
from .rundir import REPORT, load_examples, save_examples, write_json


class LifecycleTrainer:
    """Trains one round's checkpoint from a plugins directory (for the meta-agent's ``evolve``).

    ``train(r, plugins_dir=, previous=, out=)``: loads the plugins of ``plugins_dir`` (the
    champion's surface) and of the user's ``plugins_dirs`` (their own tasks, reporters...), starts from ``previous`` (a
    model directory whose parent holds ``data.jsonl`` and ``report.json``; None for round 0), runs
    round ``r`` and writes ``out/data.jsonl`` and ``out/report.json``. Returns ``out/model`` when
    the admission gate admits the round; else ``previous`` (``out/report.json`` says rejected, and
    later calls on this trainer tighten the selectors once more).
    """

    def __init__(self, config, *, plugins_dirs=(), log=None):
        self.config = config
        self.plugins_dirs = [Path(d) for d in plugins_dirs]
        self.log = log
        self.rejections = 0  # rounds this trainer rejected: how often to tighten the selectors

    def train(self, round_index: int, *, plugins_dir: Path | None, previous: Path | None,
              out: Path) -> Path:
        use_threads(self.config.lifecycle.threads)
        registry = load_registry([*([plugins_dir] if plugins_dir else []), *self.plugins_dirs])
        config = apply_tree(self.config, plugins_dir)  # the champion's pipeline.toml, if it has one
        components = build_components(config, registry)
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
        registry.notify("on_round_finished", log=self.log, report=result.report, run_dir=out.parent,
                        config=self.config.model_dump(mode="json"))
        return model
