"""The local Docker engine: one client for the backend, the image builder and ``sweep``."""

from __future__ import annotations

from selfloop.core.errors import SandboxError

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
        raise SandboxError(f"no Docker engine answers ({first_line(exc)}); start dockerd or use the process backend") from None
    return client


def first_line(exc: BaseException) -> str:
    """An engine error's first line, at most 200 characters."""
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
