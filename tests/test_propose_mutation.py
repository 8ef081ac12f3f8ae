"""The offline proposer: tunable mutation and crossover, as real code edits."""

import ast
import random

import pytest
from selfloop.core.errors import ProposalError
from selfloop.core.registry import load_registry
from selfloop.core.tunable import find_tunables
from selfloop.core.types import VariantView

REFINE = '''from selfloop.core.tunable import tunable

VOTES = tunable(5, low=1, high=9)
TEMPERATURE = tunable(0.7, low=0.1, high=1.5)
STRATEGY = tunable("majority", choices=("majority", "weighted", "first"))


def answer():
    return VOTES
'''
OTHER = "X = 1\n"


def view(vid="v0", refine=REFINE):
    return VariantView(id=vid, files={"refine/vote.py": refine, "tasks/t.py": OTHER})


@pytest.fixture
def proposer():
    return load_registry(entry_points=False).create("proposer", "mutation", {})


def values(text):
    return {t.name: t.value for t in find_tunables(text)}


def test_mutation_changes_tunable_literals_within_bounds(proposer):
    rng = random.Random(3)
    seen = set()
    for _ in range(200):
        edit = proposer.propose(view(), editable=["refine/vote.py"], others=[], rng=rng)
        assert set(edit.files) == {"refine/vote.py"} and edit.proposer == "mutation"
        new = values(edit.files["refine/vote.py"])
        ast.parse(edit.files["refine/vote.py"])
        assert 1 <= new["VOTES"] <= 9 and 0.1 <= new["TEMPERATURE"] <= 1.5
        assert new["STRATEGY"] in ("majority", "weighted", "first")
        changed = {k for k, v in new.items() if v != values(REFINE)[k]}
        assert changed and all(k in edit.summary for k in changed)
        seen |= changed
        # nothing but the literals changed
        rest = lambda s: [ln for ln in s.splitlines() if "tunable(" not in ln]
        assert rest(edit.files["refine/vote.py"]) == rest(REFINE)
    assert seen == {"VOTES", "TEMPERATURE", "STRATEGY"}


def test_same_seed_same_edits(proposer):
    a = [proposer.propose(view(), editable=["refine/vote.py"], others=[], rng=random.Random(7)).files
         for _ in range(3)]
    b = [proposer.propose(view(), editable=["refine/vote.py"], others=[], rng=random.Random(7)).files
         for _ in range(3)]
    assert a == b


def test_only_editable_files_are_touched(proposer):
    with pytest.raises(ProposalError, match="no tunable"):
        proposer.propose(view(), editable=["tasks/t.py"], others=[], rng=random.Random(0))


def test_crossover_takes_values_from_the_other_variant():
    proposer = load_registry(entry_points=False).create("proposer", "mutation", {"crossover_rate": 1.0})
    other_text = REFINE.replace("tunable(5,", "tunable(8,").replace('tunable("majority"', 'tunable("weighted"')
    other = view("v3", other_text)
    for seed in range(20):
        edit = proposer.propose(view(), editable=["refine/vote.py"], others=[other], rng=random.Random(seed))
        assert edit.meta == {"operator": "crossover", "other_parent": "v3"}
        new = values(edit.files["refine/vote.py"])
        assert new["TEMPERATURE"] == 0.7  # equal in both: untouched
        assert (new["VOTES"], new["STRATEGY"]) != (5, "majority")
        assert new["VOTES"] in (5, 8) and new["STRATEGY"] in ("majority", "weighted")


def test_crossover_with_identical_variant_falls_back_to_mutation():
    proposer = load_registry(entry_points=False).create("proposer", "mutation", {"crossover_rate": 1.0})
    edit = proposer.propose(view(), editable=["refine/vote.py"], others=[view("v1")], rng=random.Random(0))
    assert edit.meta["operator"] == "mutation"


