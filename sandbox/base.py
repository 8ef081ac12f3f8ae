"""The sandbox interface shared by both backends: a run's arguments, its environment, its result."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from selfloop.core.config import SandboxSettings
from selfloop.core.errors import SandboxError

from .integrity import protected_manifest
from .runner import parse_report

Status = Literal["ok", "error", "timeout", "oom", "limit"]
INPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LABEL = "selfloop.sandbox"  # on every container, so a sweep finds what a crash left
OUTPUT_DIR = "outputs"  # under the scratch: $SELFLOOP_OUTPUT
HOST_GRACE_S = 15.0  # beyond the runner's own deadline, before the host kills the sandbox
# There is no network inside: libraries that would try it (and retry for seconds) are told so.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@dataclass
class SandboxResult:
    """What one sandboxed run produced."""

    status: Status
    exit_code: int | None
    result: dict | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    seconds: float
    backend: str
    reason: str | None = None
    protections: list[str] = field(default_factory=list)
    outputs: dict[str, bytes] = field(default_factory=dict)  # what the payload left in $SELFLOOP_OUTPUT

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated

    def to_dict(self) -> dict:
        return asdict(self)


class Sandbox(ABC):
    """Runs a command over a directory of code within the limits of ``settings``.

    ``manifest`` is what the runner checks the protected files against before it runs the payload
    and again before it reports; by default the hashes of the host's ``selfloop.core`` and
    ``selfloop.sandbox`` taken when the sandbox is made.
    """

    name: str

    def __init__(self, settings: SandboxSettings, manifest: dict[str, str] | None = None):
        self.settings = settings
        self.manifest = manifest if manifest is not None else protected_manifest()

    @abstractmethod
    def run(self, command: list[str], *, code_dir: Path, inputs: dict[str, Path] | None = None,
            env: dict[str, str] | None = None, timeout_s: float | None = None,
            output_quota_bytes: int | None = None) -> SandboxResult:
        """Run ``command`` with ``code_dir`` read-only at $SELFLOOP_CODE, each input read-only at
        $SELFLOOP_INPUT_<NAME>, a size-limited scratch as the working directory, and the result
        read from the JSON file the payload writes at $SELFLOOP_RESULT. With an
        ``output_quota_bytes``, the files the payload writes under $SELFLOOP_OUTPUT (a directory of
        the scratch, which it makes) come back in ``SandboxResult.outputs``; more bytes than the
        quota make the run's status ``limit``."""

    @abstractmethod
    def sweep(self) -> int:
        """Remove what crashed earlier runs left behind (containers, cgroups); return how many."""

    @classmethod
    @abstractmethod
    def availability(cls, settings: SandboxSettings) -> tuple[bool, str]:
        """(usable here?, why or why not) without running anything heavy."""

    # --- shared by the backends ---------------------------------------------------------------

    def _check_arguments(self, command, code_dir, inputs) -> tuple[Path, dict[str, Path]]:
        if not command or not all(isinstance(part, str) for part in command):
            raise SandboxError("sandbox command must be a non-empty list of strings")
        code_dir = Path(code_dir).resolve()
        if not code_dir.is_dir():
            raise SandboxError(f"code directory {code_dir} does not exist")
        checked = {}
        for name, path in (inputs or {}).items():
            if not INPUT_NAME.match(name):
                raise SandboxError(f"input name {name!r} must be letters, digits, '.', '_' or '-'")
            path = Path(path).resolve()
            if not path.exists():
                raise SandboxError(f"input {name!r}: {path} does not exist")
            checked[name] = path
        return code_dir, checked

    def _environment(self, env: dict[str, str] | None, code: str, result: str, inputs: dict[str, str],
                     inputs_dir: str, scratch: str, path: str) -> dict[str, str]:
        """The payload's whole environment: nothing from the host unless the settings name it."""
        out = {"PATH": path, "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
               "SELFLOOP_CODE": code, "SELFLOOP_RESULT": result, "SELFLOOP_INPUTS": inputs_dir,
               "SELFLOOP_OUTPUT": f"{scratch}/{OUTPUT_DIR}",
               "SELFLOOP_SANDBOX": self.name, **OFFLINE_ENV}
        for name, where in inputs.items():
            out[f"SELFLOOP_INPUT_{name.upper().replace('-', '_').replace('.', '_')}"] = where
        for name in self.settings.env:
            if name in os.environ:
                out[name] = os.environ[name]
        out.update(env or {})
        return out

    def _rlimits(self, timeout_s: float) -> dict:
        return {"cpu_s": int(timeout_s * self.settings.cpus) + 1, "nofile": 1024,
                "fsize_bytes": self.settings.scratch_mb << 20, "core_bytes": 0}

    def _spec(self, command, timeout_s, scratch, result_path, manifest, package_dirs, rlimits,
              isolate=None, integrity_hint="", output_quota_bytes=None, **payload) -> str:
        """The runner's spec; ``payload`` says how the payload is separated from it (``payload_uid``,
        ``readable``, ``container``, ``landlock_scope``: see ``runner.Lockdown``)."""
        return json.dumps({
            "command": command, "timeout_s": timeout_s, "scratch": scratch, "package_dirs": package_dirs,
            "result_path": result_path, "manifest": manifest, "rlimits": rlimits,
            "isolate": isolate, "log_limit_bytes": self.settings.log_limit_bytes,
            "output_limit_bytes": self.settings.output_limit_bytes,
            "integrity_hint": integrity_hint, "output_dir": f"{scratch}/{OUTPUT_DIR}",
            "output_quota_bytes": output_quota_bytes, **payload,
        })

    def _result_from_report(self, runner_stdout: str, runner_stderr: str, started: float, key: str,
                            runner_exit: int | None, killed_reason: str | None = None) -> SandboxResult:
        """The runner's report if it is authentic (MAC under ``key``, runner exited 0), else an
        error saying "report not authenticated" (or the host's own reason for killing it)."""
        seconds = round(time.monotonic() - started, 4)
        report, why = parse_report(runner_stdout, key, runner_exit)
        if report is None:
            status = "timeout" if killed_reason and "timeout" in killed_reason else "error"
            tail = runner_stderr.strip().splitlines()[-1:]
            return SandboxResult(
                status=status, exit_code=None, result=None, stdout="", stderr=runner_stderr[-4000:],
                stdout_truncated=False, stderr_truncated=len(runner_stderr) > 4000,
                seconds=seconds, backend=self.name,
                reason=killed_reason or f"report not authenticated: {why}" + (f": {tail[0]}" if tail else ""))
        return SandboxResult(
            status=report["status"], exit_code=report["exit_code"], result=report["result"],
            stdout=report["stdout"], stderr=report["stderr"],
            stdout_truncated=report["stdout_truncated"], stderr_truncated=report["stderr_truncated"],
            seconds=seconds, backend=self.name, reason=report["reason"],
            protections=report.get("protections", []),
            outputs={name: base64.b64decode(data) for name, data in (report.get("outputs") or {}).items()})

    def _manifest_for(self, code_dir: Path, inputs: dict[str, Path], code_at: str,
                      inputs_at: dict[str, str]) -> dict[str, str]:
        """The manifest as the runner sees it: an extra protected file's host path becomes the
        path where its mount shows it."""
        mounts = [(code_dir, code_at)] + [(inputs[name], inputs_at[name]) for name in inputs]
        out = {}
        for key, digest in self.manifest.items():
            if not key.startswith("/"):
                out[key] = digest
                continue
            out[_translate(Path(key), mounts, key)] = digest
        return out


def _translate(path: Path, mounts: list[tuple[Path, str]], key: str) -> str:
    for host, inside in mounts:
        if path == host:
            return inside
        if host in path.parents:
            return f"{inside}/{path.relative_to(host).as_posix()}"
    raise SandboxError(f"protected file {key} is not under the code directory or any input")
