"""The model-dependence gate: a variant whose gain survives taking the model away is rejected with a
reason that says so; honest changes, peer votes among them, are still admitted. Real process
sandbox, real archive, tiny checkpoints with peers."""

from __future__ import annotations

import pytest
from adversaries import REFINERS, SELECTORS, memorise_visible
from evolve_fixtures import CopyTrainer, make_config, make_surface
from selfloop.core.evolve import Evolution, bake_options, editable_files, read_surface
from selfloop.core.judge import ProblemPlan, draw_held_out, pinned_task
from selfloop.core.registry import load_registry
from selfloop.core.tunable import set_tunable
from selfloop.core.types import Edit
from selfloop.core.validate import Validator

pytestmark = pytest.mark.slow

# Held-out and probe sets large enough for the test to tell 0.5 from 0.25 (16 problems could not).
SIZES = {"smoke_per_difficulty": 8, "smoke_select": 16, "full_per_difficulty": 16, "full_select": 32,
         "held_out_per_difficulty": 32, "held_out_select": 64}


def checkpoint_with_peers(directory):
    from selfloop.core.models import save_policy
    from selfloop.plugins.model.embedded import Embedded

    return save_policy(Embedded(n_layer=1, n_embd=32, n_head=2, peers=2).create(), directory)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dependence")
    surface = make_surface(tmp / "surface")
    return tmp, surface, checkpoint_with_peers(tmp / "ckpt"), load_registry([surface])


def validator_for(config, checkpoint):
    from selfloop.sandbox import choose_backend

    s = config.evolve
    plan = ProblemPlan(s.refine_difficulties, s.select_difficulty, s.held_out_per_difficulty, s.held_out_select)
    task = pinned_task(config)
    return Validator(sandbox=choose_backend(config.sandbox), config=config, checkpoint=checkpoint, plan=plan,
                     held_out=draw_held_out(task, plan, 11), pinned_task=task, visible_seed=3, sample_seed=0,
                     smoke_size={"refine": s.smoke_per_difficulty, "select": s.smoke_select},
                     full_size={"refine": s.full_per_difficulty, "select": s.full_select})


@pytest.fixture(scope="module")
def judged(world):
    """A validator whose reference (the seed without the model) is set, and the seed's files."""
    _, surface, ckpt, registry = world
    config = make_config(**SIZES)
    validator = validator_for(config, ckpt)
    files = read_surface(surface)
    editable = editable_files(config, registry, ["refiner", "selector"], surface)
    seed = validator.validate(files, changed=[], editable=editable, threshold=None, baseline=True)
    assert seed.admitted and validator.reference is not None, seed.reasons
    return validator, files, editable, seed


def test_the_seed_is_scored_with_and_without_the_model(judged):
    _, _, _, seed = judged
    assert "null" in seed.stages and "without_model" in seed.scores
    assert seed.scores["without_model"]["refine_accuracy"] == 0.0  # random weights answer nothing
    assert "without_model" not in seed.feedback() and "probes" not in seed.feedback()


@pytest.mark.parametrize("name", sorted(REFINERS))
def test_a_refiner_that_answers_without_the_model_is_rejected(judged, name):
    validator, files, editable, _ = judged
    verdict = validator.validate({**files, "refine/test_vote.py": REFINERS[name]},
                                 changed=["refine/test_vote.py"], editable=editable, threshold=None)
    assert not verdict.admitted
    assert any(r.startswith("model dependence") and "held-out" in r for r in verdict.reasons), verdict.reasons
    assert verdict.scores["without_model"]["refine_accuracy"] == 1.0


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_a_selector_that_works_out_the_truth_is_rejected(judged, name):
    validator, files, editable, _ = judged
    verdict = validator.validate({**files, "select/test_keep.py": SELECTORS[name]},
                                 changed=["select/test_keep.py"], editable=editable, threshold=None)
    assert not verdict.admitted
    assert any(r.startswith("model dependence") for r in verdict.reasons), verdict.reasons
    assert verdict.scores["without_model"]["select_f"] > 0.9


