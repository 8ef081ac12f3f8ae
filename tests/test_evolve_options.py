"""Config options move into the evolved plugins' tunables; the evaluation frontier of a checkpoint."""

from __future__ import annotations

from selfloop.core.config import load_config
from selfloop.core.evolve import (
    bake_options,
    editable_files,
    frontier,
    read_surface,
    surface_dir,
)
from selfloop.core.registry import load_registry
from selfloop.core.tunable import find_tunables


def test_options_of_evolved_components_become_their_tunables():
    config = load_config(None, {"refiner": {"name": "self_consistency", "options": {"samples": 7}},
                                "select": [{"name": "majority_agreement",
                                            "options": {"votes": 3, "threshold": 0.75, "checkpoints": []}},
                                           {"name": "format_filter", "options": {"length_offset": 99}}]})
    registry = load_registry(entry_points=False)
    surface = surface_dir()
    baked, files, moved = bake_options(config, registry, read_surface(surface), ["refiner", "selector"], surface)
    values = lambda path: {t.name: t.value for t in find_tunables(files[path])}
    assert values("refine/self_consistency.py")["SAMPLES"] == 7
    assert values("select/majority_agreement.py")["VOTES"] == 3
    assert values("select/majority_agreement.py")["THRESHOLD"] == 0.75
    assert baked.refiner.options == {}
    assert baked.select[0].options == {"checkpoints": []}  # no tunable of that name: stays an option
    assert baked.select[1].options == {"length_offset": 99}  # out of the tunable's range: stays
    assert len(moved) == 3 and config.select[0].options["votes"] == 3  # the original is untouched
    assert editable_files(baked, registry, ["refiner", "selector"], surface) == [
        "refine/self_consistency.py", "select/format_filter.py", "select/majority_agreement.py"]


def test_frontier_lies_where_problems_discriminate():
    assert frontier({"1": 1.0, "2": 0.99, "3": 0.7, "4": 0.1}) == ([2, 3, 4], 3)
    assert frontier({"1": 1.0, "2": 1.0}) == ([3, 4, 5], 3)  # all solved: beyond them
    assert frontier({"1": 0.0, "2": 0.0, "3": 0.0}) == ([1, 2, 3], 1)  # none solved: the easiest
    assert frontier({}) is None


def test_frontier_on_a_cliff_measures_the_cliff_not_the_solved_lengths():
    # Right up to 9 digits, 19% at 10, nothing beyond: the checkpoint that crashed the main job.
    cliff = {str(d): 1.0 for d in range(1, 10)} | {"10": 0.19, "11": 0.02, "12": 0.0}
    refine, select = frontier(cliff)
    assert refine == [9, 10, 11] and select == 10
    assert all(0.0 < cliff[str(d)] < 1.0 for d in (10, 11))
    # The main job's round-0 checkpoint here: 96% at 9 digits, 1% at 10. Selection goes where the
    # labels are mostly right (a few to filter), not where almost none are.
    steep = {str(d): 1.0 for d in range(1, 8)} | {"8": 0.99, "9": 0.96, "10": 0.01, "11": 0.0, "12": 0.0}
    assert frontier(steep) == ([8, 9, 10], 9)
