"""Hostile payloads against both sandbox backends: each must be contained, the outcome recorded,
the host unharmed, and no process or container left behind.

The Docker cases skip (with the reason) where no engine answers or the image is missing or stale.
"""

from __future__ import annotations

import json
import os
import shutil
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


# --- privilege separation, forged reports, host sockets --------------------------------------------

IDENTITY = textwrap.dedent("""
    def identity():
        status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
        keys = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
        return {key: status.get(key, "").strip() for key in keys}
""")


def with_identity(source: str) -> str:
    """The payload ``source`` with ``identity()``: its credentials as the kernel shows them to it."""
    return IDENTITY + textwrap.dedent(source)


def assert_unprivileged(result, seen: dict) -> None:
    """The payload saw a non-root uid of its own with no capability, and ``protections`` says the same."""
    uids = seen["Uid"].split()
    assert "0" not in uids and len(set(uids)) == 1, seen
    if os.geteuid() == 0:  # the runner's uid (root); an unprivileged host cannot give the payload another
        assert seen["Groups"] == "", seen
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(seen[caps], 16) == 0, (caps, seen[caps])
    assert seen["NoNewPrivs"] == "1"
    assert f"payload uid={uids[0]} gid={seen['Gid'].split()[0]} groups=none" in result.protections
    assert ("payload CapInh=0000000000000000 CapPrm=0000000000000000 CapEff=0000000000000000 "
            "CapBnd=0000000000000000 CapAmb=0000000000000000") in result.protections
    assert "no_new_privs" in result.protections


def test_payload_runs_unprivileged(hostile):
    result = hostile(with_identity("""
        import ctypes, json, os
        outcomes = {}
        for name, attempt in (("setuid(0)", lambda: os.setuid(0)), ("setgid(0)", lambda: os.setgid(0)),
                              ("chown", lambda: os.chown(".", 0, 0))):
            try:
                attempt()
                outcomes[name] = "done"
            except OSError as exc:
                outcomes[name] = type(exc).__name__
        json.dump({"identity": identity(), "outcomes": outcomes}, open(os.environ["SELFLOOP_RESULT"], "w"))
    """))
    assert result.status == "ok", result.reason
    assert_unprivileged(result, result.result["identity"])
    assert set(result.result["outcomes"].values()) == {"PermissionError"}
    assert ("seccomp" in result.protections) == (result.result["identity"]["Seccomp"] == "2")


def test_kernel_interfaces_are_denied(hostile):
    result = hostile(with_identity("""
        import ctypes, json, os, platform
        libc = ctypes.CDLL(None, use_errno=True)
        x86 = platform.machine() == "x86_64"
        calls = {  # name: (x86_64 number, aarch64 number, arguments)
            "unshare(CLONE_NEWUSER)": (272, 97, (0x10000000,)), "mount": (165, 40, (b"none", b"/tmp", b"tmpfs", 0, None)),
            "ptrace(PTRACE_ATTACH, 1)": (101, 117, (16, 1, 0, 0)), "bpf": (321, 280, (0, 0, 0)),
            "keyctl": (250, 219, (0, 0, 0)), "perf_event_open": (298, 241, (0, 0, -1, -1, 0)),
            "init_module": (175, 105, (0, 0, b"")), "kexec_load": (246, 104, (0, 0, 0, 0)),
            "setns": (308, 268, (0, 0)), "process_vm_readv": (310, 270, (1, 0, 0, 0, 0, 0)),
            "userfaultfd": (323, 282, (0,)), "io_uring_setup": (425, 425, (1, 0)),
        }
        outcomes = {}
        for name, (on_x86, on_arm, args) in calls.items():
            returned = libc.syscall(on_x86 if x86 else on_arm, *args)
            outcomes[name] = "done" if returned >= 0 else os.strerror(ctypes.get_errno())
        json.dump({"identity": identity(), "outcomes": outcomes}, open(os.environ["SELFLOOP_RESULT"], "w"))
    """))
    assert result.status == "ok", result.reason
    assert_unprivileged(result, result.result["identity"])
    if "seccomp" not in result.protections:
        pytest.skip(f"no seccomp filter here: {result.protections}")
    assert result.result["outcomes"] == dict.fromkeys(result.result["outcomes"], "Operation not permitted")


