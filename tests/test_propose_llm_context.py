"""What the LLM proposer is shown (inspirations, history), its novelty test and its scratchpad, without a model."""

from __future__ import annotations

import threading

from selfloop.core.types import VariantView
from selfloop.plugins.propose import llm_context, novelty
from selfloop.plugins.propose.insights import Scratchpad

BASE = "A = tunable(1, low=0, high=9)\nB = tunable(0.5, low=0.0, high=1.0)\n\n\ndef f(x):\n    return x\n"


def v(i, parent="v0", smoke=None, operator="llm:openai/a", status="admitted", text=BASE, reasons=()):
    return VariantView(id=f"v{i}", files={"f.py": text}, scores={} if smoke is None else {"smoke": smoke},
                       parent=parent, summary=f"change {i}", operator=operator, status=status,
                       reasons=list(reasons))


PARENT = v(0, parent="v9", smoke=0.4)
ANCESTOR = v(9, parent=None, smoke=0.3, operator="seed", text=BASE.replace("0.5,", "0.1,"))


def test_inspirations_are_the_best_then_diverse_ones():
    best = v(1, smoke=0.7, text=BASE.replace("(1,", "(2,"))
    second = v(2, smoke=0.6, text=BASE.replace("(1,", "(3,"))
    big = v(3, smoke=0.2, text=BASE.replace("return x", "return x * 2\n    # more\n    pass"))
    other_operator = v(4, smoke=0.1, operator="mutation", text=BASE.replace("(1,", "(4,"))
    rejected = v(5, smoke=0.9, status="rejected", text=BASE.replace("(1,", "(5,"))
    shown = llm_context.inspirations(PARENT, [rejected, big, other_operator, second, best, ANCESTOR], 2, 2)
    # the top two by visible score; then another operator first, then the largest change; no
    # rejected variant, no ancestor among the diverse ones
    assert [x.id for x in shown] == ["v1", "v2", "v4", "v3"]
    text = llm_context.render_inspirations(PARENT, shown[:1])
    assert text.startswith("### v1 (admitted, smoke 0.700; made by llm:openai/a): change 1")
    assert "-A = tunable(1, low=0, high=9)\n+A = tunable(2, low=0, high=9)" in text and "def f" not in text


def test_diffs_are_capped():
    huge = v(1, smoke=0.5, text=BASE + "\n".join(f"X{i} = {i}" for i in range(2000)))
    assert len(llm_context.file_diff(PARENT.files, huge.files, max_chars=500)) < 600


def test_history_shows_lineage_and_attempts_with_how_they_ended():
    failed = v(7, smoke=0.1, status="rejected", reasons=["smoke: 0.10 below 0.30", "other"])
    text = llm_context.history(PARENT, [failed, ANCESTOR, v(6, smoke=0.5)], max_lines=1)
    lines = text.splitlines()
    assert lines[0] == "Lineage of v0 (its ancestors, oldest first):"
    assert lines[1] == "- v9 (seed, seed): change 9 - admitted, smoke 0.300"
    assert lines[2] == "- v0 (the parent): change 0 - admitted, smoke 0.400"
    assert lines[4] == "- v7 (from v0, llm:openai/a): change 7 - rejected: smoke: 0.10 below 0.30"
    assert "v6" not in text  # over max_lines: the newest are kept


def test_novelty_ignores_layout_and_comments_but_not_values():
    mine = {"f.py": BASE.replace("(1,", "(7,")}
    same = v(1, text=BASE.replace("A = tunable(1, low=0, high=9)", "A = tunable(7,  low=0, high=9)  # seven"))
    other_value = v(2, text=BASE.replace("(1,", "(8,"))
    elsewhere = v(3, text=BASE.replace("return x", "return -x"))
    near, sim, dup = novelty.closest(PARENT, mine, [elsewhere, other_value, same])
    assert (near.id, dup) == ("v1", True) and sim == 1.0
    near, sim, dup = novelty.closest(PARENT, mine, [elsewhere, other_value])
    assert near.id == "v2" and sim > 0.9 and not dup
    # another's change is its own, against its own parent when in view
    child = v(4, parent="v1", text=same.files["f.py"].replace("return x", "return -x"))
    near, sim, dup = novelty.closest(PARENT, {"f.py": BASE.replace("return x", "return -x")}, [same, child])
    assert (near.id, dup) == ("v4", True)
    assert novelty.closest(PARENT, mine, [same], threshold=2.0)[2] is False  # above 1: off


def test_scratchpad_refreshes_once_at_a_time_and_every_n():
    pad = Scratchpad(every=3)
    assert not pad.claim(has_history=False)  # nothing to summarize yet
    assert pad.claim(has_history=True)
    results = []
    threads = [threading.Thread(target=lambda: results.append(pad.claim(True))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 4  # a refresh is in flight: nobody else starts one
    pad.done("notes")
    assert pad.current() == "notes" and pad.claim(True)  # 5 proposals since: due
    pad.done(None)  # a failed call keeps the notes
    assert pad.current() == "notes" and "Previous insights:\nnotes" in pad.messages("h")[1]["content"]
    assert [pad.claim(True) for _ in range(3)] == [False, False, True]
    assert not Scratchpad(every=0).claim(True)


def test_a_failed_proposal_reads_once_in_the_history():
    reason = "proposal: openai/a: near-duplicate of v2 (similarity 1.00)"
    failed = VariantView(id="v3", files=PARENT.files, parent="v0", summary=reason, operator="llm",
                         status="rejected", reasons=[reason])
    line = llm_context.history(PARENT, [failed]).splitlines()[-1]
    assert line == f"- v3 (from v0, llm): (no edit) - rejected: {reason}"


def test_ties_prefer_newer_variants_outside_the_lineage():
    grand = v(8, parent=None, smoke=0.5, text=BASE.replace("(1,", "(6,"))
    parent = v(0, parent="v8", smoke=0.5)
    shown = llm_context.inspirations(parent, [grand, v(1, smoke=0.5, text=BASE.replace("(1,", "(2,")),
                                             v(2, smoke=0.5, text=BASE.replace("(1,", "(3,"))], 2, 0)
    assert [x.id for x in shown] == ["v2", "v1"]
