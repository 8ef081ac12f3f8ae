"""The meta loop end to end on a tiny checkpoint: the process sandbox, a real git archive, the
offline proposer; budgets; a run killed with SIGKILL and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from evolve_fixtures import CopyTrainer, make_checkpoint, make_config, make_surface
from selfloop.core.errors import ConfigError
from selfloop.core.evolve import Budget, Evolution, Journal
from selfloop.core.registry import load_registry
from selfloop.core.types import Edit

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evolve")
    surface = make_surface(tmp / "surface")
    return tmp, surface, make_checkpoint(tmp / "ckpt"), load_registry([surface])


def evolution(world, name, proposer=None, **evolve):
    from selfloop.sandbox import choose_backend

    tmp, surface, ckpt, registry = world
    config = make_config(**evolve)
    return Evolution(
        config, archive_path=tmp / name, out=tmp / f"{name}.run", sandbox=choose_backend(config.sandbox),
        registry=registry, trainer=lambda config: CopyTrainer(ckpt),
        proposer=proposer or registry.create("proposer", "mutation", {}),
        parent_selector=registry.create("parent_selector", "dgm", {}), seed_dir=surface)


@pytest.fixture(scope="module")
def finished(world):
    evo = evolution(world, "A", iterations=2, workers=2)  # both children evaluated at once
    results = evo.run()
    return evo, results


def test_archive_holds_the_seed_and_evaluated_children(finished):
    evo, results = finished
    variants = evo.archive.list()
    assert [v.id for v in variants] == ["v0", "v1", "v2"]
    assert variants[0].meta["proposer"] == "seed" and variants[0].scores["score"] is not None
    assert variants[0].meta["operator"] == "seed" and variants[0].meta["changed_kinds"] == []
    for child in variants[1:]:
        assert child.parent in ("v0", "v1") and child.meta["proposer"] == "mutation"
        assert child.meta["decision"] in ("admitted", "rejected") and child.meta["reasons"]
        # which operator made it, and the kinds its edit changed (test_vote.py: a refiner; test_keep.py: a selector)
        assert child.meta["operator"] in ("mutation", "crossover")
        kinds = {"refine/test_vote.py": "refiner", "select/test_keep.py": "selector"}
        assert child.meta["changed_kinds"] == sorted({kinds[p] for p in child.meta["edit_paths"]})
        diff = evo.archive.diff(child.id)
        assert "tunable(" in diff and ("test_vote.py" in diff or "test_keep.py" in diff)
    assert results[0].seed_variant == "v0" and results[0].champion in {"v0", "v1", "v2"}
    events = Counter(e["event"] for e in Journal(evo.out / "journal.jsonl").events())
    assert events["attempt"] == 2 and events["archived"] == 2 and events["round_done"] == 1
    assert [v.parent for v in variants[1:]] == ["v0", "v0"]  # one batch: parents chosen before it


def test_a_finished_run_is_not_started_again(finished, world):
    again = evolution(world, "A", iterations=2, workers=2)
    with pytest.raises(ConfigError, match="--resume"):
        again.run()


def test_resume_of_a_finished_run_adds_nothing(finished, world):
    evo, _ = finished
    evolution(world, "A", iterations=2, workers=2).run(resume=True)
    assert len(evo.archive.list()) == 3


def test_kill_9_then_resume_loses_and_repeats_nothing(world, finished):
    tmp, surface, ckpt, _ = world
    script = f"""
import sys; sys.path.insert(0, {str(TESTS)!r})
from pathlib import Path
from evolve_fixtures import CopyTrainer, make_config
from selfloop.core.evolve import Evolution
from selfloop.core.registry import load_registry
from selfloop.sandbox import choose_backend
tmp, surface = Path({str(tmp)!r}), Path({str(surface)!r})
registry = load_registry([surface])
config = make_config(iterations=2)
Evolution(config, archive_path=tmp / "K", out=tmp / "K.run", sandbox=choose_backend(config.sandbox),
          registry=registry, trainer=lambda config: CopyTrainer(Path({str(ckpt)!r})),
          proposer=registry.create("proposer", "mutation", {{}}),
          parent_selector=registry.create("parent_selector", "dgm", {{}}), seed_dir=surface).run()
