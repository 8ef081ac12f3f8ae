"""Export a variant as an installable plugin distribution, usable outside the archive.

`pip install DIR` installs the variant's tree as the package ``selfloop_variant_<id>`` with one
``selfloop`` entry point per plugin module (a module that defines a ``register_*`` hook), so the
evolved plugins load like any third-party plugin (``SELFLOOP_LOAD_PLUGINS=selfloop-variant-v12``).
It depends on the selfloop version that exported it: the plugins import its core.
The package is also a plain plugins directory: ``--plugins-dir`` accepts its folder.

    from selfloop.archive.export import export_package

    export_package(archive, "v12", "dist/v12")
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
from pathlib import Path

from selfloop.core.errors import ArchiveError

from .archive import Archive

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.0.{seq}"
description = {description}
readme = "README.md"
requires-python = ">=3.11"
# The plugins import selfloop's core: the version they were exported with.
dependencies = ["selfloop=={selfloop_version}"]

[project.entry-points.selfloop]
{entry_points}

[tool.setuptools.packages.find]
include = ["{package}", "{package}.*"]

[tool.setuptools.package-data]
"*" = ["*"]
"""

README = """\
# {dist}

Variant {id} of selfloop's plugins, exported from the archive at {archive} with
selfloop {selfloop_version}, which it depends on. Install it where that selfloop is installed
(pip then has nothing to fetch):

    pip install .
    SELFLOOP_LOAD_PLUGINS={dist} selfloop plugins

Parent: {parent}. Scores: {scores}. The full record (proposer, prompts, decision) is in
`{package}/variant.json`.
"""


def export_package(archive: Archive, variant: str, directory: str | os.PathLike, *,
                   name: str | None = None) -> Path:
    """Write an installable plugin distribution of ``variant`` into ``directory`` (absent or empty)."""
    directory = Path(directory)
    record = archive.get(variant)
    package = name or f"selfloop_variant_{record.id}"
    if not package.isidentifier():
        raise ArchiveError(f"{package!r}: a package name must be a Python identifier")
    dist = package.replace("_", "-")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ArchiveError(f"{directory}: exists and is not an empty directory")
    files = archive.file_bytes(variant)
    if "__init__.py" not in files:
        files["__init__.py"] = b'"""Plugins exported from a selfloop archive."""\n'
    archive.materialize(variant, directory / package)
    (directory / package / "__init__.py").write_bytes(files["__init__.py"])
    for rel in files:  # every folder a regular package, so setuptools and pkgutil both find it
        for parent in Path(rel).parents:
            init = directory / package / parent / "__init__.py"
            if parent != Path(".") and not init.exists():
                init.write_text("")
    (directory / package / "variant.json").write_text(
        json.dumps(record.to_dict(), indent=1, ensure_ascii=False) + "\n"
    )
    modules = plugin_modules(files)
    if not modules:
        raise ArchiveError(f"variant {variant} has no plugin module (no register_* hook) to export")
    dotted = [f"{package}.{m}" if m else package for m in modules]
    entry_points = "\n".join(f'"{m}" = "{m}"' for m in dotted)
    version = importlib.metadata.version("selfloop")
    (directory / "pyproject.toml").write_text(PYPROJECT.format(
        dist=dist, seq=record.seq, package=package, entry_points=entry_points, selfloop_version=version,
        description=json.dumps(f"selfloop plugins: archived variant {record.id}"),
    ))
    (directory / "README.md").write_text(README.format(
        dist=dist, id=record.id, archive=archive.path, parent=record.parent or "none", selfloop_version=version,
        scores=json.dumps(record.scores), package=package,
    ))
    return directory


def plugin_modules(files: dict[str, bytes]) -> list[str]:
    """Dotted names of the modules that define a top-level ``register_*`` function."""
    modules = []
    for rel, data in sorted(files.items()):
        if not rel.endswith(".py"):
            continue
        try:
            tree = ast.parse(data)
        except SyntaxError as exc:
            raise ArchiveError(f"{rel}:{exc.lineno}: syntax error, cannot export: {exc.msg}") from None
        if any(isinstance(node, ast.FunctionDef) and node.name.startswith("register_") for node in tree.body):
            dotted = rel[:-3].replace("/", ".")
            modules.append(dotted.removesuffix("__init__").rstrip("."))  # a package: its own name
    return modules
