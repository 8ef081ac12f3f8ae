"""The pipeline as an editable file, and the offline proposer's structural operators."""

from __future__ import annotations

import random

import pytest
from selfloop.core.config import load_config
from selfloop.core.errors import ConfigError
from selfloop.core.pipeline import apply, parse, render, unknown_components
from selfloop.core.registry import load_registry
from selfloop.core.types import VariantView
from selfloop.plugins.propose.mutation import MutationProposer
from selfloop.plugins.propose.structural import cross_functions, definitions, edit_pipeline


def test_the_config_pipeline_round_trips():
    config = load_config()
    text = render(config)
    again = apply(config, text)
    assert again.acquire == config.acquire and again.select == config.select
    assert again.rewarder == config.rewarder and again.optimizer == config.optimizer
    assert again.refiner == config.refiner  # only the pipeline's sections are its


@pytest.mark.parametrize("text, message", [
    ("[[select]\nname = 1", "not valid TOML"),
    ("[refiner]\nname = 'greedy'\n", "unknown section(s) refiner"),
    ("acquire = []\n", "no acquirer left"),
    ("[select]\nname = 'dedup'\n", "must be a list of tables"),
    ("[[select]]\noptions = {}\n", "select.0.name: Field required"),
])
def test_a_bad_pipeline_is_one_line(text, message):
    with pytest.raises(ConfigError) as caught:
        apply(load_config(), text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_components_are_named():
    config = apply(load_config(), "[[select]]\nname = 'dedup'\n[[select]]\nname = 'no_such_selector'\n"
                                  "[optimizer]\nname = 'no_such_optimizer'\n")
    assert unknown_components(config, load_registry()) == ["selector 'no_such_selector'",
                                                           "optimizer 'no_such_optimizer'"]


def test_structural_edits_keep_a_valid_pipeline_and_cover_every_operation():
    config = load_config()
    text = render(config)
    registry = load_registry()
    seen = set()
    rng = random.Random(0)
    for _ in range(60):
        edited = edit_pipeline(text, rng)
        assert edited is not None
        text, summary = edited
        new = apply(config, text)
        assert unknown_components(new, registry) == []
        seen.add("option" if " option " in summary else "swap" if "->" in summary else summary.split()[1])
    assert seen == {"removed", "added", "moved", "swap", "option"}


def test_mutation_proposer_makes_pipeline_edits_when_the_pipeline_is_editable():
    config = load_config()
    files = {"pipeline.toml": render(config), "refine/x.py": "from selfloop.core.tunable import tunable\nK = tunable(2, low=1, high=5)\n"}
    parent = VariantView(id="v0", files=files)
    proposer = MutationProposer(pipeline_rate=1.0)
    edit = proposer.propose(parent, editable=["pipeline.toml", "refine/x.py"], others=[], rng=random.Random(3))
    assert edit.meta["operator"] == "pipeline" and set(edit.files) == {"pipeline.toml"}
    parse(edit.files["pipeline.toml"])
    edit = MutationProposer(pipeline_rate=0.0).propose(parent, editable=["pipeline.toml", "refine/x.py"],
                                                      others=[], rng=random.Random(3))
    assert edit.meta["operator"] == "mutation" and set(edit.files) == {"refine/x.py"}


MINE = '''import math


def score(x):
    return x + 1


class Picker:
    @staticmethod
    def pick(values):
        return max(values)

    def name(self):
        return "mine"
'''

THEIRS = MINE.replace("return x + 1", "return math.sqrt(x) * 2\n    # theirs").replace('"mine"', '"theirs"')


def test_function_crossover_takes_one_whole_function_from_the_other():
    assert set(definitions(MINE)) == {"score", "Picker.pick", "Picker.name"}
    for seed in range(6):
        path, text, name = cross_functions({"a.py": MINE}, {"a.py": THEIRS}, ["a.py"], random.Random(seed))
        assert name in ("score", "Picker.name")
        ours, theirs = definitions(text), definitions(THEIRS)
        assert set(ours) == set(definitions(MINE))
        if name == "score":
            assert "math.sqrt(x) * 2" in text and '"mine"' in text
        else:
            assert '"theirs"' in text and "return x + 1" in text
    assert cross_functions({"a.py": MINE}, {"a.py": MINE}, ["a.py"], random.Random(0)) is None


def test_mutation_proposer_crosses_functions_with_an_admitted_partner_only():
    parent = VariantView(id="v1", files={"a.py": MINE})
    other = VariantView(id="v2", files={"a.py": THEIRS}, status="admitted")
    proposer = MutationProposer(crossover_rate=1.0, function_crossover_share=1.0)
    edit = proposer.propose(parent, editable=["a.py"], others=[other], rng=random.Random(0))
    assert edit.meta == {"operator": "function_crossover", "other_parent": "v2"}
    rejected = VariantView(id="v3", files={"a.py": THEIRS}, status="rejected")
    with pytest.raises(Exception, match="no tunable"):
        proposer.propose(parent, editable=["a.py"], others=[rejected], rng=random.Random(0))
