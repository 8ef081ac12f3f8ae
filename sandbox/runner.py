"""The trusted runner that starts a payload inside a sandbox (``runner_command`` builds its command line).

Both backends start this module in the sandbox instead of the payload itself. It

1. reads the run's report key, the first line of its stdin, and closes stdin (the key is in no
   argument, no environment variable and no file the payload could read);
2. checks the protected files against the host's manifest (a mismatch stops here);
3. locks itself down where the spec asks (process backend: cgroup, namespaces, private tmpfs
   scratch and /run, read-only binds of the code and inputs) and makes itself non-dumpable;
4. starts the payload under its own unprivileged uid with no capabilities, no_new_privs, seccomp,
   rlimits and Landlock (``privsep``), records the payload's credentials as the kernel shows them,
   captures its output capped, and kills it at the deadline or when it prints without bound;
5. kills every process of the payload (its PID namespace, or every process in the container) and
   waits until none is left, so nothing writes after this point;
6. checks the protected files again, reads the payload's JSON result (no symlink, no FIFO, size
   capped) and, where the spec gives an output quota, the files of its output directory (regular
   files only, within the quota, or the run's status is ``limit``), and prints one report line, ``REPORT_MARKER <hmac-sha256> <json>``, on its own stdout.

The host accepts a report only with a valid MAC under the run's key and a runner that exited 0
(``parse_report``): a payload that cannot read the key cannot forge one.

Its one argument is a JSON spec (written by ``Sandbox._spec``). Standard library only: it starts
as ``python -I -S`` (no site-packages: a third of the start-up time), loading ``selfloop.sandbox``
from the directory it is given, and its start-up is every evaluation's overhead.
"""

from __future__ import annotations

import hashlib
import hmac
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
OUTPUT_FILES = 64  # files a payload may leave in its output directory (a quota bounds their bytes)
KEY_HEX_CHARS = 64  # a 32-byte key, hex
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SANDBOXED_ENV = "SELFLOOP_SANDBOXED"  # selfloop.core.tasks.SANDBOXED_ENV: model output may run here


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
    key = _read_key()
    if key is None:
        sys.stderr.write("sandbox runner: no report key on stdin\n")
        return 2
    spec = json.loads(argv[0])
    body = json.dumps(run(spec))
    sys.stdout.write(f"\n{REPORT_MARKER} {sign(key, body)} {body}\n")
    sys.stdout.flush()
    return 0


