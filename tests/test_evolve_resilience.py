"""The main job goes on whatever the checkpoint or the seed plugins do: a seed the judge cannot
confirm is recorded with its reason, a seed that cannot be scored skips its round's iterations, and
nothing of either is replayed as a crash by --resume."""

from __future__ import annotations

import shutil

import pytest
from evolve_fixtures import (
    GAMED_TASK_LINE,
    CopyTrainer,
    make_checkpoint,
    make_config,
    make_surface,
)
from selfloop.core.evolve import Evolution, Journal
from selfloop.core.registry import load_registry

pytestmark = pytest.mark.slow


def evolution(tmp, surface, ckpt, name, **evolve):
    from selfloop.sandbox import choose_backend

    config = make_config(**evolve)
    registry = load_registry([surface])
    return Evolution(config, archive_path=tmp / name, out=tmp / f"{name}.run",
                     sandbox=choose_backend(config.sandbox), registry=registry,
                     trainer=lambda config: CopyTrainer(ckpt),
                     proposer=registry.create("proposer", "mutation", {}),
                     parent_selector=registry.create("parent_selector", "dgm", {}), seed_dir=surface)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("resilience")


@pytest.fixture(scope="module")
def ckpt(tmp):
    return make_checkpoint(tmp / "ckpt")


def test_a_seed_the_judge_does_not_confirm_is_recorded_not_fatal(tmp, ckpt):
    surface = make_surface(tmp / "gamed")
    task = surface / "tasks" / "reversed_addition.py"
    task.write_text(task.read_text().replace(*GAMED_TASK_LINE))  # its own verifier accepts anything
    evo = evolution(tmp, surface, ckpt, "G", iterations=1)
    results = evo.run()
    seed = evo.archive.get("v0")
    assert seed.admitted and seed.scores["score"] is not None
    assert any(r.startswith("note (a baseline is never rejected): held-out: visible score") for r in seed.meta["reasons"])
    assert len(evo.archive.list()) == 2 and results[0].seed_variant == "v0"


def test_a_seed_that_cannot_be_scored_skips_its_iterations_and_the_run_finishes(tmp, ckpt):
    surface = make_surface(tmp / "broken")
    refiner = surface / "refine" / "test_vote.py"
    refiner.write_text(refiner.read_text().replace("        samples =", "        raise RuntimeError('broken seed')\n        samples ="))
    evo = evolution(tmp, surface, ckpt, "B", iterations=2)
    results = evo.run()
    seed = evo.archive.get("v0")
    assert seed.scores.get("score") is None and "broken seed" in seed.meta["reasons"][0]
    assert [v.id for v in evo.archive.list()] == ["v0"] and results[0].champion == "v0"
    events = [e["event"] for e in Journal(evo.out / "journal.jsonl").events()]
    assert "skipped" in events and events.count("round_done") == 1
    # --resume of that run neither repeats the failure nor adds anything
    evolution(tmp, surface, ckpt, "B", iterations=2).run(resume=True)
    assert [v.id for v in evo.archive.list()] == ["v0"]


def test_a_sandbox_that_breaks_mid_run_fails_one_evaluation_not_the_run(tmp, ckpt):
    class Breaking:
        """The real sandbox for the seed, then an engine that raises."""

        def __init__(self, real):
            self.real, self.calls, self.name = real, 0, real.name

        def run(self, *args, **kwargs):
            self.calls += 1
            if self.calls > 1:
                raise OSError("the engine went away")
            return self.real.run(*args, **kwargs)

    surface = make_surface(tmp / "plain")
    evo = evolution(tmp, surface, ckpt, "S", iterations=1)
    evo.sandbox = Breaking(evo.sandbox)
    evo.run()
    child = evo.archive.get("v1")
    assert child.status == "rejected" and child.meta["reasons"][0] == "validation error: OSError: the engine went away"
    shutil.rmtree(tmp / "plain")
