"""The `selfloop` command line. Subcommands of other packages are imported only when used."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import sys

import click

from .errors import SelfloopError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# name -> "module:attribute"; a command whose module is not there is not offered.
LAZY_COMMANDS = {
    "run": "selfloop.core.run_cli:run",
    "evolve": "selfloop.core.evolve_cli:evolve",
    "archive": "selfloop.archive.cli:archive",
    "sandbox": "selfloop.sandbox.cli:sandbox",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        lazy = [n for n, target in LAZY_COMMANDS.items() if _module_exists(target.split(":")[0])]
        return sorted(set(super().list_commands(ctx)) | set(lazy))

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and _module_exists(LAZY_COMMANDS[name].split(":")[0]):
            module, attr = LAZY_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def plugins_dir_option(f):
    return click.option(
        "--plugins-dir", "plugins_dirs", multiple=True, type=click.Path(file_okay=False),
        envvar="SELFLOOP_PLUGINS_DIR", help="Also load the plugins in this directory (repeatable).",
    )(f)


def config_option(f):
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), envvar="SELFLOOP_CONFIG",
        help="Run config (TOML), merged over the built-in default.",
    )(f)


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(None, "--version", package_name="selfloop", prog_name="selfloop")
def cli():
    """selfloop: the self-improvement lifecycle for language models, and a meta-agent that
    evolves its plugins."""


@cli.command("plugins")
@plugins_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(plugins_dirs, as_json):
    """List every registered component: kind, name, source (builtin, entrypoint, directory), plugin
    and description."""
    from .registry import load_registry

    registry = load_registry(plugins_dirs)
    rows = [reg.to_dict() for reg in registry.all()]
    if as_json:
        print_json(rows)
        return
    columns = ("kind", "name", "source", "plugin")
    cells = [[r[c].removeprefix("selfloop.plugins.") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    room = max(shutil.get_terminal_size((120, 24)).columns - sum(widths) - 2 * len(widths), 20)
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths)) + "  description")
    for row, reg in zip(cells, rows):
        text = reg["description"]
        text = text if len(text) <= room else text[: room - 1] + "…"
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + text)


@cli.group("config", context_settings=CONTEXT)
def config_group():
    """Inspect run configs."""


@config_group.command("show")
@config_option
@plugins_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config_show(config_path, plugins_dirs, as_json):
    """Show the effective config (the default merged with --config), checked against the plugins."""
    from .config import load_config, to_toml
    from .registry import load_registry

    config = load_config(config_path)
    config.check_names(load_registry(plugins_dirs))
    data = config.model_dump(mode="json")
    if as_json:
        print_json(data)
    else:
        click.echo(to_toml(data))


def main(argv=None) -> None:
    """Entry point: user errors become one line on stderr and exit status 1."""
    try:
        cli.main(args=argv, prog_name="selfloop", standalone_mode=False)
    except SelfloopError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
