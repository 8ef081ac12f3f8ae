"""`selfloop evolve`: the main job. The GRO loop trains the base model; between training rounds the
meta-agent evolves the lifecycle's refinement and selection plugins against the current checkpoint,
and the best variant is promoted into the next round.

With no LLM configured the offline ``mutation`` proposer is used (no network); with ``--model``
(or ``SELFLOOP_LLM_MODEL``, or ``[llm] model``) the ``llm`` proposer is, unless the run config names
a proposer itself. Against a real provider::

    export OPENAI_API_KEY=...
    selfloop evolve --model openai/gpt-4o-mini --iterations 20
    selfloop evolve --model hosted_vllm/Qwen/Qwen2.5-7B-Instruct --api-base http://localhost:8000/v1
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import click

from .cli import CONTEXT, config_option, plugins_dir_option, print_json

# Off a terminal (a log file, a pipe) tables are laid out this wide: never cropped or wrapped.
EVOLVE_LOG_WIDTH = 1000


@click.command("evolve", context_settings=CONTEXT)
@config_option
@plugins_dir_option
@click.option("--iterations", type=click.IntRange(min=0), help="Total meta-loop iterations (over all rounds).")
@click.option("--rounds", type=click.IntRange(min=1), help="Training rounds interleaved with evolution.")
@click.option("--workers", type=click.IntRange(min=1), help="Variants evaluated at once.")
@click.option("--executor", type=click.Choice(["local", "ray"]),
              help="Where evaluations run: threads on this host (local, the default) or a Ray cluster.")
@click.option("--ray-address", help="Ray cluster to join (auto, or HOST:PORT); default: start one on this machine.")
@click.option("--archive", "archive_path", envvar="SELFLOOP_ARCHIVE", type=click.Path(file_okay=False),
              help="The variant archive (a git repository) to create or continue.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory (journal, checkpoints); default ARCHIVE.run")
@click.option("--resume", is_flag=True, help="Continue the run that made --archive after a crash or kill.")
@click.option("--fresh", is_flag=True,
              help="Start afresh: move an existing archive and its run directory aside (ARCHIVE.old-TIME).")
@click.option("--seed", type=int, help="Seed of the run (offline runs with one seed are reproducible).")
@click.option("--model", "models", envvar="SELFLOOP_LLM_MODEL", multiple=True,
              help="LLM for the proposer, litellm provider/name; give it more than once for several, "
                   "chosen per proposal by gain per dollar.")
@click.option("--api-base", envvar="SELFLOOP_LLM_API_BASE", help="API base URL of the LLM (local servers).")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), help="Wall-clock budget.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="LLM token budget.")
@click.option("--max-usd", type=click.FloatRange(min=0, min_open=True), help="LLM cost budget in US dollars.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evolve(config_path, plugins_dirs, iterations, rounds, workers, executor, ray_address, archive_path, out,
           resume, fresh, seed, models, api_base, max_seconds, max_tokens, max_usd, as_json):
    """Evolve the lifecycle's plugins while the GRO loop trains the model (the main job)."""
    from rich.console import Console

    from .config import load_config
    from .registry import is_surface, load_registry

    overrides: dict = {"evolve": {}, "llm": {}}
    for key, value in {"iterations": iterations, "rounds": rounds, "workers": workers, "max_seconds": max_seconds,
                       "max_tokens": max_tokens, "max_usd": max_usd, "archive": archive_path, "out": out,
                       "executor": executor}.items():
        if value is not None:
            overrides["evolve"][key] = value
    if ray_address:
        overrides["evolve"]["ray"] = {"address": ray_address}
    if seed is not None:
        overrides["seed"] = seed
    if models:  # several, or one (SELFLOOP_LLM_MODEL may hold several, split at spaces or commas)
        overrides["llm"]["model"] = list(models)
    if api_base:
        overrides["llm"]["api_base"] = api_base
    config = load_config(config_path, overrides)
    if config.llm.model and not _names_proposer(config_path):
        config.proposer.name = "llm"  # an LLM is configured and the user named no proposer
    registry = load_registry(plugins_dirs)
    config.check_names(registry)

    console = Console(stderr=as_json)
    if not console.is_terminal:  # a log: tables at full width, never cropped to 80 columns
        console = Console(stderr=as_json, width=EVOLVE_LOG_WIDTH)
    archive = Path(config.evolve.archive)
    run_dir = Path(config.evolve.out) if config.evolve.out else archive.with_name(archive.name + ".run")
    if fresh and resume:
        raise click.UsageError("--fresh and --resume exclude each other")
    if resume and not (run_dir / "journal.jsonl").is_file():
        from .errors import ConfigError

        raise ConfigError(f"{archive}: nothing to resume (no run was started there); start one without --resume")
    if fresh:
        for moved in move_aside(archive, run_dir):
            console.print(f"moved {moved[0]} aside to {moved[1]}", soft_wrap=True)
    seed_dir = next((Path(d) for d in plugins_dirs if is_surface(d)), None)
    user_dirs = [Path(d) for d in plugins_dirs if not is_surface(d)]
    evolution = build_evolution(config, registry, archive, run_dir, console, seed_dir, user_dirs)
    try:
        with EvolveProgress(console, config) as progress:
            evolution.progress = progress
            evolution.executor.log = lambda message: progress("warning", {"message": message})
            results = evolution.run(resume=resume)
        report = final_report(evolution, results)
    finally:
        evolution.executor.close()
    if as_json:
        print_json(report)
    else:
        print_report(console, evolution, report)