"""
    journal = Journal(tmp / "K.run" / "journal.jsonl")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(e["event"] == "attempt" for e in journal.events()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [e["attempt"]["key"] for e in journal.events() if e["event"] == "attempt"]
    assert before

    evo = evolution(world, "K", iterations=2)
    evo.run(resume=True)
    events = journal.events()
    keys = [e["attempt"]["key"] for e in events if e["event"] == "attempt"]
    assert sorted(keys) == ["r0-i0", "r0-i1"]  # each evaluated exactly once
    variants = evo.archive.list()
    assert len(variants) == 3 and len({v.meta["evolve_key"] for v in variants}) == 3
    # same seed, same config: the same first child as the uninterrupted run
    first, reference = evo.archive.files("v1"), finished[0].archive.files("v1")
    assert first == reference


def test_token_budget_stops_the_loop_cleanly(world):
    bad = "refine/test_vote.py\n<<<<<<< SEARCH\nnot in the file\n=======\nx\n>>>>>>> REPLACE\n"
    registry = world[3]
    proposer = registry.create("proposer", "llm", {"model": "openai/gpt-4o-mini", "mock_response": ["diagnosis", bad],
                                                   "fix_attempts": 0})
    evo = evolution(world, "T", proposer=proposer, iterations=5, max_tokens=1)
    evo.run()
    variants = evo.archive.list()
    assert len(variants) == 2 and variants[1].status == "rejected"
    assert variants[1].meta["tokens"] > 0 and variants[1].meta["cost_usd"] > 0
    assert variants[1].meta["calls"][0]["response"] == "diagnosis"
    assert "SEARCH text does not occur" in variants[1].meta["reasons"][0]
    assert evo.stopped.startswith("token budget reached")


def test_llm_edit_through_the_loop_is_archived_with_its_calls(world):
    valid = ("refine/test_vote.py\n<<<<<<< SEARCH\nVOTES = tunable(1, low=1, high=4)\n=======\n"
             "VOTES = tunable(3, low=1, high=4)\n>>>>>>> REPLACE\n")
    proposer = world[3].create("proposer", "llm", {"model": "anthropic/claude-3-5-haiku-latest",
                                                   "mock_response": ["More votes should help.", valid]})
    evo = evolution(world, "L", proposer=proposer, iterations=1)
    evo.run()
    child = evo.archive.get("v1")
    assert child.meta["proposer"] == "llm" and child.meta["model"] == "anthropic/claude-3-5-haiku-latest"
    assert [c["response"] for c in child.meta["calls"]] == ["More votes should help.", valid]
    assert "+VOTES = tunable(3, low=1, high=4)" in evo.archive.diff("v1")
    assert child.meta["decision"] in ("admitted", "rejected") and child.meta["stages"]["load"]


class CoreEditor:
    """A proposer that tries to rewrite the judge."""

    def propose(self, parent, *, editable, others, rng):
        return Edit(files={"../core/judge.py": "SCORE = 1.0\n"}, summary="edit the judge", proposer="core_editor")


def test_edit_outside_the_surface_is_rejected_and_never_archived(world):
    evo = evolution(world, "C", proposer=CoreEditor(), iterations=1)
    evo.run()
    child = evo.archive.get("v1")
    assert child.status == "rejected" and "outside the editable surface" in child.meta["reasons"][0]
    assert evo.archive.files("v1") == evo.archive.files("v0")  # the attempted file is not in the tree
    assert child.meta["edit_paths"] == ["../core/judge.py"]


def test_wall_clock_budget():
    budget = Budget(iterations=10, max_seconds=5, max_tokens=100, max_usd=0.5)
    assert budget.reached(iterations=3, seconds=1, tokens=10, usd=0.1) is None
    assert budget.reached(iterations=10, seconds=1, tokens=10, usd=0.1).startswith("iteration")
    assert budget.reached(iterations=3, seconds=6, tokens=10, usd=0.1).startswith("wall-clock")
    assert budget.reached(iterations=3, seconds=1, tokens=100, usd=0.1).startswith("token")
    assert budget.reached(iterations=3, seconds=1, tokens=10, usd=0.6).startswith("cost")


def test_journal_ignores_a_torn_last_line(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"event": "start"})
    with open(journal.path, "a") as f:
        f.write('{"event": "attem')
    assert journal.events() == [{"event": "start"}]


def test_a_challenger_must_beat_the_incumbent_by_the_margin():
    from types import SimpleNamespace

    from selfloop.core.evolve import RoundResult, _crowned

    scores = {"v0": 0.50, "v1": 0.503, "v2": 0.49, "v3": None}
    variants = {vid: SimpleNamespace(id=vid, seq=i, admitted=s is not None, scores={"score": s} if s else {})
                for i, (vid, s) in enumerate(scores.items())}
    evo = Evolution.__new__(Evolution)  # _best needs only the archive and the settings
    evo.archive = SimpleNamespace(get=variants.__getitem__)
    evo.settings = SimpleNamespace(champion_margin=0.005)
    assert evo._best(list(scores), incumbent="v0").id == "v0"  # +0.003 is noise
    evo.settings.champion_margin = 0.0
    assert evo._best(list(scores), incumbent="v0").id == "v1"
    variants["v2"].scores["score"] = 0.6
    evo.settings.champion_margin = 0.005
    assert evo._best(list(scores), incumbent="v0").id == "v2"

    # With gains (each over the round's seed, in what the variant was judged by) they rank: a
    # probed variant's score is on another scale than the answers' one.
    for vid, gain in {"v0": 0.0, "v1": 0.003, "v2": -0.01}.items():
        variants[vid].scores["gain"] = gain
    variants["v4"] = SimpleNamespace(id="v4", seq=4, admitted=True, scores={"score": 0.2, "gain": 0.05})
    assert evo._best(["v0", "v1", "v2", "v4"], incumbent="v0").id == "v4"

    # A variant judged both ways whose answers gained but whose probe model scored below the seed
    # pipeline's is no champion: it would train a worse next round.
    variants["v6"] = SimpleNamespace(id="v6", seq=6, admitted=True,
                                     scores={"score": 0.7, "gain": 0.15, "probe": 0.30})
    members = ["v0", "v1", "v2", "v4", "v6"]
    assert evo._best(members, incumbent="v0").id == "v6"  # no seed probe: nothing to compare with
    assert evo._best(members, incumbent="v0", seed_probe=0.35).id == "v4"
    assert evo._best(members, incumbent="v0", seed_probe=0.30).id == "v6"  # as good as the seed's

    kept = RoundResult(round=1, checkpoint="c1", seed_variant="v4", seed_score=0.0, champion="v5",
                       champion_score=0.0, variants=["v4", "v5"], crowned=0)
    assert _crowned(kept) == 0  # confirmed on round 0's checkpoint, where it won
    older = RoundResult(round=1, checkpoint="c1", seed_variant="v4", seed_score=0.0, champion="v5",
                        champion_score=0.0, variants=["v4", "v5"])
    assert _crowned(older) == 1  # a journal from before the field: its own round


def test_a_round_whose_variants_all_score_the_same_is_reported_as_no_signal():
    from types import SimpleNamespace

    def variant(vid, score, judged="answers"):
        return SimpleNamespace(id=vid, scores={"score": score}, meta={"judged_by": judged})

    variants = {"v0": variant("v0", 0.004), "v1": variant("v1", 0.004), "v2": variant("v2", 0.004),
                "v3": variant("v3", 0.9, "meta")}
    evo = Evolution.__new__(Evolution)
    evo.archive = SimpleNamespace(get=variants.__getitem__)
    state = {"archived": {"r1-i0": "v1", "r1-i1": "v2", "r1-i2": "v3", "r0-i0": "v9"}}
    found = evo._no_signal(1, state, "v0")
    assert found.startswith("no signal: all 3 variants judged by answers scored 0.004")
    variants["v2"].scores["score"] = 0.01
    assert evo._no_signal(1, state, "v0") is None


def test_an_edit_the_probe_rejects_is_shown_with_the_probes_reason():
    from selfloop.core.evolve import _merge
    from selfloop.core.validate import Verdict

    answers = Verdict(True, ["held-out score 0.382"], scores={"score": 0.382})
    probe = Verdict(False, ["probe: the short probe's model scores 0.227, below the threshold 0.284"],
                    scores={"probe_short": 0.227})
    merged = _merge(answers, probe)
    assert not merged.admitted and merged.reasons[0].startswith("probe: the short probe")
    assert merged.scores["score"] == 0.382 and merged.scores["probe"] is None
    assert _merge(Verdict(False, ["smoke: below"]), probe).reasons[0] == "smoke: below"
    passed = _merge(answers, Verdict(True, ["probe: scores 0.4"], scores={"score": 0.4}))
    assert passed.admitted and passed.reasons == ["held-out score 0.382", "probe: scores 0.4"]
    assert passed.scores["probe"] == 0.4