def test_a_refiner_that_memorised_the_visible_problems_is_rejected(judged):
    validator, files, editable, _ = judged
    source = memorise_visible(validator.task, validator.plan, validator.visible_seed,
                              [validator.smoke_size, validator.full_size])
    verdict = validator.validate({**files, "refine/test_vote.py": source}, changed=["refine/test_vote.py"],
                                 editable=editable, threshold=None)
    assert not verdict.admitted
    assert any(r.startswith("model dependence") and "visible" in r for r in verdict.reasons), verdict.reasons
    assert verdict.scores["full"] > verdict.scores["score"]  # it looks good only where it has seen


def test_an_honest_change_is_admitted(judged):
    validator, files, editable, _ = judged
    text = set_tunable(files["refine/test_vote.py"], "VOTES", 3)
    verdict = validator.validate({**files, "refine/test_vote.py": text}, changed=["refine/test_vote.py"],
                                 editable=editable, threshold=None)
    assert verdict.admitted, verdict.reasons


def test_a_peer_vote_is_admitted(world):
    """Voting across the peer models uses more of the models, not less: never taken for a model-free gain."""
    _, surface, ckpt, registry = world
    config = make_config(**SIZES, refiner={"name": "self_consistency", "options": {"samples": 3}})
    config = config.model_copy(update={"refiner": config.evolve.refiner}, deep=True)  # as evolve does
    targets = ["refiner", "selector"]
    config, files, _ = bake_options(config, registry, read_surface(surface), targets, surface)
    editable = editable_files(config, registry, targets, surface)
    validator = validator_for(config, ckpt)
    seed = validator.validate(files, changed=[], editable=editable, threshold=None, baseline=True)
    assert seed.admitted and validator.reference is not None
    path = "refine/self_consistency.py"
    voted = {**files, path: set_tunable(files[path], "PEER_VOTE", True)}
    verdict = validator.validate(voted, changed=[path], editable=editable, threshold=None)
    assert verdict.admitted, verdict.reasons


class Scripted:
    """A proposer that proposes the given edits in order."""

    name = "scripted"

    def __init__(self, edits):
        self.edits = list(edits)

    def propose(self, parent, *, editable, others, rng):
        path, text, summary = self.edits.pop(0)
        return Edit(files={path: text}, summary=summary, proposer=self.name)


def test_evolve_end_to_end_rejects_every_adversary_and_admits_the_honest_change(world):
    from selfloop.sandbox import choose_backend

    tmp, surface, ckpt, registry = world
    seed_files = read_surface(surface)
    edits = [("refine/test_vote.py", text, f"adversary: {name}") for name, text in sorted(REFINERS.items())]
    edits += [("select/test_keep.py", text, f"adversary: {name}") for name, text in sorted(SELECTORS.items())]
    edits.append(("refine/test_vote.py", set_tunable(seed_files["refine/test_vote.py"], "VOTES", 3), "honest: 3 votes"))
    config = make_config(**SIZES, iterations=len(edits))
    evo = Evolution(config, archive_path=tmp / "E", out=tmp / "E.run", sandbox=choose_backend(config.sandbox),
                    registry=registry, trainer=lambda config: CopyTrainer(ckpt), proposer=Scripted(edits),
                    parent_selector=registry.create("parent_selector", "best", {}), seed_dir=surface)
    evo.run()
    children = evo.archive.list()[1:]
    assert len(children) == len(edits)
    for child in children:
        reasons = child.meta["reasons"]
        if child.meta["summary"].startswith("adversary"):
            assert child.status == "rejected", (child.meta["summary"], reasons)
            assert any(r.startswith("model dependence") for r in reasons), (child.meta["summary"], reasons)
            assert child.scores["without_model.score"] is not None  # both scores are kept in the archive
        else:
            assert child.status == "admitted", reasons
    assert evo.archive.get("v0").meta["reference"]["held_out"] == evo.archive.get("v0").scores["without_model.score"]