def test_mutated_floats_stay_inside_bounds_after_rounding():
    """A bound that rounding to 3 decimals would cross (0.9999 -> 1.0) still holds."""
    import random

    from selfloop.core.tunable import Tunable
    from selfloop.plugins.propose.mutation import mutate_value

    rng = random.Random(0)
    knob = Tunable(name="MIN_PROBABILITY", value=0.99, low=0.0, high=0.9999, choices=None,
                   lineno=1, col=0, end_lineno=1, end_col=4)
    values = [mutate_value(knob, rng) for _ in range(2000)]
    assert all(0.0 <= v <= 0.9999 for v in values) and max(values) == 0.9999


def test_mutation_prefers_tunables_no_variant_has_varied_yet():
    proposer = load_registry(entry_points=False).create("proposer", "mutation",
                                                        {"crossover_rate": 0.0, "max_mutations": 1})
    # the archive already holds VOTES and TEMPERATURE at other values: STRATEGY is unexplored
    others = [view("v1", REFINE.replace("tunable(5,", "tunable(6,")),
              view("v2", REFINE.replace("tunable(0.7,", "tunable(0.9,"))]
    rng = random.Random(0)
    touched = []
    for _ in range(200):
        edit = proposer.propose(view(), editable=["refine/vote.py"], others=others, rng=rng)
        new = values(edit.files["refine/vote.py"])
        touched += [k for k, v in new.items() if v != values(REFINE)[k]]
    # weights 1 : 1/4 : 1/4, so STRATEGY about two times in three
    assert 0.55 < touched.count("STRATEGY") / len(touched) < 0.78
    assert touched.count("VOTES") > 10 and touched.count("TEMPERATURE") > 10


def test_a_failed_proposal_is_recorded_under_the_operator_that_failed():
    """A mutation that cannot change anything names ``mutation`` in the archive, not the class."""
    from types import SimpleNamespace

    from selfloop.core.evolve import Evolution

    fixed = "from selfloop.core.tunable import tunable\nK = tunable(3, low=3, high=3)\n"
    proposer = load_registry(entry_points=False).create("proposer", "mutation", {"crossover_rate": 0.0})
    with pytest.raises(ProposalError) as caught:
        proposer.propose(VariantView(id="v1", files={"a.py": fixed}), editable=["a.py"], others=[],
                         rng=random.Random(0))
    assert "fixed by its range" in str(caught.value)

    evo = Evolution.__new__(Evolution)  # _attempt's failure path needs no sandbox
    evo.seed, evo.meta_files, evo.editable, evo.proposer = 0, {}, ["a.py"], proposer
    evo.settings = SimpleNamespace(novelty_attempts=2)
    evo.progress = lambda event, data: None
    attempt = evo._attempt(0, 0, "v1", [], VariantView(id="v1", files={"a.py": fixed}), None, set())
    assert attempt.meta["operator"] == "mutation" and attempt.meta["changed_kinds"] == []
    assert not attempt.verdict["admitted"] and "fixed by its range" in attempt.verdict["reasons"][0]


def test_the_shipped_parent_selectors_have_knobs_the_offline_proposer_moves(proposer):
    """With evolve targeting parent_selector, the mutation proposer edits the selectors' own search
    strategy (dgm's λ and α₀, hgm's priors and margin), within their bounds."""
    from pathlib import Path

    import selfloop.plugins

    root = Path(selfloop.plugins.__file__).parent
    files = {p: (root / p).read_text() for p in ("parents/dgm.py", "parents/hgm.py")}
    rng, moved = random.Random(0), set()
    for _ in range(60):
        try:
            edit = proposer.propose(VariantView(id="v0", files=files), editable=list(files), others=[], rng=rng)
        except ProposalError as e:  # MARGIN sits at its lower bound: a step below it is clipped back
            assert "fixed by its range" in str(e)
            continue
        for path, text in edit.files.items():
            before, after = values(files[path]), values(text)
            for t in find_tunables(text):
                assert t.low <= after[t.name] <= t.high
            moved |= {(path, k) for k in after if after[k] != before[k]}
    assert moved == {("parents/dgm.py", "SHARPNESS"), ("parents/dgm.py", "MIDPOINT"),
                     ("parents/hgm.py", "PRIOR_SUCCESSES"), ("parents/hgm.py", "PRIOR_FAILURES"),
                     ("parents/hgm.py", "MARGIN")}