def new_key() -> str:
    """A fresh report key for one run (the host's side)."""
    return os.urandom(KEY_HEX_CHARS // 2).hex()


def sign(key: str, body: str) -> str:
    return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()


def parse_report(stdout: str, key: str, exit_code: int | None) -> tuple[dict | None, str | None]:
    """(report, None) when the runner's stdout holds exactly one report line, its MAC is valid under
    ``key`` and the runner exited 0; else (None, why not)."""
    lines = [line for line in stdout.splitlines() if line.startswith(REPORT_MARKER)]
    if not lines:
        return None, f"the sandbox runner gave no report ({_describe_exit(exit_code)})"
    if len(lines) > 1:  # the runner writes one; the payload's output is inside its JSON
        return None, f"{len(lines)} report lines where the runner writes one"
    _, mac, body = (lines[0].split(" ", 2) + ["", ""])[:3]
    if not hmac.compare_digest(mac.encode(), sign(key, body).encode()):
        return None, "its MAC does not match the run's key"
    if exit_code != 0:
        return None, f"the sandbox runner exited with {_describe_exit(exit_code)}"
    try:
        return json.loads(body), None
    except ValueError:
        return None, "the report is not JSON"


def _read_key() -> str | None:
    """The first line of stdin, then stdin is /dev/null (the payload inherits nothing of it)."""
    data = b""
    while b"\n" not in data and len(data) <= KEY_HEX_CHARS:
        chunk = os.read(0, KEY_HEX_CHARS + 1)
        if not chunk:
            break
        data += chunk
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    key = data.split(b"\n", 1)[0].decode("ascii", "replace")
    return key if len(key) == KEY_HEX_CHARS else None


def run(spec: dict) -> dict:
    from . import privsep
    from .integrity import verify_manifest

    report: dict = {"status": "error", "exit_code": None, "reason": None, "result": None,
                    "stdout": "", "stderr": "", "stdout_truncated": False,
                    "stderr_truncated": False, "protections": []}
    isolate = spec.get("isolate") or {}
    lockdown = Lockdown(isolate, spec, report["protections"])
    refused = lockdown.refusal()
    if refused:
        report["reason"] = refused
        return report
    lockdown.before_spawn()  # first: the manifest's extra files are checked where they are mounted
    privsep.make_undumpable()
    _set_subreaper()
    problems = verify_manifest(spec["manifest"], spec["package_dirs"])
    if problems:
        report["reason"] = f"integrity: {_summarise(problems)}{spec.get('integrity_hint', '')}"
    else:
        report["reason"] = lockdown.unreadable(spec.get("readable") or [])
    if report["reason"]:
        lockdown.after()
        return report

    env = {**os.environ, SANDBOXED_ENV: "1"}  # for every payload: model output may run here
    started = time.monotonic()
    failure_r, failure_w = os.pipe2(os.O_CLOEXEC)  # why the child failed before exec, if it did
    try:
        payload = subprocess.Popen(
            spec["command"], cwd=spec["scratch"], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=lambda: lockdown.in_child(spec.get("rlimits") or {}, failure_w),  # noqa: PLW1509 (no threads here)
        )
    except (OSError, subprocess.SubprocessError) as exc:
        os.close(failure_w)
        why = os.read(failure_r, 4096).decode("utf-8", "replace").strip()
        os.close(failure_r)
        report["reason"] = f"could not start {spec['command'][0]!r}: {why or exc}" + \
            (f" ({lockdown.unreachable})" if lockdown.unreachable else "")
        lockdown.after()
        return report
    os.close(failure_w)
    os.close(failure_r)

    wrong = lockdown.record_payload(payload.pid)
    capture = OutputCapture(payload, spec["log_limit_bytes"], spec["output_limit_bytes"],
                            lambda: lockdown.kill(payload.pid))
    deadline = spec.get("timeout_s")
    timed_out = False if wrong else not capture.until_exit(deadline)
    lockdown.kill(payload.pid)
    lockdown.reap(payload)
    capture.drain()
    report["seconds"] = round(time.monotonic() - started, 4)
    report.update(capture.report())
    oom = lockdown.oom_kills() > 0
    lockdown.after()

    code = payload.returncode
    report["exit_code"] = code
    if wrong:
        report["reason"] = wrong
        return report
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
        result, problem = _read_result(spec["result_path"])
        report["result"] = result
        if problem and report["status"] == "ok":
            report["reason"] = problem
    if report["status"] == "ok" and spec.get("output_quota_bytes"):
        outputs, problem = _read_outputs_as(lockdown.uid, spec["output_dir"], spec["output_quota_bytes"])
        if problem:
            report["status"], report["reason"] = "limit", problem
        else:
            report["outputs"] = outputs
    return report


LIMIT_SIGNALS = {
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
}


class OutputCapture:
    """Reads a payload's stdout and stderr in this thread (a process that made a new PID namespace
    cannot start threads), keeps the first ``keep`` bytes of each and counts the rest, and calls
    ``kill`` once both together pass ``kill_after`` bytes."""

    def __init__(self, process: subprocess.Popen, keep: int, kill_after: int, kill):
        self.process, self.keep, self.kill_after, self.kill = process, keep, kill_after, kill
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
            self.kill()

    def report(self) -> dict:
        out = {}
        for name in ("stdout", "stderr"):
            out[name] = self.kept[name].decode("utf-8", "replace")
            out[f"{name}_truncated"] = self.total[name] > len(self.kept[name])
            out[f"{name}_bytes"] = self.total[name]
        return out


class Lockdown:
    """What separates the payload from the runner and the host, each layer applied where the kernel
    allows and recorded in ``protections``. The process backend's ``isolate`` asks for cgroups,
    namespaces, binds and Landlock; in Docker (an empty ``isolate``) the container provides those,
    and the privilege drop, seccomp and Landlock's scoping are applied on both."""

    def __init__(self, isolate: dict, spec: dict, protections: list[str]):
        from . import privsep

        self.privsep = privsep  # imported now: the forked payload must not import anything
        self.isolate, self.protections = isolate, protections
        self.scratch = spec["scratch"]
        self.in_container = bool(spec.get("container"))
        self.cgroups: list[Path] = []
        self.oom_file: Path | None = None
        self.namespaces = False
        self.idmapped: set[str] = set()  # mount points where the payload's uid owns the host's files
        self.unreachable = ""  # why the payload's uid cannot reach the Python installation, if so
        self.landlock_rules = isolate.get("landlock")
        wanted = spec.get("payload_uid")
        self.uid = privsep.PAYLOAD_UID_BASE + os.getpid() if wanted == "per-run" else wanted
        self.last_cap = privsep.last_capability()
        self.own = privsep.status_fields()
        program = privsep.seccomp_program(os.uname().machine)
        if "Seccomp" not in self.own:
            self.seccomp, self.no_seccomp = None, "the kernel has no seccomp"
        elif program is None:
            self.seccomp, self.no_seccomp = None, f"no filter for {os.uname().machine}"
        else:
            self.seccomp, self.no_seccomp = privsep.SeccompFilter(program), "the kernel refused the filter"
        self.scope = bool(self.landlock_rules or spec.get("landlock_scope"))
        from . import confine

        self.confine = confine
        self.landlock_abi = confine.landlock_abi()

    def refusal(self) -> str | None:
        """Why the payload cannot be started unprivileged here, or None."""
        if self.uid is None:
            return None
        needed = self.privsep.missing_capabilities(self.own, kill=self.in_container)
        if needed:
            return (f"cannot run the payload under its own uid: the sandbox runner lacks {', '.join(needed)}"
                    + (" (the container must be given them)" if self.in_container else ""))
        return None

    def before_spawn(self) -> None:
        if not self.isolate:
            self.oom_file = _container_oom_file()
            return
        from . import confine

        self.confine = confine
        limits = self.isolate.get("cgroup")
        if limits:
            try:
                self.cgroups, self.oom_file = confine.join_cgroups(limits)
                self.protections.append("cgroup")
            except OSError as exc:
                self.protections.append(f"no cgroup ({exc.strerror or exc})")
        usernses = self._idmaps(confine) if self.isolate.get("namespaces") else {}
        if self.isolate.get("namespaces"):
            try:
                confine.unshare_namespaces()
                self.namespaces = True
                self.protections.append("namespaces")
            except OSError as exc:
                self.protections.append(f"no namespaces ({exc.strerror or exc})")
        owner = (self.uid, self.uid) if self.uid is not None else (os.geteuid(), os.getegid())
        if self.namespaces:
            for layer, apply in (("tmpfs scratch", lambda: confine.mount_private_tmpfs(
                                     self.scratch, self.isolate["scratch_mb"], *owner)),
                                 ("private /run", confine.mount_private_run)):
                try:
                    apply()
                    self.protections.append(layer)
                except OSError as exc:
                    self.protections.append(f"no {layer} ({exc.strerror or exc})")
        if "tmpfs scratch" not in self.protections:
            os.chown(self.scratch, *owner)
        for source, target in self.isolate.get("binds", []):
            if self._bind(confine, source, target, usernses):
                self.idmapped.add(target)
        for userns in usernses.values():
            if userns is not None:
                os.close(userns)
        if self.idmapped:
            self.protections.append("idmapped mounts")  # the code and inputs, owned by the payload's uid
        if self.uid is not None and self.isolate.get("expose"):
            self._expose(confine, self.isolate["expose"])
        if self.landlock_rules:
            self.protections.append("landlock" if self.landlock_abi > 0 else "no landlock (the kernel has none)")

    def _idmaps(self, confine) -> dict[tuple[int, int], int | None]:
        """For each owner (uid, gid) of a code or input mount, a user namespace showing it as the
        payload's uid (None where the kernel has none to give): made before the PID namespace."""
        out: dict[tuple[int, int], int | None] = {}
        if self.uid is None:
            return out
        for source, _ in self.isolate.get("binds", []):
            st = os.stat(source)
            owner = (st.st_uid, st.st_gid)
            if owner not in out:
                try:
                    out[owner] = confine.user_namespace(owner, (self.uid, self.uid))
                except OSError:
                    out[owner] = None
        return out

    def _bind(self, confine, source: str, target: str, usernses: dict) -> bool:
        """The code or an input at ``target`` (a mount point the host made), read-only: idmapped so
        that the payload's uid owns what the host's owner owns (True), else a plain bind, else (no
        namespaces) a symlink."""
        if self.namespaces:
            st = os.stat(source)
            userns = usernses.get((st.st_uid, st.st_gid))
            if userns is not None:
                try:
                    confine.idmapped_bind(source, target, userns)
                    return True
                except OSError:
                    pass  # no idmapped mounts on this filesystem: the modes decide (``unreadable``)
            try:
                confine.bind_read_only(source, target)
                return False
            except OSError:
                pass
        if os.path.isdir(target) and not os.path.islink(target):
            os.rmdir(target)
        else:
            os.unlink(target)
        os.symlink(source, target)
        return False

    def _expose(self, confine, paths: list[str]) -> None:
        """Let the payload's uid reach the Python installation; where it cannot, say why (a Python
        payload will then fail to start, a shell one may not)."""
        try:
            if self.namespaces:
                confine.expose(paths)
                return
            for path in paths:
                closed = confine.closed_ancestor(os.path.realpath(path))
                if closed:
                    raise OSError(0, f"{closed} is closed to others and, without a mount namespace, stays so")
        except OSError as exc:
            self.unreachable = f"the payload's uid cannot reach the Python installation: {exc.strerror or exc}"
            self.protections.append(self.unreachable)

    def unreadable(self, paths: list[str]) -> str | None:
        """Why the payload's uid cannot open one of the code or input mounts, or None."""
        if self.uid is None:
            return None
        for path in paths:
            if path in self.idmapped:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            need = 0o005 if os.path.isdir(path) else 0o004
            if st.st_uid != self.uid and st.st_mode & need != need:
                kind = "directory" if need == 0o005 else "file"
                return (f"{path} (mode {st.st_mode & 0o7777:04o}) is closed to the payload's uid: "
                        f"make the {kind} readable by others (chmod o+r{'x' if need == 0o005 else ''})")
        return None

    def in_child(self, rlimits: dict, failure_fd: int) -> None:
        """Runs in the forked payload before exec: nothing here may start a thread or import.
        Any failure stops the payload from starting, and its reason goes to ``failure_fd``."""
        step = "mount /proc"
        try:
            if self.namespaces:
                try:
                    self.confine.mount_private_proc()
                except OSError:
                    pass  # the host's /proc stays visible (Landlock still hides other processes' memory)
            step = "rlimits"
            _apply_rlimits(rlimits)
            if self.uid is not None:
                step = "dropping to the payload's uid"
                self.privsep.become_payload(self.uid, self.uid, self.last_cap)
            step = "no_new_privs"
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
            self.privsep.no_new_privs()
            step = "landlock"
            if self.landlock_rules and self.landlock_abi > 0:
                self.confine.landlock_restrict(**self.landlock_rules)
            elif self.scope and self.landlock_abi >= 6:
                self.confine.landlock_scope()
            step = "seccomp"
            if self.seccomp is not None:
                self.seccomp.install()
        except BaseException as exc:
            os.write(failure_fd, f"{step}: {exc}".encode())
            raise

    def record_payload(self, pid: int) -> str | None:
        """Record the payload's credentials as the kernel holds them, right after its exec; say why
        the run must stop if they are not what was asked for."""
        status = self.privsep.payload_status(pid)
        if "Uid" not in status:
            self.protections.append("payload credentials unread (it was gone before they could be)")
            return None
        uids, gids = status["Uid"].split(), status["Gid"].split()
        self.protections.append(f"payload uid={uids[0]} gid={gids[0]} groups={status.get('Groups') or 'none'}")
        caps = " ".join(f"{k}={status[k]}" for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb") if k in status)
        self.protections.append(f"payload {caps}")
        self.protections.append("no_new_privs" if status.get("NoNewPrivs") == "1" else "no no_new_privs")
        filters = int(status.get("Seccomp_filters", "0"))
        held = self.seccomp is not None and filters > int(self.own.get("Seccomp_filters", "0"))
        self.protections.append("seccomp" if held else f"no seccomp ({self.no_seccomp})")
        if self.scope and self.landlock_abi >= 6:
            self.protections.append("landlock socket scoping")
        else:
            why = "the kernel has no Landlock" if not self.landlock_abi else \
                f"Landlock ABI {self.landlock_abi} < 6" if self.landlock_abi < 6 else "not asked for"
            self.protections.append(f"no landlock socket scoping ({why})")
        if self.uid is None:
            self.protections.append(f"no uid separation (the runner is not root: the payload shares its uid {uids[0]})")
        if "0" in uids:
            return "the payload ran as root (refused)"
        if self.uid is not None and (set(uids) != {str(self.uid)} or int(status.get("CapEff", "1"), 16)):
            return f"the payload runs as uid {status['Uid']} with CapEff {status.get('CapEff')}, not as asked (refused)"
        return None

    def kill(self, pid: int) -> None:
        """SIGKILL every process of the payload, new ones included."""
        try:
            if self.namespaces:
                os.kill(pid, signal.SIGKILL)  # PID 1 of its namespace: the kernel kills the rest
            elif self.in_container:
                os.kill(-1, signal.SIGKILL)  # everything in the container but init and this runner
            elif self.uid is not None:
                _kill_uid(self.uid)
            else:
                _kill_group(pid)
        except ProcessLookupError:
            pass

    def reap(self, payload: subprocess.Popen) -> None:
        """Return once no process of the payload is left (reaped, so none can still write)."""
        payload.wait()
        if self.namespaces:
            return  # its PID namespace is empty once its init is reaped
        if self.uid is None:
            _hunt_orphans()
            return
        while True:  # every orphan is ours (subreaper) and dead or dying
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return

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
            self.confine.leave_cgroups(self.cgroups)


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


def _prctl(option: int, value: int) -> int:
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _set_subreaper() -> None:
    """Orphans of the payload become our children, so none escapes the final sweep."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int, tries: int = 100) -> None:
    """SIGKILL every process of ``uid`` (the payload's own): a child takes that uid and calls
    kill(-1), which the kernel applies to all of them at once (under the task list lock: a fork in
    flight fails), so once is enough; if a payload process killed the child first, again."""
    for _ in range(tries):
        child = os.fork()
        if child == 0:
            try:
                os.setresuid(uid, uid, uid)
                os.kill(-1, signal.SIGKILL)
                os._exit(0)
            except ProcessLookupError:
                os._exit(0)  # none left
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(child, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            return  # else a payload process killed the sweeper first: again
    _hunt_orphans()


def _hunt_orphans() -> None:
    """SIGKILL every child we still have (reparented orphans included) until none is left."""
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


def _read_result(path: str) -> tuple[dict | None, str | None]:
    """The payload's JSON result, read once every payload process is dead: the last component may
    not be a symlink (O_NOFOLLOW) nor anything but a regular file, and no more than the cap is read."""
    import errno
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, "the payload wrote no result"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "the result is a symlink (refused)"
        return None, f"result unreadable: {exc.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "the result is not a regular file (refused)"
        chunks, size = [], 0
        while size <= RESULT_LIMIT_BYTES and (chunk := os.read(fd, RESULT_LIMIT_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > RESULT_LIMIT_BYTES:
        return None, f"result larger than {RESULT_LIMIT_BYTES} bytes"
    try:
        result = json.loads(data)
    except ValueError as exc:
        return None, f"result is not JSON: {exc}"
    if not isinstance(result, dict):
        return None, "result is not a JSON object"
    return result, None


def _read_outputs_as(uid: int | None, directory: str, quota: int) -> tuple[dict[str, str], str | None]:
    """``_read_outputs`` with the payload's uid as the effective one: a runner that dropped every
    capability but CAP_SETUID (in a container) reads the payload's files as their owner. Every
    payload process is dead by now, so nothing can act under that uid meanwhile."""
    if uid is None or os.geteuid() != 0:
        return _read_outputs(directory, quota)
    os.setresgid(-1, uid, -1)
    os.setresuid(-1, uid, -1)
    try:
        return _read_outputs(directory, quota)
    finally:
        os.setresuid(-1, 0, -1)
        os.setresgid(-1, 0, -1)


def _read_outputs(directory: str, quota: int) -> tuple[dict[str, str], str | None]:
    """The files the payload left in its output directory, base64, once every payload process is
    dead: regular files only (a symlink or anything else is refused, never followed), at most
    ``OUTPUT_FILES`` of them and ``quota`` bytes in all."""
    try:
        return _walk_outputs(directory, quota)
    except OSError as exc:  # a file the payload made unreadable, even to itself
        return {}, f"output unreadable: {exc.strerror}: {os.path.relpath(exc.filename or directory, directory)}"


def _walk_outputs(directory: str, quota: int) -> tuple[dict[str, str], str | None]:
    import base64
    import stat

    out: dict[str, str] = {}
    total = 0
    if not os.path.isdir(directory) or os.path.islink(directory):
        return out, None
    for root, dirs, files in os.walk(directory, followlinks=False, onerror=_raise):
        for name in sorted(dirs):
            if os.path.islink(os.path.join(root, name)):
                return {}, f"output {name!r} is a symlink (refused)"
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                return {}, f"output {rel!r} is a symlink (refused)"
            if not stat.S_ISREG(info.st_mode):
                return {}, f"output {rel!r} is not a regular file (refused)"
            total += info.st_size
            if total > quota:
                return {}, f"output quota exceeded: more than {quota} bytes written to the output directory"
            if len(out) >= OUTPUT_FILES:
                return {}, f"more than {OUTPUT_FILES} output files"
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                data = b""
                while len(data) <= info.st_size and (chunk := os.read(fd, 1 << 20)):
                    data += chunk
            finally:
                os.close(fd)
            if len(data) != info.st_size:
                return {}, f"output {rel!r} changed while it was read"
            out[rel] = base64.b64encode(data).decode("ascii")
    return out, None


def _raise(error: OSError) -> None:
    raise error


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
