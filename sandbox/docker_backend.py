"""The Docker backend: every run in a fresh container of the sandbox image.

A container has no network, memory (no swap), CPU and process-count limits, a read-only root
filesystem, no-new-privileges, the code and inputs mounted read-only, a size-limited tmpfs scratch
as its working directory, capped logs, and only the environment the run names. The runner starts
in it as root with every capability dropped but CAP_SETUID, CAP_SETGID, CAP_SETPCAP and CAP_KILL,
and runs the payload as the image's unprivileged ``sandbox`` user with none (see ``privsep`` for
why this scheme). The report key goes to the runner on the container's stdin, attached for that one
line. It is removed whatever happens (also on exceptions and Ctrl-C), and carries the label
``selfloop.sandbox`` with the owner's pid so ``sweep`` removes what a crashed owner left.
"""

from __future__ import annotations

import os
import time

from selfloop.core.config import SandboxSettings
from selfloop.core.errors import SandboxError

from .base import HOST_GRACE_S, LABEL, Sandbox, SandboxResult
from .engine import docker_client
from .image import image_state
from .privsep import DOCKER_PAYLOAD_UID
from .runner import new_key, runner_command

CODE_AT = "/code"
INPUTS_AT = "/inputs"
SCRATCH_AT = "/scratch"
PYTHON_AT = "/opt/selfloop/bin/python"
PACKAGE_DIRS = {f"selfloop.{name}": f"/opt/selfloop-app/selfloop/{name}" for name in ("core", "sandbox")}
PATH_IN_IMAGE = "/opt/selfloop/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNNER_CAPS = ["SETUID", "SETGID", "SETPCAP", "KILL"]  # the runner's; the payload has none


class DockerSandbox(Sandbox):
    name = "docker"

    def __init__(self, settings: SandboxSettings, manifest: dict[str, str] | None = None, client=None):
        super().__init__(settings, manifest)
        self.client = client or docker_client()

    @classmethod
    def availability(cls, settings: SandboxSettings) -> tuple[bool, str]:
        try:
            client = docker_client()
        except SandboxError as exc:
            return False, str(exc)
        return image_state(client, settings)

    def run(self, command, *, code_dir, inputs=None, env=None, timeout_s=None,
            output_quota_bytes=None) -> SandboxResult:
        from docker.types import LogConfig, Mount, Ulimit

        code_dir, inputs = self._check_arguments(command, code_dir, inputs)
        timeout_s = float(timeout_s if timeout_s is not None else self.settings.timeout_s)
        inputs_at = {name: f"{INPUTS_AT}/{name}" for name in inputs}
        result_path = f"{SCRATCH_AT}/result.json"
        environment = self._environment(env, CODE_AT, result_path, inputs_at, INPUTS_AT, SCRATCH_AT, PATH_IN_IMAGE)
        manifest = self._manifest_for(code_dir, inputs, CODE_AT, inputs_at)
        spec = self._spec(command, timeout_s, SCRATCH_AT, result_path, manifest, PACKAGE_DIRS,
                          self._rlimits(timeout_s),
                          integrity_hint=" (stale image? rebuild with `selfloop sandbox build`)",
                          output_quota_bytes=output_quota_bytes,
                          payload_uid=DOCKER_PAYLOAD_UID, container=True, landlock_scope=True,
                          readable=[CODE_AT, *inputs_at.values()])
        mounts = [Mount(CODE_AT, str(code_dir), type="bind", read_only=True)]
        mounts += [Mount(inputs_at[name], str(path), type="bind", read_only=True) for name, path in inputs.items()]
        # the report holds both capped logs, and the outputs in base64
        log_cap = 2 * self.settings.log_limit_bytes + (8 << 20) + 2 * (output_quota_bytes or 0)
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
            cap_drop=["ALL"], cap_add=RUNNER_CAPS, security_opt=["no-new-privileges"], init=True,
            user="0:0", stdin_open=True,  # and StdinOnce (docker-py sets it): EOF after the key
            log_config=LogConfig(type="json-file", config={"max-size": str(log_cap), "max-file": "1"}),
            labels={LABEL: "1", f"{LABEL}.owner": f"{os.uname().nodename}:{os.getpid()}"},
        )
        key = new_key()
        try:
            stdin = self.client.api.attach_socket(container.id, params={"stdin": 1, "stream": 1})
            try:
                container.start()
                getattr(stdin, "_sock", stdin).sendall(f"{key}\n".encode())  # docker-py's SocketIO wraps it
            finally:
                stdin.close()  # stdin_once: the container's stdin closes with it
            exit_code, killed = self._wait(container, timeout_s + HOST_GRACE_S)
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            result = self._result_from_report(stdout, "", started, key, exit_code, killed)
            if result.reason and result.reason.startswith("report not authenticated"):  # find out why
                result.stderr = container.logs(stdout=False, stderr=True, tail=200).decode("utf-8", "replace")
                tail = result.stderr.strip().splitlines()[-1:]
                result.reason += f": {tail[0]}" if tail else ""
                if self.client.api.inspect_container(container.id)["State"].get("OOMKilled"):
                    result.status, result.reason = "oom", "out of memory (the container was killed)"
        finally:
            _remove(container)
        return result

    def _wait(self, container, limit_s: float) -> tuple[int | None, str | None]:
        """(the container's exit code, None), or (None, why the host killed it)."""
        import requests

        try:
            return container.wait(timeout=limit_s).get("StatusCode"), None
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            container.kill()
            return None, f"timeout: the container outlived its deadline by {HOST_GRACE_S:g} s and was killed"

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