def move_aside(*paths: Path) -> list[tuple[Path, Path]]:
    """Rename each existing path to ``PATH.old-YYYYmmdd-HHMMSS`` (nothing is deleted)."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for path in paths:
        if path.exists():
            target = path.with_name(f"{path.name}.old-{stamp}")
            path.rename(target)
            moved.append((path, target))
    return moved


def _names_proposer(config_path) -> bool:
    if not config_path:
        return False
    try:
        return "proposer" in tomllib.loads(Path(config_path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def build_evolution(config, registry, archive: Path, run_dir: Path, console, seed_dir: Path | None = None,
                    user_dirs: list[Path] = ()):
    from selfloop.sandbox import choose_backend

    from .evolve import Evolution
    from .executor import make_executor
    from .trainer import LifecycleTrainer

    proposer = registry.create("proposer", config.proposer.name, proposer_options(config))
    parent_selector = registry.create("parent_selector", config.parent_selector.name,
                                      config.parent_selector.options)
    log = lambda message: console.print(f"  [dim]{message}[/]" if console.is_terminal else f"{stamp()}   {message}",
                                        soft_wrap=not console.is_terminal, highlight=False)
    executor = make_executor(config, log=log)
    if config.evolve.executor == "ray":
        nodes = executor.describe()["nodes"]
        console.print(f"executor: [bold]ray[/] ({config.evolve.ray.address or 'a local cluster'}), "
                      f"{len(nodes)} node(s): " + ", ".join(f"{n['ip']} {n['backend']} {n['cpus']:g} CPU"
                                                           for n in nodes), soft_wrap=True)
        sandbox = None  # each node uses its own
    else:
        sandbox = choose_backend(config.sandbox)
    why = getattr(sandbox, "reason", None)
    console.print(f"sandbox: [bold]{sandbox.name if sandbox else 'per node'}[/]" + (f" ({why})" if why else "")
                  + f"; proposer: [bold]{config.proposer.name}[/]"
                  + (f" ({', '.join(config.llm.models)})" if config.proposer.name == "llm" else "")
                  + f"; parents: {config.parent_selector.name}; archive: {archive}", soft_wrap=True)
    return Evolution(config, archive_path=archive, out=run_dir, sandbox=sandbox, registry=registry,
                     trainer=lambda baked: LifecycleTrainer(baked, plugins_dirs=user_dirs, log=log),
                     proposer=proposer, parent_selector=parent_selector, seed_dir=seed_dir,
                     plugins_dirs=user_dirs, executor=executor)


def proposer_options(config) -> dict:
    """The proposer's options: the run config's, and for the llm proposer the ``[llm]`` settings
    (``model`` a list when several models are named)."""
    options = dict(config.proposer.options)
    if config.proposer.name == "llm":
        llm = config.llm
        for key, value in {"model": llm.model, "api_base": llm.api_base, "temperature": llm.temperature,
                           "max_tokens": llm.max_tokens, "timeout_s": llm.timeout_s}.items():
            options.setdefault(key, value)
    return options


class EvolveProgress:
    """Progress of a run: on a terminal, a bar for the iterations with the current stage beside it;
    off one (a log file, a pipe), a timestamped plain line per stage. Either way one line per
    archived variant."""

    def __init__(self, console, config):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console, self.live = console, console.is_terminal
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console,
                            disable=not self.live)
        self.task = self.bar.add_task("evolve", total=config.evolve.iterations, status="starting")
        self.done, self.total = 0, config.evolve.iterations

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def line(self, text: str) -> None:
        """One line of the run's story, whole (timestamped off a terminal, where nothing is redrawn)."""
        if self.live:
            self.console.print(text, overflow="ellipsis", no_wrap=True, crop=True)
        else:
            self.console.print(f"{stamp()} {text.strip()}", soft_wrap=True, highlight=False)

    def status(self, text: str) -> None:
        if self.live:
            self.bar.update(self.task, status=text)
        else:
            self.line(f"[{self.done}/{self.total}] {text}")

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.bar.advance(self.task, n)

    def __call__(self, event: str, data: dict) -> None:
        if event == "train":
            self.status(f"round {data['round']}: training with {data['champion']} plugins")
        elif event == "baseline":
            self.status(f"round {data['round']}: evaluating the {data['role']}")
        elif event == "skipped":
            self.line(f"  round {data['round']}: the seed plugins could not be scored on this checkpoint "
                      f"({data['reason'] or 'no reason given'}); its {data['iterations']} iterations are skipped")
            self.advance(data["iterations"])
        elif event == "validate":
            summary = data["summary"] if not self.live else textwrap.shorten(data["summary"], 60, placeholder=" …")
            self.status(f"iteration {data['iteration']}: validating {summary}")
        elif event == "variant":
            verdict = data["verdict"]
            score = verdict.scores.get("score")
            mark = "[green]admitted[/]" if verdict.admitted else "[red]rejected[/]"
            shown = f"{score:.3f}" if isinstance(score, float) else "-"
            judged = data.get("judged_by") or "answers"
            if judged == "both":
                probe = verdict.scores.get("probe")
                shown += f", probe {probe:.3f}" if isinstance(probe, float) else ", probe -"
            label = {"probe": "probe", "meta": "inherited"}.get(judged, "held-out")
            line = f"  {data['variant']:>5} {mark} {label} {shown}  {data['summary']}"
            notes = [r for r in verdict.reasons if r.startswith("note")]
            if not verdict.admitted and verdict.reasons:
                line += f"  [dim]({verdict.reasons[0]})[/]"
            elif notes:
                line += f"  [dim]({notes[0]})[/]"
            if "parent" in data:
                self.advance()
            self.line(line)
        elif event == "warning":
            self.line(f"  [yellow]warning:[/] {data['message']}")


