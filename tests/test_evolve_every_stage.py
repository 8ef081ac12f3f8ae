"""Evolve targets every stage and itself, end to end on a tiny checkpoint with the process sandbox:
edits of the optimizer and the pipeline are judged by a training probe (a short round of the
variant's pipeline, its weights scored on the host), bad ones are one-line rejections, and a
variant's own proposer proposes its children, the seed's standing in when it breaks."""

from __future__ import annotations

import random

import pytest
from evolve_fixtures import CopyTrainer, make_checkpoint, make_config, make_surface
from selfloop.core.registry import load_registry
from selfloop.core.types import Edit

pytestmark = pytest.mark.slow

PROBE = {"steps": 4, "long_steps": 8, "label_problems": 12, "per_difficulty": 8, "output_mb": 8}
PIPELINE = {"acquire": [{"name": "labelled", "options": {"min_difficulty": 1, "max_difficulty": 2,
                                                         "per_difficulty": 30}},
                        {"name": "self_label", "options": {"start_difficulty": 3, "count": 12}}],
            "optimizer": {"name": "rejection_sft", "options": {"steps": 20, "batch_size": 8}}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("every-stage")
    surface = make_surface(tmp / "surface")
    return tmp, surface, make_checkpoint(tmp / "ckpt"), load_registry([surface])


def evolution(world, name, proposer, parent_selector=None, **evolve):
    from selfloop.core.evolve import Evolution
    from selfloop.core.config import load_config
    from selfloop.sandbox import choose_backend

    tmp, surface, ckpt, registry = world
    config = make_config(**evolve)
    config = load_config(None, {**config.model_dump(mode="json"), **PIPELINE})
    return Evolution(
        config, archive_path=tmp / name, out=tmp / f"{name}.run", sandbox=choose_backend(config.sandbox),
        registry=registry, trainer=lambda config: CopyTrainer(ckpt), proposer=proposer,
        parent_selector=parent_selector or registry.create("parent_selector", "dgm", {}), seed_dir=surface)


class Script:
    """Proposes the given edits in turn, each a function of the parent's files."""

    def __init__(self, *edits):
        self.edits, self.calls = list(edits), 0

    def propose(self, parent, *, editable, others, rng):
        make = self.edits[min(self.calls, len(self.edits) - 1)]
        self.calls += 1
        path, text, summary = make(parent.files)
        return Edit(files={path: text}, summary=summary, proposer="script", meta={"operator": summary.split(":")[0]})


def optimizer_edit(files):
    path = "optimize/rejection_sft.py"
    old = "ROUND_LR = tunable(5e-4"
    assert old in files[path]
    return path, files[path].replace(old, "ROUND_LR = tunable(2e-3"), "mutation: ROUND_LR 5e-4 -> 2e-3"


def unknown_selector(files):
    text = files["pipeline.toml"] + '\n[[select]]\nname = "no_such_selector"\n'
    return "pipeline.toml", text, "pipeline: added selector 'no_such_selector'"


def flooding_optimizer(files):
    path = "optimize/rejection_sft.py"
    flood = ("\nimport os as _os\n_out = _os.environ.get('SELFLOOP_OUTPUT')\n"
             "if _out and _os.environ.get('SELFLOOP_SANDBOXED'):\n"
             "    _os.makedirs(_out, exist_ok=True)\n"
             "    open(_os.path.join(_out, 'junk.bin'), 'wb').write(b'x' * (12 << 20))\n")
    return path, files[path] + flood, "mutation: writes 12 MB of output"


@pytest.fixture(scope="module")
def probed(world):
    evo = evolution(world, "P", Script(optimizer_edit, unknown_selector, flooding_optimizer),
                    iterations=3, targets=["refiner", "optimizer", "pipeline"], probe=PROBE)
    evo.run()
    return evo


def test_an_optimizer_edit_is_judged_by_the_model_its_training_probe_trains(probed):
    archive = probed.archive
    seed_probe = next(v for v in archive.list() if v.meta.get("evolve_key") == "r0-seed-probe")
    assert seed_probe.meta["judged_by"] == "probe" and seed_probe.scores["score"] is not None
    by_difficulty = {k for k in seed_probe.scores if k.startswith("probe_by_difficulty.")}
    assert by_difficulty == {f"probe_by_difficulty.{d}" for d in (2, 3, 4)}  # the frontier and one past
    child = next(v for v in archive.list() if v.meta.get("evolve_key") == "r0-i0")
    assert child.meta["changed_kinds"] == ["optimizer"] and child.meta["judged_by"] == "probe"
    assert child.status == "admitted", child.meta["reasons"]
    assert {"probe", "probe_short", "gain"} <= set(child.scores)
    assert child.scores["gain"] == pytest.approx(child.scores["probe"] - seed_probe.scores["score"], abs=1e-3)
    stages = child.meta["stages"]
    assert stages["probe.train"]["optimize"]["steps"] == PROBE["long_steps"]  # the budget held
    assert stages["probe_short.train"]["optimize"]["steps"] == PROBE["steps"]
    assert "right" in stages["null"]  # the labels kept without the model, counted on the host


def test_a_pipeline_naming_an_unknown_component_is_a_one_line_rejection(probed):
    child = next(v for v in probed.archive.list() if v.meta.get("evolve_key") == "r0-i1")
    assert child.status == "rejected" and child.meta["changed_kinds"] == ["pipeline"]
    reason = child.meta["reasons"][0]
    assert "no_such_selector" in reason and "\n" not in reason


def test_a_probe_over_its_output_quota_is_a_one_line_rejection(probed):
    child = next(v for v in probed.archive.list() if v.meta.get("evolve_key") == "r0-i2")
    assert child.status == "rejected"
    assert any("output quota exceeded" in r and "\n" not in r for r in child.meta["reasons"]), child.meta["reasons"]


def broken_proposer(files):
    """The mutation proposer, edited to raise whenever it is shown other variants (the one-shot
    check that admits a meta edit shows none, so the break shows only in use)."""
    path = "propose/mutation.py"
    old = "                rng: random.Random) -> Edit:\n"
    assert old in files[path]
    text = files[path].replace(old, old + "        if others:\n            raise RuntimeError('broken proposer')\n", 1)
    return path, text, "mutation: a proposer that raises"


class Latest:
    """Chooses the newest admitted variant: the broken proposer's tree is the next parent."""

    def choose(self, variants, k, rng):
        admitted = [v for v in variants if v.admitted and v.score is not None]
        return [max(admitted, key=lambda v: v.created).id] * k


def test_a_proposer_variant_that_raises_does_not_stop_the_loop(world):
    registry = world[3]
    seed_proposer = registry.create("proposer", "mutation", {})

    class First(Script):
        def propose(self, parent, **kwargs):
            if self.calls == 0:
                self.calls += 1
                path, text, summary = broken_proposer(parent.files)
                return Edit(files={path: text}, summary=summary, proposer="script", meta={"operator": "script"})
            return seed_proposer.propose(parent, **kwargs)

    evo = evolution(world, "M", First(broken_proposer), parent_selector=Latest(), iterations=3,
                    targets=["refiner", "proposer"])
    evo.run()
    records = {v.meta.get("evolve_key"): v for v in evo.archive.list()}
    meta_variant = records["r0-i0"]
    assert meta_variant.meta["changed_kinds"] == ["proposer"] and meta_variant.meta["judged_by"] == "meta"
    assert meta_variant.status == "admitted", meta_variant.meta["reasons"]
    assert meta_variant.meta["stages"]["meta"]["inherited_from"] == "v0"
    assert meta_variant.scores["score"] == records["r0-seed"].scores["score"]
    assert records["r0-i1"].parent == meta_variant.id
    for key in ("r0-i1", "r0-i2"):  # its clade: its proposer raised, the seed's proposed
        child = records[key]
        assert "broken proposer" in child.meta["proposer_fallback"]
        assert child.meta["summary"].startswith(("mutation", "crossover", "function crossover"))
    assert len([k for k in records if k and k.startswith("r0-i")]) == 3  # every iteration ran


def test_a_variant_own_parent_selector_runs_in_the_sandbox_and_bad_choices_fall_back(world):
    from selfloop.core.config import load_config
    from selfloop.core.errors import SelfloopError
    from selfloop.core.evolve import read_surface
    from selfloop.core.meta import TreeParentSelector, TreeRunner
    from selfloop.core.types import VariantSummary
    from selfloop.sandbox import choose_backend

    tmp, surface, _, _ = world
    config = load_config(None, {"sandbox": {"backend": "process", "timeout_s": 60}})
    files = read_surface(surface)
    variants = [VariantSummary("v0", None, 0.5, 2, 0.0), VariantSummary("v1", "v0", 0.6, 0, 1.0),
                VariantSummary("v2", "v0", None, 0, 2.0, admitted=False)]
    runner = TreeRunner(files, "v9", sandbox=choose_backend(config.sandbox), config=config, timeout_s=60)
    chosen = TreeParentSelector(runner).choose(variants, 2, random.Random(0))
    assert len(chosen) == 2 and set(chosen) <= {"v0", "v1"}
    path = "parents/dgm.py"
    broken = files[path].replace("    def choose(self", "    def choose(self, *a, **k):\n        return ['v2']\n\n"
                                 "    def _unused(self", 1)
    runner = TreeRunner({**files, path: broken}, "v9", sandbox=choose_backend(config.sandbox), config=config,
                        timeout_s=60)
    with pytest.raises(SelfloopError, match="not 2 of the admitted candidates"):
        TreeParentSelector(runner).choose(variants, 2, random.Random(0))


def test_the_leading_parent_selector_needs_a_clade_that_beats_the_seeds():
    from selfloop.core.meta import active_parent_selector
    from selfloop.core.types import VariantSummary as S

    tree = [S("v0", None, 0.0, 0, 0), S("v1", "v0", 0.1, 0, 1), S("v2", "v1", 0.2, 0, 2),
            S("v3", "v2", 0.3, 0, 3), S("v4", "v0", -0.1, 0, 4), S("v5", "v0", None, 0, 5, admitted=False)]
    assert active_parent_selector(tree, ["v1"], "v0") == "v1"  # its clade improves every time
    assert active_parent_selector(tree, ["v4"], "v0") is None  # too small a clade
    assert active_parent_selector(tree[:2], ["v1"], "v0") is None
