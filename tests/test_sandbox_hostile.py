"""Hostile payloads against both sandbox backends: each must be contained, the outcome recorded,
the host unharmed, and no process or container left behind.

The Docker cases skip (with the reason) where no engine answers or the image is missing or stale.
"""

from __future__ import annotations

import os
import socket
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from selfloop.core.config import SandboxSettings
from selfloop.sandbox import choose_backend
from selfloop.sandbox.base import LABEL

BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker)]


def make_sandbox(kind: str, **overrides):
    settings = SandboxSettings(backend=kind, timeout_s=20, memory_mb=256, pids=64, scratch_mb=16,
                               log_limit_bytes=4096, output_limit_bytes=1 << 20, **overrides)
    if kind == "docker":
        from selfloop.sandbox.docker_backend import DockerSandbox

        usable, why = DockerSandbox.availability(settings)
        if not usable:
            pytest.skip(why)
    return choose_backend(settings)


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker`` (container processes are host processes too)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def labelled_containers() -> list:
    """Sandbox containers this test process made (another selfloop on the host may have its own)."""
    import docker

    owner = f"{LABEL}.owner={os.uname().nodename}:{os.getpid()}"
    return docker.from_env().containers.list(all=True, filters={"label": [LABEL, owner]})


@pytest.fixture(params=BACKENDS)
def hostile(request, tmp_path):
    """Run a payload script in a fresh sandbox; afterwards check nothing of it survives."""
    kind = request.param
    marker = f"hostile-{uuid.uuid4().hex[:12]}"
    code = tmp_path / "code"
    code.mkdir()

    def run(source: str, timeout_s: float = 20, env: dict | None = None, **overrides):
        script = code / f"{marker}.py"
        script.write_text(textwrap.dedent(source))
        sandbox = make_sandbox(kind, **overrides)
        run.engine = run.engine or kind == "docker"  # only now is there an engine to ask in teardown
        start = f"import os, runpy; runpy.run_path(os.environ['SELFLOOP_CODE'] + '/{marker}.py', run_name='__main__')"
        return sandbox.run(["python", "-c", start, marker], code_dir=code, env=env or {}, timeout_s=timeout_s)

    def needs(*layers: str) -> None:
        """Skip on the process backend where the kernel lacks a layer this containment relies on."""
        if kind == "process":
            from selfloop.sandbox.process_backend import ProcessSandbox

            missing = [layer for layer in layers if not ProcessSandbox.layers()[layer]]
            if missing:
                pytest.skip(f"the process backend has no {', '.join(missing)} on this machine")

    run.kind, run.marker, run.tmp, run.needs, run.engine = kind, marker, tmp_path, needs, False
    yield run
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == [], "a payload process survived its sandbox"
    if run.engine:
        assert labelled_containers() == [], "a sandbox container was left behind"


def test_host_environment_secrets_stay_out(hostile, monkeypatch):
    hostile.needs("landlock")  # /proc/PID/environ of host processes
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SELFLOOP_TEST_API_KEY", secret)
    result = hostile("""
        import json, os
        found = [k for k, v in os.environ.items() if v.startswith("secret-")]
        leaked = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    if b"SELFLOOP_TEST_API_KEY" in open(f"/proc/{pid}/environ", "rb").read():
                        leaked.append(pid)
                except OSError:
                    pass
        json.dump({"env": found, "proc": leaked}, open(os.environ["SELFLOOP_RESULT"], "w"))
    """)
    assert result.status == "ok", result.reason
    assert result.result == {"env": [], "proc": []}
    assert secret not in result.stdout + result.stderr


def test_no_connection_to_host_loopback(hostile):
    hostile.needs("namespaces")
    accepted = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        result = hostile(f"""
            import json, os, socket
            outcomes = {{}}
            for host in ("127.0.0.1", "::1", "localhost", "172.17.0.1"):
                try:
                    socket.create_connection((host, {port}), timeout=2).close()
                    outcomes[host] = "connected"
                except OSError as exc:
                    outcomes[host] = type(exc).__name__
            json.dump(outcomes, open(os.environ["SELFLOOP_RESULT"], "w"))
        """)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert result.status == "ok", result.reason
    assert "connected" not in result.result.values()
    assert accepted == []


