"""Files that travel to another machine: a directory or a file packed into bytes, unpacked once per
node into a cache keyed by its content.

A Ray worker on another node cannot read the driver's checkpoint, the user's plugin directories or
a dataset an option names. The driver packs each once (``Parcel.of(path)``) and puts it in Ray's
object store; a worker calls ``parcel.open()``, which unpacks it under ``node_cache()`` the first
time its node sees that content and reuses it afterwards. Nothing here imports Ray.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


def node_cache() -> Path:
    """Where this node keeps unpacked parcels (``$SELFLOOP_NODE_CACHE``, else the user's cache)."""
    root = os.environ.get("SELFLOOP_NODE_CACHE") or Path.home() / ".cache" / "selfloop" / "parcels"
    return Path(root)


@dataclass(frozen=True)
class Parcel:
    """A packed directory or file: its name, the sha256 of its bytes, the bytes (a gzipped tar)."""

    name: str
    sha256: str
    data: bytes

    @classmethod
    def of(cls, path: str | Path) -> Parcel:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: nothing to ship")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
            # Sorted and with fixed metadata: the same content packs to the same bytes (one cache entry).
            for item in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
                if "__pycache__" in item.parts or item.is_symlink():
                    continue
                info = tar.gettarinfo(str(item), arcname=str(Path(path.name) / item.relative_to(path))
                                      if path.is_dir() else path.name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if item.is_file():
                    with open(item, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
        data = buffer.getvalue()
        return cls(path.name, hashlib.sha256(data).hexdigest(), data)

    def open(self, cache: Path | None = None) -> Path:
        """The unpacked path on this node (unpacked on first use; concurrent workers are safe)."""
        cache = Path(cache or node_cache())
        home = cache / self.sha256[:32]
        target = home / self.name
        if (home / ".complete").exists():
            return target
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
        try:
            _extract(self.data, staging)
            (staging / ".complete").write_text(self.sha256)
            try:
                staging.rename(home)  # atomic: another worker may have won the race, which is fine
            except OSError:
                if not (home / ".complete").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def unpack_to(data: bytes, destination: Path) -> Path:
    """Unpack a parcel's bytes (e.g. a trained model sent back) into ``destination``, replacing it."""
    destination = Path(destination)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=destination.parent) as tmp:
        (top,) = _extract(data, Path(tmp))
        if destination.exists():
            shutil.rmtree(destination)
        Path(tmp, top).rename(destination)
    return destination


def _extract(data: bytes, directory: Path) -> set[str]:
    """Unpack a parcel's bytes into ``directory``; returns the top-level names it held."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(directory, filter="data")
        return {Path(m.name).parts[0] for m in tar.getmembers()}