def stamp() -> str:
    import time

    return time.strftime("%H:%M:%S")


def final_report(evolution, results) -> dict:
    """The champion's lineage and the seed against the champion, per round."""
    archive = evolution.archive
    last = results[-1] if results else None
    lineage = []
    if last is not None:
        for v in archive.lineage(last.champion):
            lineage.append({"id": v.id, "parent": v.parent, "proposer": v.meta.get("proposer"),
                            "round": v.meta.get("round"), "summary": v.meta.get("summary"),
                            "held_out": v.scores.get("score"), "visible": v.scores.get("full")})
    return {
        "archive": str(evolution.archive_path), "stopped": evolution.stopped,
        "rounds": [vars(r) for r in results], "champion": last.champion if last else None,
        "seed_score": last.seed_score if last else None,
        "champion_score": last.champion_score if last else None, "lineage": lineage,
        "confirmation": evolution.confirmation, "executor": evolution.placement(),
        "browse": f"selfloop archive serve --archive {evolution.archive_path}",
    }


def print_report(console, evolution, report: dict) -> None:
    from rich.table import Table

    rounds = Table("round", "checkpoint", "seed held-out", "champion", "champion held-out", "Δ",
                   title="Seed plugins against the champion, per training round")
    for r in report["rounds"]:
        delta = (r["champion_score"] - r["seed_score"]) if None not in (r["champion_score"], r["seed_score"]) else None
        rounds.add_row(str(r["round"]), Path(r["checkpoint"]).name, _fmt(r["seed_score"]), r["champion"],
                       _fmt(r["champion_score"]), _fmt(delta, signed=True))
    console.print(rounds)
    lineage = Table("variant", "parent", "round", "proposer", "held-out", "visible", "change",
                    title=f"Champion lineage ({report['champion']})")
    lineage.columns[-1].overflow = "fold"
    for row in report["lineage"]:
        lineage.add_row(row["id"], row["parent"] or "-", str(row["round"]), row["proposer"] or "-",
                        _fmt(row["held_out"]), _fmt(row["visible"]), row["summary"] or "")
    console.print(lineage)
    confirm = report.get("confirmation")
    if confirm:
        delta = (confirm["champion_score"] - confirm["seed_score"]
                 if None not in (confirm["champion_score"], confirm["seed_score"]) else None)
        console.print(f"On fresh held-out problems (round {confirm['round']}'s checkpoint): seed "
                      f"{_fmt(confirm['seed_score'])} ({confirm['seed_variant']}), champion {confirm['champion']} "
                      f"{_fmt(confirm['champion_score'])} ({confirm['champion_variant']}), Δ {_fmt(delta, signed=True)}",
                      soft_wrap=True)
        probe = confirm.get("probe")
        if probe:
            delta = (probe["champion_score"] - probe["seed_score"]
                     if None not in (probe["champion_score"], probe["seed_score"]) else None)
            console.print(f"The model one probe round trains from that checkpoint, on fresh problems: with the "
                          f"seed pipeline {_fmt(probe['seed_score'])} ({probe['seed_variant']}), with the "
                          f"champion's {_fmt(probe['champion_score'])} ({probe['champion_variant']}), "
                          f"Δ {_fmt(delta, signed=True)}", soft_wrap=True)
    for r in report["rounds"]:
        if r.get("no_signal"):
            console.print(f"[yellow]round {r['round']}: {r['no_signal']}[/]", soft_wrap=True)
    placed = report["executor"]
    if placed["executor"] != "local" or len(placed["evaluated_on"]) > 1:
        console.print(f"evaluated by the {placed['executor']} executor on: "
                      + ", ".join(f"{node} ×{n}" for node, n in placed["evaluated_on"].items())
                      + (f"; {placed['retried']} retried after a worker died" if placed.get("retried") else ""),
                      soft_wrap=True)
    if report["stopped"]:
        console.print(f"stopped: {report['stopped']}")
    console.print(f"browse the archive: [bold]{report['browse']}[/]", soft_wrap=True)


def _fmt(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"
