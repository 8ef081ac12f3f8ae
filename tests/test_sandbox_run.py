"""The sandbox interface on both backends: results, mounts, environment, integrity, selection, CLI."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest
from selfloop.core.config import SandboxSettings
from selfloop.core.errors import SandboxError
from selfloop.sandbox import backend_availability, choose_backend, protected_manifest
from selfloop.sandbox.base import OFFLINE_ENV
from selfloop.sandbox.integrity import verify_manifest

BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker)]


def make_sandbox(kind: str, manifest=None, **overrides):
    settings = SandboxSettings(backend=kind, timeout_s=30, memory_mb=512, **overrides)
    if kind == "docker":
        from selfloop.sandbox.docker_backend import DockerSandbox

        usable, why = DockerSandbox.availability(settings)
        if not usable:
            pytest.skip(why)
    return choose_backend(settings, manifest)


@pytest.fixture(params=BACKENDS)
def kind(request):
    return request.param


@pytest.fixture
def code(tmp_path):
    directory = tmp_path / "code"
    directory.mkdir()
    return directory


def script(code: Path, source: str) -> list[str]:
    (code / "payload.py").write_text(textwrap.dedent(source))
    return ["python", "-c", "import os, runpy; runpy.run_path(os.environ['SELFLOOP_CODE'] + '/payload.py')"]


def test_result_logs_and_mounts(kind, code, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3\n")
    (code / "helper.py").write_text("FACTOR = 10\n")
    job = tmp_path / "job.json"
    job.write_text('{"offset": 4}')
    command = script(code, """
        import json, os, sys
        sys.path.insert(0, os.environ["SELFLOOP_CODE"])
        from helper import FACTOR
        numbers = open(os.path.join(os.environ["SELFLOOP_INPUT_DATA"], "numbers.txt")).read().split()
        also = sorted(os.listdir(os.environ["SELFLOOP_INPUTS"]))
        offset = json.load(open(os.environ["SELFLOOP_INPUT_JOB"]))["offset"]
        print("to stdout"); print("to stderr", file=sys.stderr)
        open("scratch-file", "w").write("ok")
        try:
            open(os.path.join(os.environ["SELFLOOP_INPUT_DATA"], "new"), "w")
            input_writable = True
        except OSError:
            input_writable = False
        json.dump({"score": FACTOR * sum(map(int, numbers)) + offset, "inputs": also, "cwd_has": os.listdir("."),
                   "input_writable": input_writable}, open(os.environ["SELFLOOP_RESULT"], "w"))
    """)
    result = make_sandbox(kind).run(command, code_dir=code, inputs={"data": data, "job": job}, timeout_s=30)
    assert result.status == "ok", (result.reason, result.stderr)
    assert result.result["score"] == 64
    assert result.result["inputs"] == ["data", "job"]
    assert "scratch-file" in result.result["cwd_has"]
    assert result.result["input_writable"] is False
    assert result.stdout == "to stdout\n" and "to stderr" in result.stderr
    assert not result.truncated and result.exit_code == 0 and result.backend == kind
    assert not (data / "new").exists()


def test_environment_is_scrubbed_except_what_is_named(kind, code, monkeypatch):
    monkeypatch.setenv("SELFLOOP_TEST_PASSED", "named-in-settings")
    monkeypatch.setenv("SELFLOOP_TEST_HIDDEN", "not-named")
    command = script(code, """
        import json, os
        json.dump(dict(os.environ), open(os.environ["SELFLOOP_RESULT"], "w"))
    """)
    sandbox = make_sandbox(kind, env=["SELFLOOP_TEST_PASSED"])
    result = sandbox.run(command, code_dir=code, env={"SEED": "7"})
    assert result.status == "ok", result.reason
    env = result.result
    assert env["SELFLOOP_TEST_PASSED"] == "named-in-settings" and env["SEED"] == "7"
    assert "SELFLOOP_TEST_HIDDEN" not in env
    allowed = {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "SEED",
               "SELFLOOP_CODE", "SELFLOOP_RESULT", "SELFLOOP_INPUTS", "SELFLOOP_OUTPUT", "SELFLOOP_SANDBOX",
               "SELFLOOP_SANDBOXED", "SELFLOOP_TEST_PASSED", "HOSTNAME", *OFFLINE_ENV}  # Docker sets HOSTNAME itself
    assert set(env) <= allowed


def test_failures_are_reported_with_a_reason(kind, code):
    sandbox = make_sandbox(kind)
    failed = sandbox.run(["python", "-c", "raise SystemExit(3)"], code_dir=code)
    assert failed.status == "error" and failed.exit_code == 3 and "status 3" in failed.reason
    missing = sandbox.run(["no-such-program-here"], code_dir=code)
    assert missing.status == "error" and "no-such-program-here" in missing.reason
    not_json = sandbox.run(["python", "-c", "import os; open(os.environ['SELFLOOP_RESULT'], 'w').write('[1')"],
                           code_dir=code)
    assert not_json.status == "ok" and not_json.result is None and "not JSON" in not_json.reason


def test_integrity_mismatch_stops_the_payload(kind, code):
    manifest = protected_manifest()
    key = "selfloop.core/errors.py"
    manifest[key] = "0" * 64
    sandbox = make_sandbox(kind, manifest=manifest)
    command = script(code, """
        import json, os
        json.dump({"score": 1}, open(os.environ["SELFLOOP_RESULT"], "w"))
        print("payload ran")
    """)
    result = sandbox.run(command, code_dir=code)
    assert result.status == "error" and result.result is None
    assert result.reason.startswith("integrity:") and key in result.reason
    assert "payload ran" not in result.stdout


def test_extra_protected_file_is_checked_where_it_is_mounted(kind, code, tmp_path):
    evaluator = code / "held_out.py"
    evaluator.write_text("ANSWER = 42\n")
    sandbox = make_sandbox(kind, manifest=protected_manifest([evaluator]))
    command = ["python", "-c", "import os; open(os.environ['SELFLOOP_RESULT'], 'w').write('{}')"]
    assert sandbox.run(command, code_dir=code).status == "ok"
    evaluator.write_text("ANSWER = 43\n")
    changed = sandbox.run(command, code_dir=code)
    assert changed.status == "error" and "held_out.py differs" in changed.reason
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_text("x = 1\n")
    outside = make_sandbox(kind, manifest=protected_manifest([elsewhere]))
    with pytest.raises(SandboxError, match="not under the code directory"):
        outside.run(command, code_dir=code)


def test_code_closed_to_others(kind, code):
    """A 0700 code directory (tempfile.mkdtemp's) with a 0600 file: the process backend shows it to
    the payload's uid through an idmapped mount; where there is none (Docker), the run is refused
    with a reason saying what to change."""
    (code / "private.txt").write_text("mine")
    (code / "private.txt").chmod(0o600)
    code.chmod(0o700)
    command = ["python", "-c", "import json, os; json.dump({'read': open(os.environ['SELFLOOP_CODE'] + "
               "'/private.txt').read()}, open(os.environ['SELFLOOP_RESULT'], 'w'))"]
    result = make_sandbox(kind).run(command, code_dir=code)
    if "idmapped mounts" in result.protections:
        assert result.status == "ok" and result.result == {"read": "mine"}, result.reason
    else:
        assert result.status == "error" and result.result is None
        assert result.reason.endswith("is closed to the payload's uid: make the directory readable by "
                                      "others (chmod o+rx)"), result.reason
    release = tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])
    if kind == "process" and os.geteuid() == 0 and release >= (6, 3):
        assert "idmapped mounts" in result.protections  # ext4, xfs, btrfs and tmpfs have them by 6.3


def test_a_report_needs_the_runs_key_and_a_clean_exit():
    from selfloop.sandbox.runner import REPORT_MARKER, new_key, parse_report, sign

    key = new_key()
    body = json.dumps({"status": "ok", "result": {"score": 1}})
    line = f"{REPORT_MARKER} {sign(key, body)} {body}"
    assert parse_report(f"runner noise\n{line}\n", key, 0) == (json.loads(body), None)
    refused = {
        "another run's key": parse_report(line, new_key(), 0),
        "killed runner": parse_report(line, key, -9),
        "runner failed": parse_report(line, key, 1),
        "no line": parse_report("nothing", key, 0),
        "forged line before": parse_report(f"{REPORT_MARKER} {'0' * 64} {body}\n{line}", key, 0),
        "forged line after": parse_report(f"{line}\n{REPORT_MARKER} {'0' * 64} {body}", key, 0),
        "edited body": parse_report(line.replace('"score": 1', '"score": 9'), key, 0),
        "no MAC": parse_report(f"{REPORT_MARKER} {body}", key, 0),
    }
    for case, (report, why) in refused.items():
        assert report is None and why, case


def test_bad_arguments_raise_sandbox_errors(code):
    sandbox = make_sandbox("process")
    with pytest.raises(SandboxError, match="does not exist"):
        sandbox.run(["true"], code_dir=code / "missing")
    with pytest.raises(SandboxError, match="input name"):
        sandbox.run(["true"], code_dir=code, inputs={"../up": code})
    with pytest.raises(SandboxError, match="non-empty list"):
        sandbox.run([], code_dir=code)


def test_manifest_sees_added_and_changed_files(tmp_path):
    manifest = protected_manifest()
    assert manifest and all(len(digest) == 64 for digest in manifest.values())
    assert any(key.startswith("selfloop.core/") for key in manifest)
    assert any(key.startswith("selfloop.sandbox/") for key in manifest)
    assert verify_manifest(manifest) == []
    extra = tmp_path / "evaluator.py"
    extra.write_text("x = 1\n")
    with_extra = protected_manifest([extra])
    assert str(extra.resolve()) in with_extra
    extra.write_text("x = 2\n")
    assert f"{extra.resolve()} differs" in verify_manifest(with_extra)
    extra.unlink()
    assert f"{extra.resolve()} is missing" in verify_manifest(with_extra)
    fewer = dict(manifest)
    dropped = next(k for k in fewer if k.startswith("selfloop.sandbox/"))
    del fewer[dropped]
    assert f"{dropped} is not in the manifest" in verify_manifest(fewer)


def test_forced_backend_that_is_unusable_says_why():
    settings = SandboxSettings(backend="docker", image=f"selfloop-sandbox:missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(SandboxError, match="unusable: .*(missing|no Docker engine)"):
        choose_backend(settings)


def test_auto_falls_back_to_process_without_the_image():
    settings = SandboxSettings(image=f"selfloop-sandbox:missing-{uuid.uuid4().hex[:8]}")
    assert choose_backend(settings).name == "process"
    availability = backend_availability(settings)
    assert availability["process"][0] is True
    assert availability["docker"][0] is False and availability["docker"][1]


def test_check_command_reports_both_backends(run_selfloop):
    done = run_selfloop("sandbox", "check", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    backends = {row["backend"]: row for row in report["backends"]}
    assert set(backends) == {"docker", "process"}
    for row in backends.values():
        assert isinstance(row["available"], bool) and row["reason"]
    assert backends["process"]["available"] is True
    assert report["selected"] in ("docker", "process")


def test_without_an_engine_docker_is_unavailable_and_says_why(run_selfloop, tmp_path, monkeypatch):
    nowhere = f"unix://{tmp_path}/no-engine.sock"
    done = run_selfloop("sandbox", "check", "--json", env={"DOCKER_HOST": nowhere})
    assert done.returncode == 0, done.stderr
    backends = {row["backend"]: row for row in json.loads(done.stdout)["backends"]}
    assert backends["docker"]["available"] is False
    assert "no Docker engine answers" in backends["docker"]["reason"]
    build = run_selfloop("sandbox", "build", env={"DOCKER_HOST": nowhere})
    assert build.returncode == 1 and "error: no Docker engine answers" in build.stderr
    monkeypatch.setenv("DOCKER_HOST", nowhere)
    assert choose_backend(SandboxSettings()).name == "process"
    with pytest.raises(SandboxError, match="'docker' is unusable: no Docker engine answers"):
        choose_backend(SandboxSettings(backend="docker"))


def test_run_command_prints_the_result(run_selfloop, code):
    payload = "import json, os; print('hi'); json.dump({'n': 3}, open(os.environ['SELFLOOP_RESULT'], 'w'))"
    done = run_selfloop("sandbox", "run", "--backend", "process", "--code", code, "--json", "--",
                        "python", "-c", payload)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok" and result["result"] == {"n": 3} and result["stdout"] == "hi\n"
    slow = run_selfloop("sandbox", "run", "--backend", "process", "--code", code, "--timeout", "1",
                        "--", "sleep", "30")
    assert slow.returncode == 1 and "[process] timeout" in slow.stderr


def test_process_backend_reports_its_layers(code):
    result = make_sandbox("process").run(["python", "-c", "pass"], code_dir=code)
    assert result.status == "ok"
    assert "no result" in result.reason
    assert result.protections  # e.g. ["cgroup", "namespaces", "tmpfs scratch", "landlock"]


@pytest.mark.docker
def test_sweep_removes_orphaned_containers():
    import docker
    from selfloop.sandbox.base import LABEL
    from selfloop.sandbox.docker_backend import sweep_containers

    settings = SandboxSettings()
    from selfloop.sandbox.docker_backend import DockerSandbox

    usable, why = DockerSandbox.availability(settings)
    if not usable:
        pytest.skip(why)
    client = docker.from_env()
    orphan = client.containers.create(settings.image, ["true"], network_mode="none",
                                      labels={LABEL: "1", f"{LABEL}.owner": "gone-host:1"})
    try:
        assert sweep_containers(client) >= 1
        assert orphan.id not in [c.id for c in client.containers.list(all=True)]
    finally:
        try:
            orphan.remove(force=True)
        except docker.errors.NotFound:
            pass


def test_sweep_removes_cgroups_of_dead_runners():
    from selfloop.sandbox import confine
    from selfloop.sandbox.process_backend import ProcessSandbox

    if not ProcessSandbox.layers()["cgroups"]:
        pytest.skip("no writable cgroup v1 hierarchy here (needs root)")
    dead = 4_194_000  # above any pid this machine hands out
    assert not Path(f"/proc/{dead}").exists()
    groups = confine.run_cgroups(dead)
    for group in groups:
        if group.parent.parent.is_dir():
            group.mkdir(parents=True, exist_ok=True)
    live = confine.run_cgroups(os.getpid())[0]  # a live runner's group is left alone
    live.mkdir(parents=True, exist_ok=True)
    try:
        assert make_sandbox("process").sweep() >= 1
        assert not any(group.exists() for group in groups)
        assert live.exists()
    finally:
        for group in [*groups, live]:
            if group.exists():
                group.rmdir()


def test_auto_says_why_it_did_not_choose_docker(monkeypatch):
    from selfloop.core.config import SandboxSettings
    from selfloop.sandbox import choose_backend

    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/selfloop-nobody-serves.sock")
    chosen = choose_backend(SandboxSettings(backend="auto"))
    assert chosen.name == "process"
    assert chosen.reason.startswith("not docker: no Docker engine answers") and "\n" not in chosen.reason


def test_output_files_come_back_within_the_quota(kind, code):
    """What the payload leaves in $SELFLOOP_OUTPUT returns as bytes; past the quota, or through a
    symlink, the run is ``limit`` and nothing comes back."""
    command = script(code, """
        import os, sys
        out = os.environ["SELFLOOP_OUTPUT"]
        os.makedirs(os.path.join(out, "model"))
        size = int(open(os.path.join(os.environ["SELFLOOP_CODE"], "size.txt")).read())
        with open(os.path.join(out, "model", "weights.bin"), "wb") as f:
            f.write(bytes(range(256)) * (size // 256))
        if os.path.exists(os.path.join(os.environ["SELFLOOP_CODE"], "link.txt")):
            os.symlink("/etc/passwd", os.path.join(out, "passwd"))
        if os.path.exists(os.path.join(os.environ["SELFLOOP_CODE"], "locked.txt")):
            os.chmod(os.path.join(out, "model", "weights.bin"), 0)
    """)
    sandbox = make_sandbox(kind)
    (code / "size.txt").write_text(str(256 * 40))
    done = sandbox.run(command, code_dir=code, output_quota_bytes=256 * 50)
    assert done.ok, done.reason
    assert done.outputs == {"model/weights.bin": bytes(range(256)) * 40}
    assert sandbox.run(command, code_dir=code).outputs == {}  # no quota: nothing is read
    (code / "size.txt").write_text(str(256 * 60))
    over = sandbox.run(command, code_dir=code, output_quota_bytes=256 * 50)
    assert over.status == "limit" and "output quota exceeded" in over.reason and not over.outputs
    (code / "size.txt").write_text("256")
    (code / "link.txt").write_text("")
    linked = sandbox.run(command, code_dir=code, output_quota_bytes=256 * 50)
    assert linked.status == "limit" and "symlink" in linked.reason and not linked.outputs
    (code / "link.txt").unlink()
    (code / "locked.txt").write_text("")  # read as the payload's uid: a file it locked stays locked
    locked = sandbox.run(command, code_dir=code, output_quota_bytes=256 * 50)
    if os.geteuid() == 0 or kind == "docker":
        assert locked.status == "limit" and "output unreadable" in locked.reason and not locked.outputs
