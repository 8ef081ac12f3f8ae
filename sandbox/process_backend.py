"""The process backend: for machines without a Docker engine.

The payload runs as a host subprocess under the sandbox runner, with every layer the kernel allows:

- its own unprivileged uid and gid (``privsep.PAYLOAD_UID_BASE`` + the runner's pid) when the host
  runs as root, no capabilities in any set, no_new_privs, and a seccomp filter that also refuses
  every AF_UNIX socket (see ``privsep``); the runner is non-dumpable and its report is signed;
- a scrubbed environment and a fresh temporary working directory;
- rlimits on CPU time, open files, file size, core dumps and processes (per uid: the payload's own);
- new mount, PID and network namespaces (a user namespace too when not root): no network at all,
  a size-limited private tmpfs as the scratch (owned by the payload's uid; and /dev/shm), an empty
  private /run and /var/run, the code and inputs bound read-only under the run's directory (the
  payload's uid need not traverse the host directories above them), a /proc that lists only the
  payload's own processes, and every process of the payload dies with it;
- memory and pids cgroups (cgroup v1, as root): real out-of-memory kills and a process ceiling;
- Landlock: reads only beneath the system, the Python installation, selfloop's packages, the code
  and the inputs; writes only in the scratch; no TCP; no signals, abstract Unix sockets or /proc
  access outside (ABI 6+ for the scoping).

What it cannot guarantee, compared with Docker: the payload shares the host kernel and filesystem
view (read-only where Landlock holds); where a layer is unavailable (no unprivileged user
namespaces, no Landlock, no seccomp, no writable cgroups, not root) its protection is simply absent —
``Sandbox.run`` reports the layers that held in ``SandboxResult.protections``, and ``selfloop
sandbox check`` lists them. An unprivileged host cannot give the payload a uid of its own (it runs
as the host user, never root). World-readable system files (/usr, /etc/passwd) stay readable, and
without Landlock so are world-readable files elsewhere, and /tmp and /var/tmp writable; the code and
inputs must be readable by others (the runner refuses a run whose mount is not, saying which);
without a memory cgroup the memory ceiling is RLIMIT_DATA, which counts heap but not every mapping;
there are no CPU shares, only a CPU-time limit.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from selfloop.core.config import SandboxSettings

from . import confine
from .base import HOST_GRACE_S, Sandbox, SandboxResult
from .integrity import PROTECTED_PACKAGES, SELFLOOP_PACKAGES, package_dir
from .privsep import seccomp_program
from .runner import new_key, runner_command

SYSTEM_READ = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/proc", "/sys",
               "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full",
               "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
               "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/os-release",
               "/etc/ssl", "/etc/alternatives", "/etc/mime.types", "/usr/share/zoneinfo"]
SYSTEM_WRITE = ["/dev/null", "/dev/full", "/dev/zero"]
READ_LIMIT_BYTES = 64 << 20  # of the runner's own stdout: its report is far smaller


class ProcessSandbox(Sandbox):
    name = "process"

    @classmethod
    def availability(cls, settings: SandboxSettings) -> tuple[bool, str]:
        if not sys.platform.startswith("linux"):
            return False, f"the process sandbox needs Linux, not {sys.platform}"
        layers = cls.layers()
        held = [name for name, ok in layers.items() if ok]
        missing = [name for name, ok in layers.items() if not ok]
        why = "subprocess with " + ", ".join(held)
        if missing:
            why += "; lacking " + ", ".join(missing)
        return True, why

    @staticmethod
    def layers() -> dict[str, bool]:
        """Which confinement layers this machine offers (a cheap probe, no payload run)."""
        root = os.geteuid() == 0
        userns = Path("/proc/sys/user/max_user_namespaces")
        namespaces = root or (userns.exists() and userns.read_text().strip() != "0")
        cgroup = root and (confine.CGROUP_V1 / "memory" / "memory.limit_in_bytes").exists()
        seccomp = "Seccomp:" in Path("/proc/self/status").read_text() and seccomp_program(os.uname().machine) is not None
        abi = confine.landlock_abi()
        return {"uid separation": root, "rlimits": True, "namespaces": namespaces, "cgroups": cgroup,
                "seccomp": seccomp, "landlock": abi > 0, "landlock socket scoping": abi >= 6}

    def sweep(self) -> int:
        """Remove the cgroups that killed runners left; return how many went."""
        return confine.sweep_cgroups()

    def run(self, command, *, code_dir, inputs=None, env=None, timeout_s=None,
            output_quota_bytes=None) -> SandboxResult:
        code_dir, inputs = self._check_arguments(command, code_dir, inputs)
        timeout_s = float(timeout_s if timeout_s is not None else self.settings.timeout_s)
        workdir = Path(tempfile.mkdtemp(prefix="selfloop-sandbox-"))
        try:
            return self._run_in(workdir, command, code_dir, inputs, env, timeout_s, output_quota_bytes)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run_in(self, workdir, command, code_dir, inputs, env, timeout_s, output_quota_bytes=None) -> SandboxResult:
        workdir.chmod(0o711)  # the payload's uid may pass through to its mounts, not list the directory
        scratch = workdir / "scratch"
        code_at = workdir / "code"
        inputs_dir = workdir / "inputs"
        for directory in (scratch, code_at, inputs_dir):
            directory.mkdir()
        inputs_at = {}
        for name, path in inputs.items():  # mount points: the runner binds each input over its own
            target = inputs_dir / name
            target.mkdir() if path.is_dir() else target.touch()
            inputs_at[name] = str(target)
        result_path = scratch / "result.json"
        path_var = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
        environment = self._environment(env, str(code_at), str(result_path), inputs_at,
                                        str(inputs_dir), str(scratch), path_var)
        plugin_paths = self._plugin_paths()
        if plugin_paths:  # the user's plugin distributions outside the Python installation
            environment["PYTHONPATH"] = os.pathsep.join(plugin_paths)
        layers = self.layers()
        rlimits = self._rlimits(timeout_s)
        rlimits["nproc"] = self.settings.pids  # counts the payload's uid: its own, when root
        if not layers["cgroups"]:
            rlimits["data_bytes"] = self.settings.memory_mb << 20
        binds = [[str(code_dir), str(code_at)]] + [[str(inputs[name]), inputs_at[name]] for name in inputs]
        isolate = {
            "namespaces": layers["namespaces"], "scratch_mb": self.settings.scratch_mb, "binds": binds,
            "expose": self._python_dirs() + plugin_paths,
            "cgroup": {"memory_bytes": self.settings.memory_mb << 20, "pids": self.settings.pids}
            if layers["cgroups"] else None,
            "landlock": {"read": self._readable(code_at, inputs_dir) + plugin_paths,
                         "write": [str(scratch)] + SYSTEM_WRITE + ["/dev/shm"] * layers["namespaces"]}
            if layers["landlock"] else None,
        }
        manifest = self._manifest_for(code_dir, inputs, str(code_at), inputs_at)
        package_dirs = {package: str(package_dir(package)) for package in PROTECTED_PACKAGES}
        spec = self._spec(command, timeout_s, str(scratch), str(result_path), manifest, package_dirs,
                          rlimits, isolate,
                          integrity_hint=" (a protected file changed on the host since the run began)",
                          output_quota_bytes=output_quota_bytes,
                          payload_uid="per-run" if layers["uid separation"] else None,
                          readable=[str(code_at), *inputs_at.values()])
        runner = runner_command(sys.executable, package_dirs["selfloop.sandbox"], spec)
        return self._execute(runner, environment, scratch, timeout_s, READ_LIMIT_BYTES + 2 * (output_quota_bytes or 0))

    @staticmethod
    def _python_dirs() -> list[str]:
        """The Python installation and selfloop's packages: what the payload's interpreter reads."""
        python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sysconfig.get_paths()["purelib"],
                  sysconfig.get_paths()["platlib"], str(Path(sys.executable).resolve().parent.parent)}
        return sorted(python) + [str(package_dir(f"selfloop.{p}")) for p in SELFLOOP_PACKAGES]

    def _plugin_paths(self) -> list[str]:
        """Import-path entries of the host's plugin distributions that the Python installation
        does not hold (PYTHONPATH, ``pip install --target``): read-only for the payload too."""
        from .plugin_dists import path_entries

        python = [os.path.realpath(p) for p in self._python_dirs()]
        return [p for p in path_entries()
                if not any(p == d or p.startswith(d + os.sep) for d in python)]

    def _readable(self, code_at: Path, inputs_dir: Path) -> list[str]:
        return self._python_dirs() + SYSTEM_READ + [str(code_at), str(inputs_dir)]

    def _execute(self, runner: list[str], environment: dict, scratch: Path, timeout_s: float,
                 read_limit: int = READ_LIMIT_BYTES) -> SandboxResult:
        started = time.monotonic()
        key = new_key()
        process = subprocess.Popen(runner, cwd=scratch, env=environment, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:  # the report key, on a pipe only the runner holds: it reads it, then closes it
            process.stdin.write(f"{key}\n".encode())
            process.stdin.close()
        except BrokenPipeError:
            pass  # the runner died at once: its report will be missing
        out: dict[str, bytes] = {}
        readers = [threading.Thread(target=_read_capped, args=(getattr(process, n), out, n, read_limit),
                                    daemon=True)
                   for n in ("stdout", "stderr")]
        for reader in readers:
            reader.start()
        killed = None
        try:
            if not wait_for_exit(process, timeout_s + HOST_GRACE_S):
                killed = f"timeout: the runner outlived its {timeout_s:g} s deadline and was killed"
        finally:  # also on KeyboardInterrupt: the payload dies with the runner (PDEATHSIG)
            if process.poll() is None:
                _kill_group(process.pid)
                process.wait()
            # in the background: rmdir succeeds only once the kernel has let go of the payload
            threading.Thread(target=confine.remove_run_cgroups, args=(process.pid,)).start()
        for reader in readers:
            reader.join()
        return self._result_from_report(out.get("stdout", b"").decode("utf-8", "replace"),
                                        out.get("stderr", b"").decode("utf-8", "replace"), started, key,
                                        process.returncode, killed)


def wait_for_exit(process: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for ``process`` to exit, at most ``timeout_s``; True if it did. (``Popen.wait`` with a
    timeout polls with sleeps of up to 50 ms; a pidfd wakes at once.)"""
    with open(os.pidfd_open(process.pid), "rb", buffering=0) as pidfd:
        if not select.select([pidfd], [], [], timeout_s)[0]:
            return False
    process.wait()
    return True


def _read_capped(stream, out: dict, name: str, limit: int = READ_LIMIT_BYTES) -> None:
    kept = bytearray()
    while chunk := stream.read1(1 << 16):
        if len(kept) < limit:
            kept += chunk
    out[name] = bytes(kept)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

