"""`selfloop run`'s per-round summary: a table of numbers, then lines as wide as the screen."""

from __future__ import annotations

from rich.console import Console
from selfloop.core.run_cli import round_table

ENTRY = {
    "round": 2, "accuracy_by_difficulty": {str(d): 0.9 for d in range(1, 13)},
    "admission": {"admitted": True, "reason": "no drop beyond its margin at difficulties 1-7 (n=1000, alpha=0.05)",
                  "by_difficulty": {}},
    "acquired": {"labelled": 0, "self_label": 2000},
    "selection": [{"selector": "dedup", "kept": 1990, "dropped": {"duplicate": 10}},
                  {"selector": "majority_agreement", "kept": 1500, "dropped": {"disagreement": 490}}],
    "data": {"label_accuracy_kept": 0.987},
    "seconds": {"acquire": 12.0, "select": 30.0, "optimize": 200.0, "evaluate": 40.0, "admission": 60.0},
}


def rendered(width: int) -> list[str]:
    console = Console(record=True, width=width)
    console.print(round_table(ENTRY))
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_summary_lines_use_the_width_of_a_120_column_terminal():
    lines = rendered(120)
    assert "admission: no drop beyond its margin at difficulties 1-7 (n=1000, alpha=0.05)" in lines
    assert "acquired: 0 labelled, 2000 self_label; kept labels correct: 98.7%" in lines
    assert "selection: dedup kept 1990 (dropped 10 duplicate); majority_agreement kept 1500 (dropped 490 disagreement)" in lines
    assert "seconds: acquire 12, select 30, optimize 200, evaluate 40, admission 60" in lines
    assert lines[0] == "round 2: admitted"
    header = next(line for line in lines if line.lstrip().startswith("difficulty"))
    assert header.split()[1:] == [str(d) for d in range(1, 13)]


def test_on_a_narrow_screen_the_lines_wrap_at_its_width_not_the_tables():
    lines = rendered(60)
    assert max(map(len, lines)) <= 60
    assert any(len(line) > 50 for line in lines if not line.startswith(" "))


def test_a_round_that_keeps_no_new_examples_says_so_first():
    console = Console(record=True, width=120)
    console.print(round_table({**ENTRY, "warnings": ["no new examples kept"]}))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert lines[0] == "round 2: admitted"
    assert "WARNING: no new examples kept" in lines
    assert lines.index("WARNING: no new examples kept") < next(
        i for i, line in enumerate(lines) if line.startswith("admission:"))
