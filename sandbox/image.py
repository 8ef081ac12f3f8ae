"""Builds the sandbox image where no container registry is reachable.

Three layers of work, each redone only when its input changed:

1. base: Debian bookworm with python3, made by debootstrap from the Debian mirror and
   `docker import`ed as ``selfloop-sandbox-base:<suite>-<hash of the package list>``;
2. wheelhouse: selfloop's runtime dependencies, pinned to the versions installed on the host,
   as wheels in the cache directory (``pip wheel`` through the host's configured indexes and
   find-links); only missing wheels are fetched;
3. image: ``sandbox/Dockerfile`` over the base, installing the wheelhouse with ``pip --no-index``
   (served on the host's loopback during the build, so no layer keeps the wheels) and copying the
   host's selfloop packages; Docker's layer cache skips unchanged steps, and an image whose inputs
   are all unchanged is not rebuilt at all.

The image's Python is bookworm's python3 (3.11), so the host must run Python 3.11 too: wheels are
built for the host's interpreter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path

from selfloop.core.config import SandboxSettings
from selfloop.core.errors import SandboxError

from . import plugin_dists
from .engine import docker_client
from .integrity import SELFLOOP_PACKAGES, package_dir, package_files, protected_manifest

SUITE = "bookworm"
MIRROR = os.environ.get("SELFLOOP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv")
BASE_REPOSITORY = "selfloop-sandbox-base"
IMAGE_PYTHON = (3, 11)
IMAGE_GLIBC = (2, 36)
TRIMMED = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
           "var/cache/apt/archives", "var/lib/apt/lists")
MANIFEST_LABEL = "selfloop.manifest"  # digest of the protected files' manifest
BUILD_KEY_LABEL = "selfloop.build-key"  # digest of everything the image is built from
WHEELHOUSE_PORTS = (47813, 47814, 47815, 47816)


@dataclass
class BuildReport:
    image: str
    base: str
    steps: list[tuple[str, float, str]] = field(default_factory=list)  # (step, seconds, what happened)
    size_bytes: int = 0
    base_size_bytes: int = 0

    def to_dict(self) -> dict:
        return {"image": self.image, "base": self.base, "size_bytes": self.size_bytes,
                "base_size_bytes": self.base_size_bytes,
                "steps": [{"step": s, "seconds": round(t, 2), "note": n} for s, t, n in self.steps]}


def cache_dir() -> Path:
    root = os.environ.get("SELFLOOP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "selfloop"
    path = Path(root) / "sandbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_tag() -> str:
    digest = hashlib.sha256(json.dumps([SUITE, BASE_PACKAGES, TRIMMED]).encode()).hexdigest()[:12]
    return f"{BASE_REPOSITORY}:{SUITE}-{digest}"


def manifest_digest(manifest: dict[str, str] | None = None) -> str:
    manifest = protected_manifest() if manifest is None else manifest
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def build_image(settings: SandboxSettings, *, progress=None, rebuild_base: bool = False,
                no_cache: bool = False) -> BuildReport:
    """Build (or bring up to date) ``settings.image``; ``progress`` is a rich Progress or None.
    ``no_cache`` runs every Dockerfile step again (the base and the wheelhouse stay cached)."""
    if sys.version_info[:2] != IMAGE_PYTHON:
        raise SandboxError(f"building the sandbox image needs Python {'.'.join(map(str, IMAGE_PYTHON))} "
                           f"on the host (the image's python3), not {sys.version.split()[0]}")
    client = docker_client()
    report = BuildReport(image=settings.image, base=base_tag())
    with _build_lock(progress):
        _build_all(client, settings, report, progress, rebuild_base, no_cache)
    report.size_bytes = client.images.get(settings.image).attrs["Size"]
    report.base_size_bytes = client.images.get(report.base).attrs["Size"]
    return report


@contextlib.contextmanager
def _build_lock(progress):
    """One build at a time on this machine: a second waits, then usually finds nothing to do."""
    import fcntl

    with open(cache_dir() / "build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            task = progress.add_task("waiting for another `selfloop sandbox build`", total=None) if progress else None
            fcntl.flock(lock, fcntl.LOCK_EX)
            if task is not None:
                progress.update(task, total=1, completed=1)
        yield


def _build_all(client, settings: SandboxSettings, report: BuildReport, progress, rebuild_base: bool,
               no_cache: bool) -> None:
    step = _Steps(report, progress)

    with step("base image") as note:
        if rebuild_base or not _image_exists(client, report.base):
            old_base = client.images.get(report.base).id if _image_exists(client, report.base) else None
            _build_base(client, report.base, progress)
            if old_base and old_base != client.images.get(report.base).id:
                _remove_image(client, old_base)
            note("debootstrap + import")
        else:
            note("cached")
    with step("wheelhouse") as note:
        note(_fill_wheelhouse(progress))
    with step("docker build") as note:
        note(_docker_build(client, settings.image, report.base, progress, no_cache))


class _Steps:
    """Times each step and shows it as a line of the progress display."""

    def __init__(self, report: BuildReport, progress):
        self.report, self.progress = report, progress

    def __call__(self, name: str):
        steps = self

        class _Step:
            def __enter__(self):
                self.started, self.what = time.monotonic(), ""
                self.task = steps.progress.add_task(name, total=None) if steps.progress else None
                return self._note

            def _note(self, what: str) -> None:
                self.what = what

            def __exit__(self, kind, value, tb):
                seconds = time.monotonic() - self.started
                if self.task is not None:
                    steps.progress.update(self.task, total=1, completed=1,
                                          description=f"{name}: {self.what or ('failed' if kind else 'done')}")
                if kind is None:
                    steps.report.steps.append((name, seconds, self.what))
                return False

        return _Step()


def _image_exists(client, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


# --- 1. base image ------------------------------------------------------------------------------

def _build_base(client, tag: str, progress) -> None:
    if os.geteuid() != 0:
        raise SandboxError("building the base image runs debootstrap, which needs root")
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is not installed (apt-get install debootstrap)")
    task = progress.add_task("debootstrap", total=None) if progress else None
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        try:
            _debootstrap_and_import(client, tag, rootfs, progress, task)
        finally:  # debootstrap mounts /proc and /sys inside: never delete through a mount
            _unmount_beneath(rootfs)
    if task is not None:
        progress.update(task, total=1, completed=1, description="debootstrap + docker import: done")


def _unmount_beneath(root: Path) -> None:
    mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounted if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _debootstrap_and_import(client, tag: str, rootfs: Path, progress, task) -> None:
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
               SUITE, str(rootfs), MIRROR]
    log = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            log.append(line.rstrip())
            if task is not None:
                progress.update(task, description=f"debootstrap: {line.strip()[:70]}")
    if proc.returncode != 0:
        raise SandboxError(f"debootstrap failed ({proc.returncode}): {' | '.join(log[-3:])}")
    for trimmed in TRIMMED:
        shutil.rmtree(rootfs / trimmed, ignore_errors=True)
    if task is not None:
        progress.update(task, description="docker import")
    tarball = rootfs.parent / "rootfs.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
    repository, _, version = tag.partition(":")
    client.api.import_image_from_file(str(tarball), repository=repository, tag=version)


# --- 2. wheelhouse ------------------------------------------------------------------------------

def runtime_requirements() -> dict[str, str]:
    """selfloop's runtime dependency closure as installed here: canonical name -> version."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    visited: set[tuple[str, str]] = set()  # (distribution, extra): an extra can add requirements

    def walk(name: str, extras: tuple[str, ...]) -> None:
        key = canonicalize_name(name)
        todo = [e for e in ("", *extras) if (key, e) not in visited]
        if not todo:
            return
        visited.update((key, e) for e in todo)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SandboxError(f"{name} is required by selfloop but not installed on the host") from None
        pins[key] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in todo):
                continue
            walk(requirement.name, tuple(requirement.extras))

    walk("selfloop", ())
    pins.pop("selfloop")
    return dict(sorted(pins.items()))


