"""The Docker backend: every run in a fresh container of the sandbox image.

A container has no network, memory (no swap), CPU and process-count limits, a read-only root
filesystem, all capabilities dropped and no-new-privileges, the code and inputs mounted read-only,
a size-limited tmpfs scratch as its working directory, capped logs, and only the environment the
run names. It is removed whatever happens (also on exceptions and Ctrl-C), and carries the label
``selfloop.sandbox`` with the owner's pid so ``sweep`` removes what a crashed owner left.
"""

from __future__ import annotations

import os
import time

from selfloop.core.config import SandboxSettings
from selfloop.core.errors import SandboxError

from .base import HOST_GRACE_S, LABEL, Sandbox, SandboxResult
from .runner import REPORT_MARKER, runner_command

CODE_AT = "/code"
INPUTS_AT = "/inputs"
SCRATCH_AT = "/scratch"
PYTHON_AT = "/opt/selfloop/bin/python"
PACKAGE_DIRS = {f"selfloop.{name}": f"/opt/selfloop-app/selfloop/{name}" for name in ("core", "sandbox")}
PATH_IN_IMAGE = "/opt/selfloop/bin:/usr/sbin:/usr/bin:/sbin:/bin"
API_TIMEOUT_S = 60


def docker_client():
    """A client for the local engine, or SandboxError saying why there is none."""
    try:
        import docker
        import requests
    except ImportError:
        raise SandboxError("the docker Python package is not installed (pip install docker)") from None
    try:
        client = docker.from_env(timeout=API_TIMEOUT_S)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise SandboxError(f"no Docker engine answers ({_first_line(exc)}); start dockerd or use the process backend") from None
    return client


class DockerSandbox(Sandbox):
    name = "docker"

    def __init__(self, settings: SandboxSettings, manifest: dict[str, str] | None = None, client=None):
        super().__init__(settings, manifest)
        self.client = client or docker_client()

    @classmethod
    def availability(cls, settings: SandboxSettings) -> tuple[bool, str]:
        from .image import image_state

        try:
            client = docker_client()
        except SandboxError as exc:
            return False, str(exc)
        return image_state(client, settings)

    def run(self, command, *, code_dir, inputs=None, env=None, timeout_s=None) -> SandboxResult:
        from docker.types import LogConfig, Mount, Ulimit

        code_dir, inputs = self._check_arguments(command, code_dir, inputs)
        timeout_s = float(timeout_s if timeout_s is not None else self.settings.timeout_s)
        inputs_at = {name: f"{INPUTS_AT}/{name}" for name in inputs}
        result_path = f"{SCRATCH_AT}/result.json"
        environment = self._environment(env, CODE_AT, result_path, inputs_at, INPUTS_AT, SCRATCH_AT, PATH_IN_IMAGE)
        manifest = self._manifest_for(code_dir, inputs, CODE_AT, inputs_at)
        spec = self._spec(command, timeout_s, SCRATCH_AT, result_path, manifest, PACKAGE_DIRS,
                          self._rlimits(timeout_s),
                          integrity_hint=" (stale image? rebuild with `selfloop sandbox build`)")
        mounts = [Mount(CODE_AT, str(code_dir), type="bind", read_only=True)]
        mounts += [Mount(inputs_at[name], str(path), type="bind", read_only=True) for name, path in inputs.items()]
        log_cap = 2 * self.settings.log_limit_bytes + (8 << 20)  # the report holds both capped logs
        s = self.settings
        started = time.monotonic()
        container = self.client.containers.create(
            s.image, runner_command(PYTHON_AT, PACKAGE_DIRS["selfloop.sandbox"], spec),
            environment=environment, mounts=mounts, working_dir=SCRATCH_AT,
            tmpfs={SCRATCH_AT: f"size={s.scratch_mb}m,mode=1777"},
            read_only=True, network_disabled=True, network_mode="none",
            mem_limit=s.memory_mb << 20, memswap_limit=s.memory_mb << 20,
            nano_cpus=int(s.cpus * 1e9), pids_limit=s.pids,
            ulimits=[Ulimit(name="nofile", soft=1024, hard=1024)],
            cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
            user=f"{os.getuid()}:{os.getgid()}",
            log_config=LogConfig(type="json-file", config={"max-size": str(log_cap), "max-file": "1"}),
            labels={LABEL: "1", f"{LABEL}.owner": f"{os.uname().nodename}:{os.getpid()}"},
        )
        try:
            container.start()
            killed = self._wait(container, timeout_s + HOST_GRACE_S)
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            stderr, oom_killed = "", False
            if REPORT_MARKER not in stdout:  # the runner itself died: find out why
                stderr = container.logs(stdout=False, stderr=True, tail=200).decode("utf-8", "replace")
                oom_killed = self.client.api.inspect_container(container.id)["State"].get("OOMKilled")
        finally:
            _remove(container)
        result = self._result_from_report(stdout, stderr, started, killed)
        if oom_killed:
            result.status, result.reason = "oom", "out of memory (the container was killed)"
        return result

    def _wait(self, container, limit_s: float) -> str | None:
        import requests

        try:
            container.wait(timeout=limit_s)
            return None
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            container.kill()
            return f"timeout: the container outlived its deadline by {HOST_GRACE_S:g} s and was killed"

    def sweep(self) -> int:
        from . import confine

        return sweep_containers(self.client) + confine.sweep_cgroups()


def sweep_containers(client) -> int:
    """Remove every selfloop sandbox container whose owner on this host is gone."""
    removed = 0
    host = os.uname().nodename
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        node, _, pid = container.labels.get(f"{LABEL}.owner", "").rpartition(":")
        if node == host and pid.isdigit() and _alive(int(pid)):
            continue
        _remove(container)
        removed += 1
    return removed


def _remove(container) -> None:
    import docker.errors

    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if "already in progress" not in str(exc):
            raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__

