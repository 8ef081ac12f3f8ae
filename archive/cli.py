"""`selfloop archive ...`: create, inspect, diff, export and serve a variant archive."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from selfloop.core.errors import ArchiveError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
ARCHIVE_ENV = "SELFLOOP_ARCHIVE"


def archive_option(f):
    return click.option(
        "--archive", "archive_path", type=click.Path(file_okay=False), envvar=ARCHIVE_ENV,
        help=f"The archive (a bare git repository). Default: ${ARCHIVE_ENV}, then the run "
             "config's [evolve] archive (runs/archive).",
    )(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(f)


def resolve_path(archive_path: str | None) -> Path:
    if archive_path:
        return Path(archive_path)
    from selfloop.core.config import (
        load_config,  # only when no path was given: pydantic is slow
    )

    return Path(load_config(os.environ.get("SELFLOOP_CONFIG") or None).evolve.archive)


def open_archive(archive_path: str | None):
    from .archive import Archive

    return Archive(resolve_path(archive_path), progress=_RebuildProgress())


class _RebuildProgress:
    """A rich progress bar on stderr, shown only if the index has to be rebuilt from git."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("rebuilding the archive index from git", total=total)
        self.bar.update(self.task, completed=done)
        if done + 200 >= total:
            self.bar.stop()


