"""Hashes of the files a candidate must not be able to change: the core, the sandbox, and any
held-out files the caller names.

A manifest maps a key to a sha256 hex digest. Package files are keyed ``<package>/<relative path>``
(``selfloop.core/config.py``), so the same manifest describes the host's copy and the image's copy
wherever each is installed; extra files are keyed by their absolute path as the checker sees them.
Bytecode caches are skipped: they are derived, and the sandbox never writes them.

This module is imported by the in-sandbox runner, so it uses the standard library only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PROTECTED_PACKAGES = ("selfloop.core", "selfloop.sandbox")
SELFLOOP_PACKAGES = ("core", "plugins", "archive", "sandbox")  # all of selfloop, as selfloop.<name>
SKIPPED_DIRS = {"__pycache__"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")


def package_dir(package: str) -> Path:
    """The directory an installed package's files live in (editable installs included)."""
    import importlib.util  # here, not at the top: the sandbox runner never needs it

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"package {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def package_files(package: str, root: Path | None = None) -> dict[str, Path]:
    """Every file of a package (found by import, or at ``root``): manifest key -> path."""
    root = package_dir(package) if root is None else Path(root)
    if not root.is_dir():
        raise LookupError(f"package {package} is not installed at {root}")
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in filenames:
            if name.endswith(SKIPPED_SUFFIXES):
                continue
            path = Path(dirpath, name)
            files[f"{package}/{path.relative_to(root).as_posix()}"] = path
    return files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def protected_manifest(extra: list[Path] | tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 of every file of the protected packages, plus the ``extra`` files (absolute keys)."""
    manifest = {}
    for package in PROTECTED_PACKAGES:
        for key, path in package_files(package).items():
            manifest[key] = sha256_file(path)
    for path in extra:
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"protected file {path} does not exist")
        manifest[str(path)] = sha256_file(path)
    return manifest


def verify_manifest(manifest: dict[str, str], package_dirs: dict[str, str] | None = None) -> list[str]:
    """Problems found, one line each (empty when every protected file matches).

    ``package_dirs`` says where each package is installed (the sandbox runner is started without
    site-packages, for speed, and is told); without it packages are found by import.

    Besides changed and missing files, a file added to a protected package is a problem too: a
    candidate could otherwise drop a module next to the evaluator.
    """
    problems: list[str] = []
    packages = sorted({key.split("/", 1)[0] for key in manifest if not key.startswith("/")})
    present: dict[str, Path] = {}
    for package in packages:
        try:
            present.update(package_files(package, (package_dirs or {}).get(package)))
        except LookupError as exc:
            problems.append(str(exc))
    for key, expected in sorted(manifest.items()):
        path = Path(key) if key.startswith("/") else present.get(key)
        if path is None or not path.is_file():
            problems.append(f"{key} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{key} differs")
    problems += [f"{key} is not in the manifest" for key in sorted(set(present) - set(manifest))]
    return problems
