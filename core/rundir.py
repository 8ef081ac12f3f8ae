"""A run on disk: where its rounds live, its training data, its reports and its plot.

Round r of a run in ``DIR`` lives in ``DIR/rounds/round_{r:03d}/`` (``model/`` with its peers in
``model/peers/``, ``data.jsonl``, ``report.json``); a round counts as finished once its
``report.json`` exists (written last, atomically). ``DIR/report.json`` is the whole run's report
(its format: ``selfloop.core.lifecycle``), ``DIR/accuracy_by_difficulty.png`` its plot.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .types import Example

REPORT = "report.json"
PLOT = "accuracy_by_difficulty.png"
ROUNDS_DIR = "rounds"


def round_dir(out: Path, round_index: int) -> Path:
    return out / ROUNDS_DIR / f"round_{round_index:03d}"


def save_examples(examples: list[Example], path: Path) -> None:
    tmp = path.with_suffix(".partial")
    with tmp.open("w") as f:
        for e in examples:
            f.write(json.dumps(asdict(e)) + "\n")
    os.replace(tmp, path)


def load_examples(path: Path) -> list[Example]:
    try:
        return [Example(**json.loads(line)) for line in path.read_text().splitlines() if line]
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: corrupt training data: {exc}") from None


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def finished_rounds(out: Path) -> list[dict[str, Any]]:
    """The reports of the rounds finished in ``out``, in order (stops at the first gap)."""
    reports = []
    index = 0
    while (round_dir(out, index) / REPORT).is_file():
        try:
            reports.append(json.loads((round_dir(out, index) / REPORT).read_text()))
        except ValueError as exc:
            raise CheckpointError(f"{round_dir(out, index) / REPORT}: corrupt: {exc}") from None
        index += 1
    return reports


def is_admitted(entry: dict[str, Any]) -> bool:
    """Whether a round report's checkpoint was admitted (reports from before the gate: yes)."""
    return entry.get("admission", {}).get("admitted", True)


def last_admitted(reports: list[dict[str, Any]]) -> int:
    """The index of the last admitted round (round 0 always is)."""
    return max(i for i, entry in enumerate(reports) if i == 0 or is_admitted(entry))


def accuracy_of(entry: dict[str, Any]) -> dict[str, float]:
    """A round report's accuracy by difficulty (the first evaluator's)."""
    return entry.get("accuracy_by_difficulty") or {}


# --- the plot -----------------------------------------------------------------------------------

def plot_accuracy(rounds: list[dict[str, Any]], path: Path) -> None:
    """``accuracy_figure`` as a PNG."""
    fig = accuracy_figure(rounds)  # first: it picks the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def accuracy_figure(rounds: list[dict[str, Any]]):
    """Accuracy by difficulty, one line per round; rejected rounds grey and dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    for entry in rounds:
        acc = accuracy_of(entry)
        xs = sorted(int(d) for d in acc)
        if is_admitted(entry):
            ax.plot(xs, [acc[str(x)] for x in xs], marker="o", label=f"round {entry['round']}")
        else:
            ax.plot(xs, [acc[str(x)] for x in xs], marker="x", linestyle="--", color="grey",
                    alpha=0.7, label=f"round {entry['round']} (rejected)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("difficulty")
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("accuracy by difficulty, per round")
    fig.tight_layout()
    return fig