TOUCH_THE_RUNNER = with_identity("""
    import ctypes, json, os, signal
    fake = '@@selfloop-sandbox-report@@ ' + '0' * 64 + ' {"status": "ok", "result": {"score": 1e9}}'
    me, outcomes = os.getpid(), {}
    others = sorted(({os.getppid(), 1} | {int(p) for p in os.listdir("/proc") if p.isdigit()}) - {me, 0})
    libc = ctypes.CDLL(None, use_errno=True)
    for pid in others:
        for name, attempt in (
            ("write fd 1", lambda: open(f"/proc/{pid}/fd/1", "w").write("\\n" + fake + "\\n")),
            ("write fd 2", lambda: open(f"/proc/{pid}/fd/2", "w").write("\\n" + fake + "\\n")),
            ("read fd 0", lambda: open(f"/proc/{pid}/fd/0", "rb").read(64)),
            ("list fds", lambda: os.listdir(f"/proc/{pid}/fd")),
            ("read environ", lambda: open(f"/proc/{pid}/environ", "rb").read()),
            ("read mem", lambda: open(f"/proc/{pid}/mem", "rb").read(1)),
            ("ptrace", lambda: libc.ptrace(16, pid, 0, 0) == 0 or 1 / 0),
            ("SIGSTOP", lambda: os.kill(pid, signal.SIGSTOP)),
            ("SIGKILL", lambda: os.kill(pid, signal.SIGKILL)),
        ):
            try:
                attempt()
                outcomes[f"{pid} {name}"] = "done"
            except (OSError, ZeroDivisionError) as exc:
                outcomes[f"{pid} {name}"] = type(exc).__name__
    try:
        os.kill(-1, signal.SIGKILL)  # everything this uid may signal (kill(-1) spares the caller)
    except ProcessLookupError:
        pass  # nothing it may signal
    print(fake)  # on its own stdout: that is payload output, not a report
    json.dump({"identity": identity(), "others": others, "ppid": os.getppid(), "outcomes": outcomes},
              open(os.environ["SELFLOOP_RESULT"], "w"))
""")


def assert_untouched(result) -> None:
    assert result.status == "ok", (result.reason, result.stderr[-2000:])  # the runner lived to report
    assert_unprivileged(result, result.result["identity"])
    done = [attempt for attempt, outcome in result.result["outcomes"].items() if outcome == "done"]
    assert done == [], done
    assert result.result.get("score") is None and "@@selfloop-sandbox-report@@" in result.stdout


def test_payload_cannot_touch_the_runner(hostile):
    result = hostile(TOUCH_THE_RUNNER)
    assert_untouched(result)
    if hostile.kind == "docker":  # init and the runner were in sight, and untouched
        assert {1, result.result["ppid"]} <= set(result.result["others"])
    elif "namespaces" in result.protections:  # PID 1 of a namespace of its own: nothing in sight
        assert result.result["others"] == []


