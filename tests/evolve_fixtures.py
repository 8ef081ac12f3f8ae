"""Helpers of the evolve tests: a small surface (the installed plugins plus a refiner and a selector
with tunables), a tiny untrained checkpoint, and a trainer that hands it out."""

from __future__ import annotations

import shutil
from pathlib import Path

from selfloop.core.config import load_config
from selfloop.core.evolve import surface_dir

VOTE = '''"""Majority over k samples (a test refiner with tunables)."""
from collections import Counter

from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable

VOTES = tunable(1, low=1, high=4)
TEMPERATURE = tunable(0.5, low=0.1, high=1.0)


class Vote:
    def refine(self, policy, problems, *, generator, rewarder, seed):
        samples = generator.generate(policy, [p.prompt for p in problems], n=VOTES,
                                     temperature=TEMPERATURE if VOTES > 1 else 0.0,
                                     max_new_tokens=10, seed=seed)
        return [Counter(group).most_common(1)[0][0] for group in samples]


@hookimpl
def register_refiner(register):
    register("test_vote", Vote)
'''

KEEP = '''"""Keeps self-labels of plausible length (a test selector with a tunable)."""
from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable
from selfloop.core.types import Selection, SelectionReport

SLACK = tunable(1, low=0, high=3)


class KeepPlausible:
    def select(self, examples, *, task, policy, generator, round_index, rng, history=()):
        kept = [e for e in examples if abs(len(e.completion.strip()) - (e.difficulty + 1)) <= SLACK]
        return Selection(kept, SelectionReport("test_keep", len(kept), {"length": len(examples) - len(kept)}))


@hookimpl
def register_selector(register):
    register("test_keep", KeepPlausible)
'''

# A variant that games its visible score: its task's verifier accepts anything.
GAMED_TASK_LINE = ("        return self.extract_answer(completion) == problem.answer",
                   "        return True")

SETTINGS = {
    "refiner": {"name": "test_vote"}, "select": [{"name": "test_keep"}],
    "evolve": {"rounds": 1, "iterations": 2, "refiner": {"name": "test_vote"}, "confirm": False, "refine_difficulties": [2, 3], "select_difficulty": 3,
               "smoke_per_difficulty": 4, "smoke_select": 6, "full_per_difficulty": 6, "full_select": 8,
               "held_out_per_difficulty": 8, "held_out_select": 10,
               # the answers' judges alone: tests of the training probe pass their own [evolve.probe]
               "probe": {"enabled": False}},
    "sandbox": {"backend": "process", "timeout_s": 120},
}


def make_surface(directory: Path) -> Path:
    shutil.copytree(surface_dir(), directory, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (directory / "refine" / "test_vote.py").write_text(VOTE)
    (directory / "select" / "test_keep.py").write_text(KEEP)
    return directory


def make_config(**evolve):
    overrides = {**SETTINGS, "evolve": {**SETTINGS["evolve"], **evolve}}
    return load_config(None, overrides)


def make_checkpoint(directory: Path) -> Path:
    from selfloop.core.models import save_policy
    from selfloop.plugins.model.embedded import Embedded

    return save_policy(Embedded(n_layer=1, n_embd=32, n_head=2).create(), directory)


class CopyTrainer:
    """Hands out one prepared checkpoint per round (training is the lifecycle's, tested there)."""

    def __init__(self, checkpoint: Path):
        self.checkpoint, self.calls = checkpoint, []

    def train(self, round_index, *, plugins_dir, previous, out):
        self.calls.append((round_index, plugins_dir, previous))
        if not out.exists():
            shutil.copytree(self.checkpoint, out)
        return out
