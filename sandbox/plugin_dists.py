"""The user's plugin distributions: installed packages that register selfloop plugins through an
entry point (group ``selfloop``), carried into the sandbox image beside selfloop itself.

A payload in the Docker sandbox imports plugins the way the host does, through entry points, so the
image must hold the same distributions: their modules (found where the host imports them from, so
editable installs work too) and a ``.dist-info`` with their entry points. Their digest is a label
of the image; an image that lacks one, or holds another version, is stale, and the error names
``selfloop sandbox build``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from selfloop.core.errors import SandboxError

ENTRY_POINT_GROUP = "selfloop"
LABEL = "selfloop.plugin-dists"  # image label: the digest of the distributions it carries


@dataclass(frozen=True)
class PluginDist:
    name: str
    version: str
    roots: tuple[Path, ...]  # the top-level packages or modules its entry points import
    entry_points: str  # its entry_points.txt
    info_dir: Path | None = None  # its .dist-info (or .egg-info) directory on this host

    def files(self) -> list[tuple[str, Path]]:
        """(path relative to site-packages, file) for every module file it brings."""
        out = []
        for root in self.roots:
            if root.is_file():
                out.append((root.name, root))
                continue
            for path in sorted(root.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    out.append(((Path(root.name) / path.relative_to(root)).as_posix(), path))
        return out


def plugin_distributions() -> list[PluginDist]:
    """Every installed distribution but selfloop that offers selfloop plugins, by name."""
    found: dict[str, PluginDist] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        if not name or name.lower() == "selfloop" or name in found:
            continue
        points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        if not points:
            continue
        roots = []
        for ep in points:
            top = ep.module.split(".")[0]
            spec = importlib.util.find_spec(top)
            if spec is None:
                raise SandboxError(f"plugin distribution {name}: its entry point {ep.name!r} names "
                                   f"module {ep.module!r}, which does not import here")
            if spec.submodule_search_locations:
                roots += [Path(p) for p in spec.submodule_search_locations]
            elif spec.origin:
                roots.append(Path(spec.origin))
        info = getattr(dist, "_path", None)
        found[name] = PluginDist(name, dist.version, tuple(dict.fromkeys(roots)),
                                 dist.read_text("entry_points.txt") or "", Path(info) if info else None)
    return [found[k] for k in sorted(found)]


def path_entries(dists: list[PluginDist] | None = None) -> list[str]:
    """The import-path directories the distributions live in (their modules' and metadata's): what
    a payload on this host's Python must be able to read, and find on its path, to load them."""
    entries: list[str] = []
    for dist in plugin_distributions() if dists is None else dists:
        for root in dist.roots:
            entries.append(str(root.parent.resolve()))
        if dist.info_dir is not None:
            entries.append(str(dist.info_dir.parent.resolve()))
    return list(dict.fromkeys(entries))


def digest(dists: list[PluginDist] | None = None) -> str:
    """A digest of the distributions' names, versions and module files."""
    h = hashlib.sha256()
    for dist in plugin_distributions() if dists is None else dists:
        h.update(f"{dist.name}=={dist.version}\n{dist.entry_points}".encode())
        for relative, path in dist.files():
            h.update(relative.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def describe(dists: list[PluginDist] | None = None) -> str:
    dists = plugin_distributions() if dists is None else dists
    return ", ".join(f"{d.name} {d.version}" for d in dists) or "none"


def copy_into(app: Path, dists: list[PluginDist] | None = None) -> None:
    """Copy the distributions' modules and metadata into ``app`` (a directory on the image's path)."""
    for dist in plugin_distributions() if dists is None else dists:
        for relative, path in dist.files():
            target = app / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        info = app / f"{dist.name.replace('-', '_')}-{dist.version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.name}\nVersion: {dist.version}\n")
        (info / "entry_points.txt").write_text(dist.entry_points)