TOUCH_THE_RUNNER_SH = r"""
fake='@@selfloop-sandbox-report@@ 0000 {"status": "ok", "result": {"score": 1e9}}'
me=$(id -u); others=""; done=""
for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$(stat -c %u "$dir" 2>/dev/null)" = "$me" ] && continue  # its own processes
    others="$others $pid"
    (printf '
%s
' "$fake" > "$dir/fd/1") 2>/dev/null && done="$done $pid:fd1"
    (printf '
%s
' "$fake" > "$dir/fd/2") 2>/dev/null && done="$done $pid:fd2"
    (head -c 64 "$dir/fd/0" > /dev/null) 2>/dev/null && done="$done $pid:fd0"
    (ls "$dir/fd" > /dev/null) 2>/dev/null && done="$done $pid:lsfd"
    (head -c 1 "$dir/environ" > /dev/null) 2>/dev/null && done="$done $pid:environ"
    kill -STOP "$pid" 2>/dev/null && done="$done $pid:SIGSTOP"
    kill -KILL "$pid" 2>/dev/null && done="$done $pid:SIGKILL"
done
identity=$(awk '/^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):/ {
    key = $1; sub(/:$/, "", key); sub(/^[^\t]*:\t*/, ""); gsub(/\t/, " "); sub(/ +$/, "")
    printf "%s\"%s\": \"%s\"", sep, key, $0; sep = ", " }' /proc/self/status)
printf '{"identity": {%s}, "ppid": %s, "others": "%s", "done": "%s"}' \
    "$identity" "$PPID" "$others" "$done" > "$SELFLOOP_RESULT"
echo "$fake"
"""


@pytest.mark.parametrize("hostile", ["process"], indirect=True)  # Docker: test_payload_cannot_touch_the_runner
def test_runner_in_sight_is_still_untouchable(hostile, monkeypatch):
    """The process backend without namespaces: the runner is the payload's parent, in plain sight;
    the payload's own uid and a non-dumpable runner (and Landlock, where it holds) keep it out.
    (A shell payload: without a mount namespace a Python installed under /root stays out of reach.)"""
    from selfloop.sandbox.process_backend import ProcessSandbox

    layers = ProcessSandbox.layers()
    if not layers["uid separation"]:
        pytest.skip("the host does not run as root: the payload shares the runner's uid")
    monkeypatch.setattr(ProcessSandbox, "layers", staticmethod(lambda: {**layers, "namespaces": False}))
    sandbox = make_sandbox("process")
    result = sandbox.run(["sh", "-c", TOUCH_THE_RUNNER_SH, hostile.marker], code_dir=hostile.tmp / "code")
    assert result.status == "ok", (result.reason, result.stderr[-2000:])
    assert "namespaces" not in result.protections
    assert_unprivileged(result, result.result["identity"])
    assert str(result.result["ppid"]) in result.result["others"].split()  # the runner, in sight
    assert result.result["done"] == ""


FORGERS = {
    # what a payload achieved when it ran as the runner's uid: a report line on the runner's own
    # stdout, then the runner killed (here, a stand-in runner does both to itself)
    "line then runner killed": "import os, signal, sys; print(sys.argv[1], flush=True); os.kill(os.getpid(), signal.SIGKILL)",
    "line then child kills parent": (
        "import os, signal, sys, time\n"
        "if os.fork() == 0:\n"
        "    print(sys.argv[1], flush=True); os.kill(os.getppid(), signal.SIGKILL); os._exit(0)\n"
        "time.sleep(30)"),
    "line then clean exit": "import sys; print(sys.argv[1])",
    "guessed key": "import hashlib, hmac, sys; body = sys.argv[1].split(' ', 2)[2]; "
                   "print('@@selfloop-sandbox-report@@', hmac.new(b'0' * 64, body.encode(), hashlib.sha256).hexdigest(), body)",
}


@pytest.mark.parametrize("forger", FORGERS)
@pytest.mark.parametrize("kind", BACKENDS)
def test_forged_reports_are_not_authenticated(kind, forger, tmp_path, monkeypatch):
    """Whatever reaches the runner's stdout without the run's key, however the runner ends, is refused."""
    from selfloop.sandbox import docker_backend, process_backend

    body = json.dumps({"status": "ok", "exit_code": 0, "reason": None, "result": {"score": 1e9},
                       "stdout": "", "stderr": "", "stdout_truncated": False, "stderr_truncated": False,
                       "protections": []})
    line = f"@@selfloop-sandbox-report@@ {'0' * 64} {body}"
    backend = docker_backend if kind == "docker" else process_backend
    monkeypatch.setattr(backend, "runner_command",
                        lambda python, _dir, _spec: [python, "-c", FORGERS[forger], line])
    sandbox = make_sandbox(kind)
    result = sandbox.run(["true"], code_dir=tmp_path)
    assert result.status == "error" and result.result is None, result
    assert result.reason.startswith("report not authenticated"), result.reason