def wheelhouse_dir() -> Path:
    path = cache_dir() / "wheels"
    path.mkdir(exist_ok=True)
    return path


def _fill_wheelhouse(progress) -> str:
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    pins = runtime_requirements()
    wheels = wheelhouse_dir()
    have = set()
    for wheel in wheels.glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        have.add((canonicalize_name(name), version))
    missing = [f"{name}=={version}" for name, version in pins.items() if (name, Version(version)) not in have]
    (wheels / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
    if missing:
        _pip_wheel(missing, wheels, progress)
    _check_wheel_platforms(wheels, pins)
    return f"{len(pins)} wheels, {len(missing)} fetched"


def _pip_wheel(requirements: list[str], wheels: Path, progress) -> None:
    task = progress.add_task("pip wheel", total=len(requirements)) if progress else None
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--progress-bar", "off",
               "--wheel-dir", str(wheels), *requirements]
    log = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            log.append(line.rstrip())
            if task is not None and (line.startswith("Saved ") or "already downloaded" in line):
                progress.advance(task)
                progress.update(task, description=f"pip wheel: {Path(line.split()[-1]).name[:60]}")
    if proc.returncode != 0:
        raise SandboxError(f"pip wheel failed ({proc.returncode}): {' | '.join(log[-3:])}")


