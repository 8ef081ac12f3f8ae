"""The `selfloop` command line. Subcommands of other packages are imported only when used."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys

import click

from .errors import SelfloopError

PLUGINS_DIR_ENV = "SELFLOOP_PLUGINS_DIR"
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# name -> "module:attribute"; a command whose module is not there is not offered.
LAZY_COMMANDS = {
    "run": "selfloop.core.run_cli:run",
    "evolve": "selfloop.core.evolve_cli:evolve",
    "archive": "selfloop.archive.cli:archive",
    "sandbox": "selfloop.sandbox.cli:sandbox",
}


class LazyGroup(click.Group):
    """Built-in subcommands import their module only when used; plugins' subcommands
    (``register_commands``) load the plugins only when listed (``--help``) or asked for by name."""

    _plugin_commands: dict[str, click.Command] | None = None

    def list_commands(self, ctx):
        lazy = [n for n, target in LAZY_COMMANDS.items() if _module_exists(target.split(":")[0])]
        own = set(super().list_commands(ctx)) | set(lazy)
        return sorted(own) + sorted(set(self.plugin_commands(quiet=True)) - own)

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and _module_exists(LAZY_COMMANDS[name].split(":")[0]):
            module, attr = LAZY_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name) or self.plugin_commands().get(name)

    def plugin_commands(self, *, quiet: bool = False) -> dict[str, click.Command]:
        """The subcommands plugins add (from the plugin directories of ``SELFLOOP_PLUGINS_DIR``);
        with ``quiet``, a plugin that fails to load is one line on stderr, not an error."""
        if self._plugin_commands is None:
            from .registry import load_registry

            dirs = [d for d in os.environ.get(PLUGINS_DIR_ENV, "").split(os.pathsep) if d]
            group = click.Group()
            try:
                load_registry(dirs).add_commands(group)
            except SelfloopError as exc:
                if not quiet:
                    raise
                click.echo(f"warning: plugin commands not loaded: {exc}", err=True)
            self._plugin_commands = group.commands
        return self._plugin_commands


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def plugins_dir_option(f):
    return click.option(
        "--plugins-dir", "plugins_dirs", multiple=True, type=click.Path(file_okay=False),
        envvar=PLUGINS_DIR_ENV, help="Also load the plugins in this directory (repeatable).",
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
@click.option("--options", "with_options", is_flag=True,
              help="List each component's options: type, default, and whether evolve may tune it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(plugins_dirs, with_options, as_json):
    """List every registered component: kind, name, source (builtin, entrypoint, directory), plugin
    and description; with --options, every option of each instead."""
    from .registry import load_registry

    registry = load_registry(plugins_dirs)
    if with_options:
        print_options(registry.all(), as_json)
        return
    rows = [reg.to_dict() for reg in registry.all()]
    if as_json:
        print_json(rows)
        return
    columns = ("kind", "name", "source", "plugin")
    cells = [[r[c].removeprefix("selfloop.plugins.") for c in columns] for r in rows]
    print_table(columns, cells, [r["description"] for r in rows])


def print_options(registrations, as_json: bool) -> None:
    """kind, name, option, type, default, tunable (its bounds), one row per option."""
    from .registry import REQUIRED

    if as_json:
        print_json([{"kind": reg.kind, "name": reg.name,
                     "options": None if (o := reg.options()) is None else [x.to_dict() for x in o]}
                    for reg in registrations])
        return
    cells = []
    for reg in registrations:
        options = reg.options()
        if options is None:
            cells.append([reg.kind, reg.name, "(takes **options, declares no OPTIONS model)", "", "", ""])
        for o in options or []:
            default = "(required)" if o.default is REQUIRED else repr(o.default)
            cells.append([reg.kind, reg.name, o.name, o.type, default, _bounds(o.tunable)])
    print_table(("kind", "name", "option", "type", "default", "tunable"), cells)


def _bounds(t) -> str:
    if t is None:
        return ""
    if t.choices is not None:
        return "yes: " + " | ".join(map(repr, t.choices))
    return f"yes: [{'' if t.low is None else t.low}, {'' if t.high is None else t.high}]"


def print_table(columns, cells, last: list[str] | None = None) -> None:
    """Left-aligned columns two spaces apart; ``last`` (descriptions) cut to the terminal's width."""
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    room = max(shutil.get_terminal_size((120, 24)).columns - sum(widths) - 2 * len(widths), 20)
    click.echo(("  ".join(c.ljust(w) for c, w in zip(columns, widths)) + ("  description" if last else "")).rstrip())
    for k, row in enumerate(cells):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths))
        if last:
            text = last[k] if len(last[k]) <= room else last[k][: room - 1] + "…"
            line += "  " + text
        click.echo(line.rstrip())


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