def test_result_written_after_exit_is_not_read(hostile):
    result = hostile("""
        import json, os, sys, time
        path = os.environ["SELFLOOP_RESULT"]
        json.dump({"genuine": True}, open(path, "w"))
        if os.fork() == 0:  # left behind, in a session of its own: writes once the payload has exited
            os.setsid()
            parent = os.getppid()
            while os.getppid() == parent:
                time.sleep(0.001)
            while True:
                with open(path + ".new", "w") as f:
                    f.write('{"forged": true}')
                os.replace(path + ".new", path)
                for fd in (1, 2):
                    try:
                        os.write(fd, b"\\n@@selfloop-sandbox-report@@ forged {}\\n")
                    except OSError:
                        pass
        os._exit(0)
    """)
    assert result.status == "ok", result.reason
    assert result.result in ({"genuine": True}, {"forged": True})  # whole, as on disk once all were dead


@pytest.mark.parametrize("swap", ["symlink", "fifo", "oversized"])
def test_result_file_tricks_are_refused(hostile, swap):
    secret = hostile.tmp / "code" / "planted.json"
    secret.write_text('{"planted": true}')
    result = hostile(f"""
        import json, os
        path = os.environ["SELFLOOP_RESULT"]
        if {swap!r} == "symlink":
            os.symlink(os.environ["SELFLOOP_CODE"] + "/planted.json", path)
        elif {swap!r} == "fifo":
            os.mkfifo(path)
        else:
            with open(path, "w") as f:
                f.write('{{"pad": "' + "x" * (5 << 20) + '"}}')
    """)
    assert result.status == "ok" and result.result is None, result
    expected = {"symlink": "symlink", "fifo": "not a regular file", "oversized": "larger than"}[swap]
    assert expected in result.reason, result.reason


def test_another_runs_scratch_stays_unread(hostile):
    """A second run, alive alongside, keeps a secret in its scratch; the first cannot reach it."""
    secret = f"run-b-{uuid.uuid4().hex}"
    other_code = hostile.tmp / "other"
    other_code.mkdir()
    release = hostile.tmp / "release"
    release.mkdir()
    (other_code / f"{hostile.marker}-b.py").write_text(textwrap.dedent("""
        import json, os, time
        open("secret.txt", "w").write(os.environ["SECRET"])
        json.dump({"secret": os.environ["SECRET"]}, open(os.environ["SELFLOOP_RESULT"], "w"))
        deadline = time.monotonic() + 30
        while not os.path.exists(os.environ["SELFLOOP_INPUT_RELEASE"] + "/go") and time.monotonic() < deadline:
            time.sleep(0.05)
    """))
    other = make_sandbox(hostile.kind)
    code_at = "import os, runpy; runpy.run_path(os.environ['SELFLOOP_CODE'] + '/{}-b.py')".format(hostile.marker)
    done = {}
    thread = threading.Thread(target=lambda: done.setdefault("b", other.run(
        ["python", "-c", code_at], code_dir=other_code, inputs={"release": release}, env={"SECRET": secret})))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not any(secret in _read(p) for p in Path("/proc").glob("[0-9]*/cwd/secret.txt")):
            assert time.monotonic() < deadline, "the other run never wrote its secret"
            time.sleep(0.05)  # the host, as root, can see it: now it exists to be stolen
        result = hostile("""
            import glob, json, os
            seen = {}
            for pattern in ("/tmp/selfloop-sandbox-*/scratch/*", "/tmp/selfloop-sandbox-*/*/*",
                            "/proc/*/cwd/*", "/proc/*/root/scratch/*", "/proc/*/root/tmp/selfloop-sandbox-*/scratch/*",
                            "/scratch/*", os.getcwd() + "/../../*/scratch/*"):
                for path in glob.glob(pattern):
                    try:
                        seen[path] = open(path, errors="replace").read(200)
                    except OSError as exc:
                        seen[path] = type(exc).__name__
            json.dump({"seen": seen}, open(os.environ["SELFLOOP_RESULT"], "w"))
        """)
    finally:
        (release / "go").touch()
        thread.join()
    assert done["b"].status == "ok" and done["b"].result == {"secret": secret}, done["b"]
    assert result.status == "ok", result.reason
    assert not [path for path, text in result.result["seen"].items() if secret in text], result.result["seen"]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


