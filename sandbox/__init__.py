"""Sandboxes: run candidate code in a fresh Docker container or, without Docker, a locked-down process.

The interface the meta loop uses::

    from selfloop.sandbox import choose_backend, protected_manifest

    sandbox = choose_backend(config.sandbox)            # a Sandbox; SandboxError if a forced backend is unusable
    sandbox.manifest = protected_manifest([held_out])   # optional: protect more files (under code_dir or an input)
    result = sandbox.run(["python", "-m", "my.evaluator"], code_dir=variant_dir,
                         inputs={"data": data_dir}, env={"SEED": "0"}, timeout_s=120)
    if result.status == "ok":
        score = result.result["score"]

``choose_backend(settings)`` picks Docker when a daemon answers and the image exists and matches
the host's protected files, else the process backend; ``settings.backend = "docker" | "process"``
forces one and raises ``SandboxError`` with the reason when it is unusable.

``Sandbox.run(command, *, code_dir, inputs={}, env={}, timeout_s=None) -> SandboxResult``:

- ``code_dir`` is mounted read-only at ``/code`` (Docker; the host path for the process backend),
  and named in ``$SELFLOOP_CODE``;
- each ``inputs`` entry ``name -> host path`` is an extra read-only mount at ``/inputs/<name>``,
  named in ``$SELFLOOP_INPUT_<NAME>`` (upper case, ``-``/``.`` as ``_``); ``$SELFLOOP_INPUTS``
  is the directory holding them all;
- the working directory is a size-limited writable scratch (also ``$HOME`` and ``$TMPDIR``);
- the payload writes its structured result as a JSON object to the path in ``$SELFLOOP_RESULT``;
- the environment holds only those variables, ``PATH``/``LANG``, the names listed in
  ``settings.env`` (copied from the host) and ``env``; nothing else from the host enters;
- ``timeout_s`` (default ``settings.timeout_s``) is wall-clock; at the deadline every process of the
  payload is killed.

- the code and inputs must be readable by others (o+r, o+x for directories) where the payload's
  uid cannot be given them through an idmapped mount (Docker; filesystems without idmapping): the
  run is refused with a reason saying which mount and what to change.

``SandboxResult``: ``status`` ("ok" | "error" | "timeout" | "oom" | "limit"), ``exit_code``,
``result`` (the parsed JSON object or None), ``stdout``/``stderr`` (the first
``settings.log_limit_bytes`` of each) with ``stdout_truncated``/``stderr_truncated`` (and
``truncated``), ``seconds``, ``backend``, ``reason`` (one line when not ok, or why there is no
result) and ``protections``: the confinement layers that held (or "no <layer> (why)"), and the
payload's credentials as the kernel showed them right after it started
(``payload uid=N gid=N groups=none``, ``payload CapInh=… CapPrm=… CapEff=… CapBnd=… CapAmb=…``),
with ``no_new_privs``, ``seccomp`` and ``landlock socket scoping``.

Trust: the payload runs under an unprivileged uid of its own with no capabilities, no_new_privs and
a seccomp filter that also refuses every AF_UNIX socket (``privsep``), so it can neither touch the
runner nor reach a host service's socket. The runner's report carries an HMAC-SHA256 under a key
made for that run and handed to the runner on its stdin; the host accepts it only with a valid MAC
from a runner that exited 0, else the status is "error" and the reason starts with
"report not authenticated". The runner reads the result only once every process of the payload is
dead (no symlink, no FIFO, size-capped).

Integrity: before the payload starts and again before the result is accepted, the runner inside
the sandbox (``selfloop.sandbox.runner``) checks the sha256 of every file of the installed
``selfloop.core`` and ``selfloop.sandbox`` (and any extra file in the manifest) against
``sandbox.manifest``, computed on the host by ``protected_manifest(extra)``. A mismatch gives status
"error" with a reason starting ``integrity:`` (for Docker, a stale image: rebuild with
``selfloop sandbox build``), and no result.

``Sandbox.sweep()`` removes what crashed runs left (labelled containers whose owner process is
gone, empty per-run cgroups); the meta loop may call it once at start.
``selfloop sandbox check|build|run|sweep`` is the command line (``sandbox/cli.py``): which backends
work here and why not, build the image offline, run one command in a sandbox, remove leftovers.
"""

from __future__ import annotations

from .integrity import protected_manifest

TYPE_CHECKING = False  # not `typing`'s: importing typing would slow the in-sandbox runner's start
if TYPE_CHECKING:
    from selfloop.core.config import SandboxSettings

    from .base import Sandbox, SandboxResult

__all__ = ["Sandbox", "SandboxResult", "backend_availability", "choose_backend", "protected_manifest"]


def backend_availability(settings: SandboxSettings) -> dict[str, tuple[bool, str]]:
    """Each backend: (usable here?, why or why not)."""
    from .docker_backend import DockerSandbox
    from .process_backend import ProcessSandbox

    return {"docker": DockerSandbox.availability(settings), "process": ProcessSandbox.availability(settings)}


def choose_backend(settings: SandboxSettings, manifest: dict[str, str] | None = None) -> Sandbox:
    """The sandbox ``settings.backend`` asks for ("auto": Docker if usable, else process)."""
    from selfloop.core.errors import SandboxError

    from .docker_backend import DockerSandbox
    from .process_backend import ProcessSandbox

    backends = {"docker": DockerSandbox, "process": ProcessSandbox}
    if settings.backend != "auto":
        usable, why = backends[settings.backend].availability(settings)
        if not usable:
            raise SandboxError(f"sandbox backend {settings.backend!r} is unusable: {why}")
        return backends[settings.backend](settings, manifest)
    usable, why = DockerSandbox.availability(settings)
    chosen = (DockerSandbox if usable else ProcessSandbox)(settings, manifest)
    chosen.reason = "the Docker image is up to date" if usable else f"not docker: {why}"
    return chosen


def __getattr__(name: str):
    if name in ("Sandbox", "SandboxResult"):
        from . import base

        return getattr(base, name)
    raise AttributeError(name)
