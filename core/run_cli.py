"""`selfloop run`: the self-improvement lifecycle on the configured model, round after round."""

from __future__ import annotations

import time

import click

from .cli import CONTEXT, config_option, plugins_dir_option, print_json
from .rundir import accuracy_of


@click.command("run", context_settings=CONTEXT)
@config_option
@plugins_dir_option
@click.option("--rounds", type=click.IntRange(min=0), default=None,
              help="Self-improvement rounds after the base round (default: lifecycle.rounds).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory; an existing run there is resumed (default: lifecycle.out).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads (default: lifecycle.threads, else torch's choice).")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
def run(config_path, plugins_dirs, rounds, out_dir, threads, as_json):
    """Train the base model on labelled data (or resume from --out), then run self-improvement
    rounds: acquire, select, optimize, evaluate. Writes DIR/report.json, a plot of accuracy by
    difficulty per round, and each round's checkpoint; an interrupted run resumes from its last
    finished round."""
    from .config import load_config
    from .lifecycle import Lifecycle
    from .registry import load_registry
    from .rundir import PLOT, REPORT

    overrides = {"lifecycle": {k: v for k, v in
                               {"out": out_dir, "rounds": rounds, "threads": threads}.items()
                               if v is not None}}
    config = load_config(config_path, overrides=overrides)
    console = log_console()
    lifecycle = Lifecycle(config, load_registry(plugins_dirs), config.lifecycle.out,
                          log=lambda message: log_line(console, message))
    report = lifecycle.run(on_round=lambda entry: console.print(round_table(entry), soft_wrap=not console.is_terminal))
    out = lifecycle.out
    if as_json:
        print_json(report)
        return
    status = "finished" if report["finished"] else "stopped early (lifecycle.max_seconds)"
    log_line(console, f"{status}: {len(report['rounds'])} rounds in {out}; report {out / REPORT}, "
                      f"plot {out / PLOT}; peak memory {report['peak_rss_mib']:.0f} MiB", dim=False)


# Off a terminal (a log file, a pipe) rich would fall back to 80 columns (or to $COLUMNS, which a
# job runner may set narrow): a fixed width instead, and the story's lines are never wrapped.
LOG_WIDTH = 120


def log_console():
    """The stderr console of a run: the terminal's width on one, ``LOG_WIDTH`` off one."""
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=LOG_WIDTH)


def log_line(console, message: str, *, dim: bool = True) -> None:
    """One line of the run's story: dim on a terminal, timestamped plain text off one."""
    from rich.text import Text

    if console.is_terminal:
        console.print(Text(message, style="dim" if dim else ""))
    else:
        console.print(Text(f"{time.strftime('%H:%M:%S')} {message}"), soft_wrap=True)


def round_table(entry):
    """One round: its verdict, a table of accuracy by difficulty and the admission gate's numbers,
    then one line each for the warnings, the verdict's reason, the data, the selection and the time
    per stage (lines as wide as the screen, not squeezed under the table)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    acc = accuracy_of(entry)
    admission = entry.get("admission") or {"admitted": True, "reason": "", "by_difficulty": {}}
    gate = admission["by_difficulty"]
    difficulties = sorted(set(acc) | set(gate), key=int)
    verdict = "admitted" if admission["admitted"] else "[bold red]REJECTED[/]"
    # whole percents, no borders: twelve difficulties still fit an 80-column terminal
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("difficulty")
    for d in difficulties:
        table.add_column(d, justify="right", no_wrap=True)

    def percent(values, key=None):
        return [f"{100 * (values[d] if key is None else values[d][key]):.0f}" if d in values else ""
                for d in difficulties]

    table.add_row("exact %", *percent(acc))
    if gate:  # the gate's own problems: both checkpoints on the same ones
        table.add_row("gate before %", *percent(gate, "before"))
        table.add_row("gate after %", *percent(gate, "after"))
        table.add_row("gate margin %", *percent(gate, "margin"))
    title = Text.from_markup(f"round {entry['round']}: {verdict}")
    return Group(title, table, *(Text(line) for line in round_lines(entry, admission)))


def round_lines(entry, admission) -> list[str]:
    """The round's summary below its table, a line per subject."""
    lines = [f"WARNING: {warning}" for warning in entry.get("warnings", [])]
    lines.append(f"admission: {admission['reason']}")
    if "continues_from" in admission:
        lines[-1] += f"; next round from {admission['continues_from']}"
    if admission.get("tightened"):
        lines.append(f"selection tightened: {'; '.join(admission['tightened'])}")
    acquired = entry.get("acquired") or {}
    data = entry.get("data", {})
    label = data.get("label_accuracy_kept")
    lines.append("acquired: " + (", ".join(f"{n} {name}" for name, n in acquired.items()) or "none")
                 + (f"; kept labels correct: {label:.1%}" if label is not None else "")
                 + (f"; peers trained: {len(entry['peers_optimize'])}" if entry.get("peers_optimize") else ""))
    lines.append("selection: " + ("; ".join(
        f"{s['selector']} kept {s['kept']}"
        + (" (dropped " + ", ".join(f"{n} {why}" for why, n in s["dropped"].items()) + ")" if s["dropped"] else "")
        for s in entry.get("selection", [])) or "no selectors"))
    lines.append("seconds: " + (", ".join(f"{k} {v:.0f}" for k, v in entry.get("seconds", {}).items()) or "-"))
    return lines