def parse_json_option(text: str | None, option: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArchiveError(f"{option}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ArchiveError(f"{option}: expected a JSON object, got {type(value).__name__}")
    return value


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def when(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


@click.group("archive", context_settings=CONTEXT)
def archive():
    """The variant archive: every variant of the plugins a git commit."""


@archive.command("init", short_help='Create an archive seeded with a plugin directory.')
@archive_option
@click.option("--from", "from_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The plugin directory to seed the archive with (e.g. plugins/).")
@click.option("--scores", help='The seed\'s scores as JSON, e.g. \'{"score": 0.4}\'.')
@json_option
def init_command(archive_path, from_dir, scores, as_json):
    """Create an archive whose first variant (v0) is the plugin tree in --from."""
    from .archive import Archive

    path = resolve_path(archive_path)
    created = Archive.init(path, from_dir, meta={"scores": parse_json_option(scores, "--scores")})
    seed = created.get("v0")
    if as_json:
        print_json(seed.to_dict(full=False))
    else:
        click.echo(f"created archive {path} with seed {seed.id} ({seed.commit[:10]})")


@archive.command("add", short_help='Add a hand-written variant.')
@archive_option
@click.option("--parent", required=True, help="The parent variant's id.")
@click.option("--from", "from_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="The full plugin tree of the new variant.")
@click.option("--scores", help="Scores as JSON (metric -> number).")
@click.option("--meta", help="More metadata as JSON (merged; --scores wins).")
@click.option("--summary", help="One line on what changed.")
@click.option("--proposer", default="human", show_default=True, help="Who made this variant.")
@click.option("--rejected", is_flag=True, help="Record it as rejected (kept apart from parents).")
@json_option
def add_command(archive_path, parent, from_dir, scores, meta, summary, proposer, rejected, as_json):
    """Add a hand-written variant (e.g. a person's own fix) as a child of --parent."""
    data = {"proposer": proposer, **parse_json_option(meta, "--meta")}
    if scores:
        data["scores"] = parse_json_option(scores, "--scores")
    if summary:
        data["summary"] = summary
    with open_archive(archive_path) as store:
        vid = store.add(parent=parent, files=Path(from_dir), meta=data,
                        status="rejected" if rejected else "admitted")
        variant = store.get(vid)
    if as_json:
        print_json(variant.to_dict(full=False))
    else:
        click.echo(f"added {vid} (parent {parent}, {variant.status}, commit {variant.commit[:10]})")


@archive.command("list", short_help='List variants with their scores.')
@archive_option
@click.option("--sort", "sort_metric", metavar="METRIC", help="Best first by this metric.")
@click.option("--status", type=click.Choice(["admitted", "rejected"]), help="Only these.")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="At most this many rows (0: all).")
@json_option
def list_command(archive_path, sort_metric, status, limit, as_json):
    """List variants: id, parent, status, scores (oldest first, or best first with --sort).

    --json also gives each variant's operator, changed_kinds and judged_by (null where its record
    has none) and its clade: itself and all its descendants, {successes, failures, members, rate}.
    """
    with open_archive(archive_path) as store:
        total = len(store)
        if as_json:
            # one line per variant, built by SQLite (the clades, computed once, spliced in): 10,000
            # of them stay fast to write and read back
            click.echo("[\n" + ",\n".join(store.list_json(status, sort=sort_metric, limit=limit or None)) + "\n]")
            return
        metrics = store.metrics()
        shown = sorted(metrics, key=lambda m: (m != (sort_metric or "score"), m))[:6]
        rows = store.list_table(shown, status, sort=sort_metric, limit=limit or None)
    click.echo(text_table(["id", "parent", "status", "proposer", *shown, "created (UTC)"], rows))
    if len(rows) < total and not status:
        click.echo(f"{len(rows)} of {total} variants shown", err=True)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Plain aligned columns: instant for 10,000 rows, and friendly to grep and cut."""
    widths = [max(map(len, column)) for column in zip(header, *rows)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(line.format(*row).rstrip() for row in [header, *rows])


@archive.command("show", short_help="Show one variant's record.")
@archive_option
@click.argument("variant")
@json_option
def show_command(archive_path, variant, as_json):
    """Show one variant: lineage, scores, decision, proposer calls, sandbox summary."""
    with open_archive(archive_path) as store:
        v = store.get(variant)
        children = [c.id for c in store.children(variant)]
        lineage = [a.id for a in store.lineage(variant)]
        data = v.to_dict() | {"children": children, "lineage": lineage}
    if as_json:
        print_json(data)
        return
    meta = data["meta"]
    click.echo(f"{v.id}  {v.status}  commit {v.commit}")
    click.echo(f"lineage:  {' -> '.join(lineage)}")
    click.echo(f"children: {', '.join(children) or 'none'}")
    click.echo(f"created:  {when(v.created)} UTC")
    for key in ("proposer", "model", "summary", "decision", "seconds"):
        if meta.get(key) not in (None, ""):
            click.echo(f"{key + ':':<10}{meta[key]}")
    if meta.get("reasons"):
        reasons = meta["reasons"] if isinstance(meta["reasons"], list) else [meta["reasons"]]
        click.echo("reasons:")
        for reason in reasons:
            click.echo(f"  - {reason}")
    if v.scores:
        click.echo("scores:")
        width = max(map(len, v.scores)) + 2  # a long name never runs into its value
        for metric, value in v.scores.items():
            click.echo(f"  {metric:<{width}}{fmt(value)}")
    calls = meta.get("calls") or []
    if calls:
        tokens = sum((c.get("prompt_tokens") or 0) + (c.get("completion_tokens") or 0) for c in calls)
        costs = [c.get("cost_usd") for c in calls]
        cost = "unknown" if any(c is None for c in costs) else f"${sum(costs):.4f}"
        click.echo(f"calls:    {len(calls)} ({tokens} tokens, cost {cost}); --json shows prompts")
    if meta.get("sandbox"):
        click.echo("sandbox:")
        sandbox = meta["sandbox"]
        text = sandbox if isinstance(sandbox, str) else json.dumps(sandbox, indent=2)
        click.echo("  " + text.replace("\n", "\n  "))


@archive.command("diff", short_help='Diff a variant against its parent or another.')
@archive_option
@click.argument("variant")
@click.argument("other", required=False)
@click.option("--color/--no-color", default=None, help="Colour the diff (default: on a terminal).")
def diff_command(archive_path, variant, other, color):
    """Unified diff of VARIANT against its parent, or from VARIANT to OTHER."""
    with open_archive(archive_path) as store:
        text = store.diff(variant, other)
    if color is None:
        color = sys.stdout.isatty()
    for line in text.splitlines():
        if color:
            style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1])
            bold = line.startswith(("diff --git", "+++", "---"))
            line = click.style(line, fg=None if bold else style, bold=bold)
        click.echo(line)


@archive.command("tree", short_help='Print the lineage tree.')
@archive_option
@json_option
def tree_command(archive_path, as_json):
    """The lineage tree (rejected variants marked x)."""
    with open_archive(archive_path) as store:
        variants = store.list()
        main = store.main_metric
    children: dict[str | None, list] = {}
    for v in variants:
        children.setdefault(v.parent, []).append(v)
    if as_json:
        print_json([{"id": v.id, "parent": v.parent, "status": v.status, "scores": v.scores,
                     "children": [c.id for c in children.get(v.id, [])]} for v in variants])
        return
    # iterative depth-first walk: lineages can be thousands deep
    stack = [(root, "", "", True) for root in reversed(children.get(None, []))]
    while stack:
        v, prefix, branch, _ = stack.pop()
        mark = "" if v.admitted else "  x rejected"
        click.echo(f"{prefix}{branch}{v.id}  {main}={fmt(v.scores.get(main))}{mark}")
        kids = children.get(v.id, [])
        child_prefix = prefix + ("" if not branch else ("    " if branch.startswith("└") else "│   "))
        for i, kid in reversed(list(enumerate(kids))):
            stack.append((kid, child_prefix, "└── " if i == len(kids) - 1 else "├── ", True))


@archive.command("export", short_help='Write a variant as an installable plugin package.')
@archive_option
@click.argument("variant")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", help="Python package name (default selfloop_variant_<id>).")
def export_command(archive_path, variant, directory, name):
    """Write VARIANT as an installable plugin package into DIRECTORY (`pip install DIRECTORY`)."""
    from .export import export_package

    with open_archive(archive_path) as store:
        out = export_package(store, variant, directory, name=name)
    click.echo(f"exported {variant} to {out}; install it with: pip install {out}")


@archive.command("materialize", short_help="Write a variant's plugin tree into a directory.")
@archive_option
@click.argument("variant")
@click.argument("directory", type=click.Path(file_okay=False))
def materialize_command(archive_path, variant, directory):
    """Write VARIANT's plugin tree into DIRECTORY, for `--plugins-dir DIRECTORY`."""
    with open_archive(archive_path) as store:
        out = store.materialize(variant, directory)
    click.echo(f"wrote {variant} to {out}; use it with --plugins-dir {out}")


@archive.command("reindex", short_help='Rebuild the SQLite index from git.')
@archive_option
def reindex_command(archive_path):
    """Rebuild the SQLite index from git (it is also rebuilt on its own when missing or stale)."""
    with open_archive(archive_path) as store:
        count = store.reindex()
    click.echo(f"indexed {count} variants")


@archive.command("gc", short_help='Pack objects and refs (git gc).')
@archive_option
def gc_command(archive_path):
    """Pack the archive's objects and refs (git gc): single adds leave loose files behind."""
    with open_archive(archive_path) as store:
        store.gc()
        count = len(store)
    click.echo(f"packed {store.path} ({count} variants)")


@archive.command("serve", short_help='Browse the archive in a web browser.')
@archive_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 picks a free one).")
def serve_command(archive_path, host, port):
    """Browse the archive in a web browser: lineage tree, scores, diffs, prompts, logs."""
    from .server import serve

    path = resolve_path(archive_path)
    open_archive(str(path)).close()  # a missing archive is reported before the server starts
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}: anyone who can reach it can read the archive", err=True)
    serve(path, host, port, ready=lambda url: click.echo(f"serving {path} at {url} (Ctrl-C stops)"))
