"""`selfloop sandbox ...`: which backends work here, build the image, remove leftovers."""

from __future__ import annotations

import json

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _settings(config_path):
    from selfloop.core.config import load_config

    return load_config(config_path).sandbox


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                             envvar="SELFLOOP_CONFIG", help="Run config (TOML); its [sandbox] section is used.")


@click.group("sandbox", context_settings=CONTEXT)
def sandbox():
    """Docker and process sandboxes for candidate code."""


@sandbox.command("check")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check(config_path, as_json):
    """Say which backends are usable here, and why not."""
    from rich.console import Console
    from rich.table import Table

    from . import backend_availability

    settings = _settings(config_path)
    rows = [{"backend": name, "available": ok, "reason": why}
            for name, (ok, why) in backend_availability(settings).items()]
    chosen = next((r["backend"] for r in rows if r["available"] and settings.backend in ("auto", r["backend"])), None)
    if as_json:
        click.echo(json.dumps({"backends": rows, "selected": chosen, "setting": settings.backend}, indent=2))
        return
    table = Table("backend", "available", "reason")
    for row in rows:
        table.add_row(row["backend"], "yes" if row["available"] else "no", row["reason"])
    console = Console()
    console.print(table)
    console.print(f"backend = {settings.backend!r} -> {chosen or 'none usable'}")


@sandbox.command("build")
@config_option
@click.option("--rebuild-base", is_flag=True, help="Run debootstrap again even if the base image exists.")
@click.option("--no-cache", is_flag=True, help="Run every Dockerfile step again.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON.")
def build(config_path, rebuild_base, no_cache, as_json):
    """Build the sandbox image offline: debootstrap base, host wheelhouse, Dockerfile."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from .image import build_image

    settings = _settings(config_path)
    console = Console(stderr=as_json)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        report = build_image(settings, progress=progress, rebuild_base=rebuild_base, no_cache=no_cache)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for step, seconds, note in report.steps:
        console.print(f"{step:14} {seconds:7.1f} s  {note}")
    console.print(f"{report.image}: {report.size_bytes / 1e9:.2f} GB; base {report.base}: "
                  f"{report.base_size_bytes / 1e6:.0f} MB", soft_wrap=True)


@sandbox.command("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sweep(as_json):
    """Remove sandbox containers and cgroups that a crashed run left behind."""
    from selfloop.core.errors import SandboxError

    from . import confine

    containers = None
    try:
        from .docker_backend import sweep_containers
        from .engine import docker_client

        containers = sweep_containers(docker_client())
    except SandboxError:
        pass  # no engine: no containers to remove
    cgroups = confine.sweep_cgroups()
    if as_json:
        click.echo(json.dumps({"containers": containers, "cgroups": cgroups}))
    else:
        where = f"{containers} containers and " if containers is not None else "(no Docker engine) "
        click.echo(f"removed {where}{cgroups} cgroups")


@sandbox.command("run", context_settings={**CONTEXT, "ignore_unknown_options": True})
@config_option
@click.option("--backend", type=click.Choice(["auto", "docker", "process"]), help="Override the config's backend.")
@click.option("--code", "code_dir", type=click.Path(file_okay=False, exists=True), default=".",
              show_default=True, help="Directory mounted read-only as $SELFLOOP_CODE.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=PATH",
              help="Extra read-only input, as $SELFLOOP_INPUT_<NAME> (repeatable).")
@click.option("--timeout", "timeout_s", type=float, help="Wall-clock limit in seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(config_path, backend, code_dir, inputs, timeout_s, as_json, command):
    """Run COMMAND in a sandbox and show its result (put `--` before the command)."""
    from pathlib import Path

    from selfloop.core.errors import SandboxError

    from . import choose_backend

    settings = _settings(config_path)
    if backend:
        settings = settings.model_copy(update={"backend": backend})
    named = {}
    for item in inputs:
        name, sep, path = item.partition("=")
        if not sep:
            raise SandboxError(f"--input {item!r}: expected NAME=PATH")
        named[name] = Path(path)
    result = choose_backend(settings).run(list(command), code_dir=Path(code_dir), inputs=named,
                                          timeout_s=timeout_s)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.stdout, nl=False)
        click.echo(result.stderr, nl=False, err=True)
        reason = f" ({result.reason})" if result.reason else ""
        click.echo(f"[{result.backend}] {result.status}, exit code {result.exit_code}, "
                   f"{result.seconds:.2f} s{reason}", err=True)
        if result.result is not None:
            click.echo(json.dumps(result.result))
    if result.status != "ok":
        raise SystemExit(1)
