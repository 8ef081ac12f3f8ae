"""The trusted runner that starts a payload inside a sandbox (``runner_command`` builds its command line).

Both backends start this module in the sandbox instead of the payload itself. It

1. checks the protected files against the host's manifest (a mismatch stops here);
2. locks itself down where the spec asks (process backend: cgroup, namespaces, private tmpfs);
3. starts the payload with rlimits (and, for the process backend, Landlock), captures its output
   capped, and kills it at the deadline or when it prints without bound;
4. kills every process the payload left behind;
5. checks the protected files again, reads the payload's JSON result, and prints one report line,
   ``REPORT_MARKER <json>``, on its own stdout.

Its one argument is a JSON spec (written by ``Sandbox._spec``). Standard library only: it starts
as ``python -I -S`` (no site-packages: a third of the start-up time), loading ``selfloop.sandbox``
from the directory it is given, and its start-up is every evaluation's overhead.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

REPORT_MARKER = "@@selfloop-sandbox-report@@"
RESULT_LIMIT_BYTES = 4 << 20
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


# Makes `selfloop.sandbox` a package whose modules load from the given directory, without running
# its __init__ (the runner needs none of it) and without importlib.util (a tenth of the start-up).
BOOTSTRAP = (
    "import sys, types; where = sys.argv[1]; "
    "top = types.ModuleType('selfloop'); top.__path__ = []; sys.modules['selfloop'] = top; "
    "package = types.ModuleType('selfloop.sandbox'); package.__path__ = [where]; "
    "package.__package__ = 'selfloop.sandbox'; sys.modules['selfloop.sandbox'] = package; "
    "from selfloop.sandbox.runner import main; sys.exit(main(sys.argv[2:]))"
)


def runner_command(python: str, sandbox_dir: str, spec: str) -> list[str]:
    """The command line that starts this runner with ``python`` (isolated, without site-packages)."""
    return [python, "-I", "-S", "-c", BOOTSTRAP, sandbox_dir, spec]


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    report = run(spec)
    sys.stdout.write(f"\n{REPORT_MARKER} {json.dumps(report)}\n")
    sys.stdout.flush()
    return 0


def run(spec: dict) -> dict:
    from .integrity import verify_manifest

    report: dict = {"status": "error", "exit_code": None, "reason": None, "result": None,
                    "stdout": "", "stderr": "", "stdout_truncated": False,
                    "stderr_truncated": False, "protections": []}
    problems = verify_manifest(spec["manifest"], spec["package_dirs"])
    if problems:
        report["reason"] = f"integrity: {_summarise(problems)}{spec.get('integrity_hint', '')}"
        return report

    isolate = spec.get("isolate") or {}
    lockdown = Lockdown(isolate, spec["scratch"], report["protections"])
    lockdown.before_spawn()
    _set_subreaper()

    env = dict(os.environ)
    Path(spec["result_path"]).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        payload = subprocess.Popen(
            spec["command"], cwd=spec["scratch"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=lambda: lockdown.in_child(spec.get("rlimits") or {}),  # noqa: PLW1509 (no threads here)
        )
    except (OSError, subprocess.SubprocessError) as exc:
        report["reason"] = f"could not start {spec['command'][0]!r}: {exc}"
        lockdown.after()
        return report

    capture = OutputCapture(payload, spec["log_limit_bytes"], spec["output_limit_bytes"])
    deadline = spec.get("timeout_s")
    timed_out = not capture.until_exit(deadline)
    # In its own PID namespace the payload's death takes every descendant with it; elsewhere
    # (a container) orphans were reparented to us and are hunted down.
    _kill_everything(payload, hunt_orphans="namespaces" not in report["protections"])
    capture.drain()
    report["seconds"] = round(time.monotonic() - started, 4)
    report.update(capture.report())
    oom = lockdown.oom_kills() > 0
    lockdown.after()

    code = payload.returncode
    report["exit_code"] = code
    if timed_out:
        report["status"], report["reason"] = "timeout", f"killed after {deadline:g} s"
    elif capture.overflowed:
        report["status"] = "limit"
        report["reason"] = f"printed more than {spec['output_limit_bytes']} bytes"
    elif oom:
        report["status"], report["reason"] = "oom", "out of memory (killed by the memory limit)"
    elif code is not None and code < 0 and -code in LIMIT_SIGNALS:
        report["status"], report["reason"] = "limit", LIMIT_SIGNALS[-code]
    elif _memory_error(report["stderr"]):
        report["status"], report["reason"] = "oom", "out of memory (allocation refused)"
    elif code == 0:
        report["status"] = "ok"
    else:
        report["reason"] = f"exited with {_describe_exit(code)}"

    problems = verify_manifest(spec["manifest"], spec["package_dirs"])
    if problems:
        report["status"], report["result"] = "error", None
        report["reason"] = f"integrity: {_summarise(problems)} (changed while the payload ran)"
        return report
    if report["status"] == "ok" or report["status"] == "error":
        result, problem = _read_result(Path(spec["result_path"]))
        report["result"] = result
        if problem and report["status"] == "ok":
            report["reason"] = problem
    return report


LIMIT_SIGNALS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
}


class OutputCapture:
    """Reads a payload's stdout and stderr in this thread (a process that made a new PID namespace
    cannot start threads), keeps the first ``keep`` bytes of each and counts the rest, and kills
    the payload once both together pass ``kill_after`` bytes."""

    def __init__(self, process: subprocess.Popen, keep: int, kill_after: int):
        self.process, self.keep, self.kill_after = process, keep, kill_after
        self.kept = {"stdout": bytearray(), "stderr": bytearray()}
        self.total = {"stdout": 0, "stderr": 0}
        self.overflowed = False
        self.selector = selectors.DefaultSelector()
        for name in ("stdout", "stderr"):
            stream = getattr(process, name)
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream, selectors.EVENT_READ, name)

    def until_exit(self, timeout_s: float | None) -> bool:
        """Read until the payload exits (True) or the deadline passes (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        exited = os.pidfd_open(self.process.pid)
        self.selector.register(exited, selectors.EVENT_READ, None)
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                for key, _ in self.selector.select(remaining):
                    if key.data is None:
                        return True
                    self._read(key)
        finally:
            self.selector.unregister(exited)
            os.close(exited)

    def drain(self) -> None:
        """Read what is left once every writer is dead."""
        while self.selector.get_map():
            for key, _ in self.selector.select(5):
                self._read(key)

    def _read(self, key) -> None:
        name, stream = key.data, key.fileobj
        try:
            chunk = os.read(stream.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(stream)
            stream.close()
            return
        kept = self.kept[name]
        self.total[name] += len(chunk)
        if len(kept) < self.keep:
            kept += chunk[: self.keep - len(kept)]
        if not self.overflowed and sum(self.total.values()) > self.kill_after:
            self.overflowed = True
            _kill_group(self.process.pid)

    def report(self) -> dict:
        out = {}
        for name in ("stdout", "stderr"):
            out[name] = self.kept[name].decode("utf-8", "replace")
            out[f"{name}_truncated"] = self.total[name] > len(self.kept[name])
            out[f"{name}_bytes"] = self.total[name]
        return out


class Lockdown:
    """The process backend's isolation, each layer applied where the kernel allows and recorded in
    ``protections`` (the Docker backend passes an empty ``isolate``: the container does it)."""

    def __init__(self, isolate: dict, scratch: str, protections: list[str]):
        self.isolate, self.scratch, self.protections = isolate, scratch, protections
        self.cgroups: list[Path] = []
        self.oom_file: Path | None = None
        self.landlock_rules = isolate.get("landlock")

    def before_spawn(self) -> None:
        if not self.isolate:
            self.oom_file = _container_oom_file()
            return
        from . import confine

        self.confine = confine  # imported here: the forked payload must not import anything

        limits = self.isolate.get("cgroup")
        if limits:
            try:
                self.cgroups, self.oom_file = confine.join_cgroups(limits)
                self.protections.append("cgroup")
            except OSError as exc:
                self.protections.append(f"no cgroup ({exc.strerror or exc})")
        if self.isolate.get("namespaces"):
            try:
                confine.unshare_namespaces()
                self.protections.append("namespaces")
                confine.mount_private_tmpfs(self.scratch, self.isolate["scratch_mb"])
                self.protections.append("tmpfs scratch")
            except OSError as exc:
                self.protections.append(f"no namespaces ({exc.strerror or exc})")
        if self.landlock_rules:
            self.protections.append("landlock" if confine.landlock_abi() > 0 else "no landlock")

    def in_child(self, rlimits: dict) -> None:
        """Runs in the forked payload before exec: nothing here may start a thread."""
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if "namespaces" in self.protections:
            try:
                self.confine.mount_private_proc()
            except OSError:
                pass  # the host's /proc stays visible (Landlock still hides other processes' memory)
        _apply_rlimits(rlimits)
        if "landlock" in self.protections:
            self.confine.landlock_restrict(**self.landlock_rules)

    def oom_kills(self) -> int:
        if self.oom_file is None:
            return 0
        try:
            for line in self.oom_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def after(self) -> None:
        if self.cgroups:
            from . import confine

            confine.leave_cgroups(self.cgroups)


def _apply_rlimits(rlimits: dict) -> None:
    names = {"cpu_s": resource.RLIMIT_CPU, "nofile": resource.RLIMIT_NOFILE,
             "nproc": resource.RLIMIT_NPROC, "fsize_bytes": resource.RLIMIT_FSIZE,
             "data_bytes": resource.RLIMIT_DATA, "core_bytes": resource.RLIMIT_CORE}
    for key, value in rlimits.items():
        if value is None:
            continue
        hard = value + 2 if key == "cpu_s" else value  # SIGXCPU at the soft limit, SIGKILL after
        resource.setrlimit(names[key], (int(value), int(hard)))


def _container_oom_file() -> Path | None:
    """Inside a container, the cgroup file whose ``oom_kill`` counts memory-limit kills."""
    for candidate in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        if os.path.exists(candidate):
            return Path(candidate)
    return None


def _set_subreaper() -> None:
    """Orphans of the payload become our children, so none escapes the final sweep."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_everything(payload: subprocess.Popen, hunt_orphans: bool = True) -> None:
    """SIGKILL the payload's group, then every child we still have (reparented orphans included),
    until none is left."""
    _kill_group(payload.pid)
    try:
        payload.kill()
    except ProcessLookupError:
        pass
    payload.wait()
    if not hunt_orphans:
        return
    me = os.getpid()
    for _ in range(1000):
        children = _children_of(me)
        if not children:
            return
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _children_of(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent:
            children.append(int(entry))
    return children


def _read_result(path: Path) -> tuple[dict | None, str | None]:
    try:
        with open(path, "rb") as f:
            data = f.read(RESULT_LIMIT_BYTES + 1)
    except FileNotFoundError:
        return None, "the payload wrote no result"
    except OSError as exc:
        return None, f"result unreadable: {exc.strerror}"
    if len(data) > RESULT_LIMIT_BYTES:
        return None, f"result larger than {RESULT_LIMIT_BYTES} bytes"
    try:
        result = json.loads(data)
    except ValueError as exc:
        return None, f"result is not JSON: {exc}"
    if not isinstance(result, dict):
        return None, "result is not a JSON object"
    return result, None


def _memory_error(stderr: str) -> bool:
    last = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    return bool(last) and last[0].startswith("MemoryError")


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def _summarise(problems: list[str], shown: int = 3) -> str:
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