def _check_wheel_platforms(wheels: Path, pins: dict[str, str]) -> None:
    """Every wheel must install on the image: CPython 3.11, glibc no newer than bookworm's."""
    from packaging.tags import compatible_tags, cpython_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename

    platforms = ["linux_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    platforms += [f"manylinux_{IMAGE_GLIBC[0]}_{minor}_x86_64" for minor in range(IMAGE_GLIBC[1], 4, -1)]
    interpreter = f"cp{IMAGE_PYTHON[0]}{IMAGE_PYTHON[1]}"
    supported = set(cpython_tags(IMAGE_PYTHON, [interpreter], platforms))
    supported |= set(compatible_tags(IMAGE_PYTHON, interpreter, platforms))
    for wheel in wheels.glob("*.whl"):
        name, _, _, tags = parse_wheel_filename(wheel.name)
        if canonicalize_name(name) in pins and not tags & supported:
            raise SandboxError(f"wheel {wheel.name} does not install on the image (CPython 3.11, glibc 2.36); "
                               "remove it from the wheelhouse and pin a compatible release")


# --- 3. the image -------------------------------------------------------------------------------

def _prepare_context(context: Path) -> None:
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copyfile(resources.files("selfloop.sandbox").joinpath("Dockerfile"), context / "Dockerfile")
    app = context / "app" / "selfloop"
    for package in SELFLOOP_PACKAGES:
        shutil.copytree(package_dir(f"selfloop.{package}"), app / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = metadata.distribution("selfloop")
    info = context / "app" / f"selfloop-{dist.version}.dist-info"
    info.mkdir()
    for name in ("METADATA", "entry_points.txt", "top_level.txt"):
        text = dist.read_text(name)
        if text is not None:
            (info / name).write_text(text)
    plugin_dists.copy_into(context / "app")  # the user's plugin distributions, beside selfloop


def _build_key(base: str) -> str:
    """Everything the image is made of: when an image with this key exists, there is nothing to do."""
    digest = hashlib.sha256(base.encode())
    digest.update(resources.files("selfloop.sandbox").joinpath("Dockerfile").read_bytes())
    digest.update(_wheelhouse_digest().encode())
    digest.update(plugin_dists.digest().encode())
    for package in SELFLOOP_PACKAGES:
        for key, path in sorted(package_files(f"selfloop.{package}").items()):
            digest.update(key.encode() + path.read_bytes())
    return digest.hexdigest()


def _docker_build(client, tag: str, base: str, progress, no_cache: bool = False) -> str:
    import docker.errors

    key = _build_key(base)
    previous = client.images.get(tag) if _image_exists(client, tag) else None
    if not no_cache and previous is not None and (previous.labels or {}).get(BUILD_KEY_LABEL) == key:
        return "up to date"
    context = cache_dir() / "context"
    _prepare_context(context)
    task = progress.add_task("docker build", total=None) if progress else None
    labels = {MANIFEST_LABEL: manifest_digest(), BUILD_KEY_LABEL: key, plugin_dists.LABEL: plugin_dists.digest()}
    try:
        with _serve_wheelhouse() as url:
            lines = list(_build_lines(client, context, tag, labels, no_cache, {
                "BASE_IMAGE": base, "WHEELHOUSE_URL": url, "WHEELHOUSE_DIGEST": _wheelhouse_digest()},
                progress, task))
    except docker.errors.APIError as exc:
        raise SandboxError(f"docker build failed: {exc.explanation or exc}") from None
    steps_done = max((int(m[1]) for line in lines if (m := re.match(r"Step (\d+)/", line))), default=0)
    cached = lines.count("---> Using cache")
    if task is not None:
        progress.update(task, completed=steps_done, description="docker build: done")
    if previous is not None and previous.id != client.images.get(tag).id:
        _remove_image(client, previous.id)
    return f"{steps_done} steps, {cached} cached"


def _build_lines(client, context: Path, tag: str, labels: dict, no_cache: bool, buildargs: dict,
                  progress, task):
    """Run the build, show its steps, and yield its output lines; SandboxError on failure."""
    log: list[str] = []
    for chunk in client.api.build(path=str(context), tag=tag, buildargs=buildargs, labels=labels,
                                  network_mode="host", rm=True, forcerm=True, nocache=no_cache,
                                  decode=True):
        if "error" in chunk:
            context_lines = " | ".join(line for line in log[-3:] if line)
            raise SandboxError(f"docker build failed: {chunk['error'].strip()} | {context_lines}")
        for line in chunk.get("stream", "").splitlines():
            line = line.strip()
            if not line:
                continue
            log.append(line)
            step = re.match(r"Step (\d+)/(\d+) : (.*)", line)
            if step and task is not None:
                progress.update(task, total=int(step[2]), completed=int(step[1]) - 1,
                                description=f"docker build: {step[3][:60]}")
            yield line


def _wheelhouse_digest() -> str:
    digest = hashlib.sha256((wheelhouse_dir() / "requirements.txt").read_bytes())
    for wheel in sorted(wheelhouse_dir().glob("*.whl")):
        digest.update(f"{wheel.name} {wheel.stat().st_size}".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _serve_wheelhouse():
    """Serve the wheelhouse over HTTP on the host's loopback while the build runs; yield its URL.

    The port is one of a fixed few, because the URL is a build argument and a new value would
    invalidate Docker's cache of the install step.
    """
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(wheelhouse_dir()))
    for port in WHEELHOUSE_PORTS:
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
            break
        except OSError:
            continue
    else:
        raise SandboxError(f"no free port among {WHEELHOUSE_PORTS} to serve the wheelhouse on")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _remove_image(client, image_id: str) -> None:
    """Remove a replaced image (its layers shared with the new one stay); in use means keep it."""
    import docker.errors

    try:
        client.images.remove(image_id)
    except docker.errors.APIError:
        pass


def image_state(client, settings: SandboxSettings) -> tuple[bool, str]:
    """(usable, why): whether the image exists and holds the host's protected files."""
    import docker.errors

    try:
        image = client.images.get(settings.image)
    except docker.errors.ImageNotFound:
        return False, f"image {settings.image} is missing: build it with `selfloop sandbox build`"
    label = (image.labels or {}).get(MANIFEST_LABEL)
    if label != manifest_digest():
        return False, (f"image {settings.image} is stale (its selfloop core or sandbox differs from the "
                       "host's): rebuild with `selfloop sandbox build`")
    if (image.labels or {}).get(plugin_dists.LABEL, plugin_dists.digest([])) != plugin_dists.digest():
        return False, (f"image {settings.image} lacks the host's plugin distributions "
                       f"({plugin_dists.describe()}) or holds other versions: rebuild with "
                       "`selfloop sandbox build`")
    return True, f"image {settings.image} is up to date"