def test_no_write_outside_the_scratch(hostile):
    hostile.needs("landlock")
    import selfloop.core

    outside = hostile.tmp / "outside"
    outside.mkdir()
    core_dir = Path(selfloop.core.__file__).parent
    targets = ["$SELFLOOP_CODE/evil.txt", str(outside / "evil.txt"), f"/tmp/{hostile.marker}.txt",
               str(core_dir / f"{hostile.marker}.py"), "/etc/selfloop-evil"]
    result = hostile(f"""
        import json, os
        written = []
        for target in {targets!r}:
            target = os.path.expandvars(target)
            try:
                with open(target, "w") as f:
                    f.write("pwned")
                written.append(target)
            except OSError:
                pass
        json.dump({{"written": written}}, open(os.environ["SELFLOOP_RESULT"], "w"))
    """)
    assert result.status == "ok", result.reason
    assert result.result == {"written": []}
    assert not (hostile.tmp / "code" / "evil.txt").exists()
    assert not (outside / "evil.txt").exists()
    assert not Path(f"/tmp/{hostile.marker}.txt").exists()
    assert not (core_dir / f"{hostile.marker}.py").exists()


def test_host_files_stay_unread(hostile):
    hostile.needs("landlock")
    planted = hostile.tmp / "host-secret.txt"
    secret = f"planted-{uuid.uuid4().hex}"
    planted.write_text(secret)
    others = ["/etc/shadow", "/root/.bash_history", "/root/.profile"]
    result = hostile(f"""
        import json, os
        read = {{}}
        for path in {[str(planted), *others]!r}:
            try:
                read[path] = open(path, errors="replace").read()
            except OSError:
                pass
        json.dump({{"read": read}}, open(os.environ["SELFLOOP_RESULT"], "w"))
    """)
    assert result.status == "ok", result.reason
    read = result.result["read"]
    assert str(planted) not in read
    for path in others:  # a container has its own /etc/shadow; the host's must not show through
        if path in read and os.path.exists(path):
            assert read[path] != Path(path).read_text(errors="replace"), f"host {path} was read"
    assert secret not in result.stdout + result.stderr


def test_fork_bomb_is_contained(hostile):
    if os.geteuid() == 0:
        hostile.needs("cgroups")  # RLIMIT_NPROC does not bind root
    result = hostile("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """, timeout_s=3)
    assert result.status in ("timeout", "limit", "error", "oom")
    assert result.status != "ok"


def test_unbounded_memory_is_an_oom(hostile):
    result = hostile("""
        blocks = []
        while True:
            blocks.append(b"\\1" * (16 << 20))
    """, timeout_s=20)
    assert result.status == "oom", (result.status, result.reason, result.stderr[-300:])


def test_spinning_past_the_timeout(hostile):
    started = time.monotonic()
    result = hostile("""
        while True:
            pass
    """, timeout_s=2)
    assert result.status == "timeout"
    assert time.monotonic() - started < 10


def test_printing_gigabytes_is_cut_off(hostile):
    result = hostile("""
        import sys
        line = "x" * 65535 + "\\n"
        while True:
            sys.stdout.write(line)
    """, timeout_s=20)
    assert result.status == "limit", (result.status, result.reason)
    assert result.stdout_truncated and result.truncated
    assert len(result.stdout) <= 4096


def test_filling_the_scratch_stops_at_its_size(hostile):
    hostile.needs("namespaces")  # the private tmpfs
    result = hostile("""
        import json, os
        written, error = 0, None
        block = b"\\0" * (1 << 20)
        try:
            for i in range(1000):
                with open(f"fill-{i}", "wb") as f:
                    f.write(block)
                written += len(block)
        except OSError as exc:
            error = exc.strerror
            for name in (f"fill-{i}", "fill-0"):  # room for the result
                os.remove(name)
        json.dump({"written": written, "error": error}, open(os.environ["SELFLOOP_RESULT"], "w"))
    """)
    assert result.status == "ok", result.reason
    assert result.result["error"] is not None
    assert result.result["written"] <= 16 << 20


def test_children_left_behind_are_killed(hostile):
    result = hostile("""
        import json, os, subprocess, sys
        marker = sys.argv[1]
        # a daemon in its own session, double-forked, holding no pipe of ours
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker],
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", marker])
            os._exit(0)
        json.dump({"spawned": True}, open(os.environ["SELFLOOP_RESULT"], "w"))
    """)
    assert result.status == "ok", result.reason
    assert result.result == {"spawned": True}


def test_ignoring_sigterm_does_not_help(hostile):
    result = hostile("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(0.1)
    """, timeout_s=2)
    assert result.status == "timeout"


def test_ctrl_c_on_the_host_leaves_nothing(hostile):
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 2.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            hostile("""
                import time
                time.sleep(600)
            """, timeout_s=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