HOST_SOCKETS = ["/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                "/run/docker/containerd/containerd.sock", "/run/dbus/system_bus_socket", "/run/systemd/private"]


def test_host_unix_sockets_are_out_of_reach(hostile):
    engine = "/var/run/docker.sock"
    if not os.path.exists(engine):
        pytest.skip("no Docker engine socket on this host to aim at")
    probe = socket.socket(socket.AF_UNIX)
    probe.settimeout(5)
    try:  # the target is live: the host itself is answered
        probe.connect(engine)
        probe.sendall(b"GET /version HTTP/1.0\r\n\r\n")
        assert probe.recv(12).startswith(b"HTTP/1.")
    finally:
        probe.close()
    abstract = f"\0selfloop-test-{hostile.marker}"
    listening_dir = Path(f"/tmp/{hostile.marker}-sockets")  # any uid may get there, and connect
    listening_dir.mkdir()
    listening_dir.chmod(0o777)
    servers = []
    for address in (abstract, str(listening_dir / "open.sock")):
        server = socket.socket(socket.AF_UNIX)
        server.bind(address)
        server.listen()
        server.settimeout(0.2)
        servers.append(server)
    (listening_dir / "open.sock").chmod(0o777)  # anyone may connect: only the sandbox stops it
    accepted, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            for server in servers:
                try:
                    accepted.append(server.accept())
                except OSError:
                    pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    targets = HOST_SOCKETS + [str(listening_dir / "open.sock"), abstract]
    try:
        result = hostile(with_identity(f"""
            import json, os, socket
            outcomes = {{}}
            for target in {targets!r}:
                try:
                    client = socket.socket(socket.AF_UNIX)
                    client.settimeout(2)
                    client.connect(target)
                    client.sendall(b"GET /version HTTP/1.0\\r\\n\\r\\n")
                    outcomes[target] = "connected: " + client.recv(64).decode(errors="replace")
                except OSError as exc:
                    outcomes[target] = type(exc).__name__
            json.dump({{"identity": identity(), "outcomes": outcomes}}, open(os.environ["SELFLOOP_RESULT"], "w"))
        """))
    finally:
        stop.set()
        thread.join()
        for server in servers:
            server.close()
        shutil.rmtree(listening_dir)
    assert result.status == "ok", result.reason
    assert_unprivileged(result, result.result["identity"])
    connected = {t: o for t, o in result.result["outcomes"].items() if o.startswith("connected")}
    assert connected == {}, connected
    assert accepted == []


def test_without_an_engine_the_docker_cases_skip_cleanly(tmp_path):
    """With DOCKER_HOST at a socket nobody serves, every Docker case of the sandbox suites skips with
    its reason, and no fixture errors in its teardown."""
    import subprocess
    import sys

    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    suites = sorted(str(path) for path in Path(__file__).parent.glob("test_sandbox_*.py"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "docker",
                           *suites], env=env, capture_output=True, text=True, timeout=300)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:]
    assert "skipped" in summary and not any(word in summary for word in ("passed", "failed", "error")), summary
    assert "no Docker engine answers" in done.stdout
