"""Verification in the sandbox: python_functions' answers run only there, batched, each one contained."""

from __future__ import annotations

import random
import textwrap
import uuid
from pathlib import Path

import pytest
from selfloop.core.config import load_config
from selfloop.core.errors import PluginError
from selfloop.core.registry import load_registry
from selfloop.core.tasks import SANDBOXED_ENV, TaskView, build_task
from selfloop.core.types import Problem
from selfloop.plugins.tasks.python_functions import PythonFunctions
from selfloop.sandbox import choose_backend, protected_manifest
from selfloop.sandbox import runner as sandbox_runner
from selfloop.sandbox.verify import SandboxVerifier

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker)]
WRONG = "```python\ndef f(x):\n    return x + 1000\n```"


def config_for(kind: str, **task_options):
    return load_config(None, {"task": {"name": "python_functions", "options": {"chat": False, **task_options}},
                              "sandbox": {"backend": kind, "timeout_s": 60}})


def usable(kind: str, config) -> None:
    if kind == "docker":
        from selfloop.sandbox.docker_backend import DockerSandbox

        ok, why = DockerSandbox.availability(config.sandbox)
        if not ok:
            pytest.skip(f"no Docker sandbox here: {why}")


@pytest.fixture(params=BACKENDS)
def kind(request):
    return request.param


@pytest.fixture(autouse=True)
def on_the_host(monkeypatch):
    monkeypatch.delenv(SANDBOXED_ENV, raising=False)


def problems(n: int, difficulty: int = 2) -> list[Problem]:
    return PythonFunctions(chat=False).problems(difficulty, n, random.Random(7))


def body(solution: str) -> str:
    return PythonFunctions.extract_answer(solution)


def test_a_correct_and_a_wrong_solution_verify_as_such_in_the_sandbox(kind):
    config = config_for(kind)
    usable(kind, config)
    view = build_task(config, load_registry())
    assert isinstance(view.verifier, SandboxVerifier)
    batch = problems(3)
    verdicts = view.verify_many(batch, [batch[0].answer, WRONG, f"Here it is:\n{batch[2].answer}\nDone."])
    assert verdicts == [True, False, True], view.verifier.failures
    assert view.verifier.runs == 1 and view.verifier.failures == []


def test_a_solution_that_writes_outside_its_scratch_is_contained(kind):
    config = config_for(kind)
    usable(kind, config)
    view = build_task(config, load_registry())
    [problem] = problems(1)
    targets = [Path("/tmp") / f"selfloop-escape-{uuid.uuid4().hex}", REPO / f"escape-{uuid.uuid4().hex}"]
    escape = "\n".join(
        [f"for target in {[str(t) for t in targets]!r}:",
         "    try:",
         "        open(target, 'w').write('out')",
         "    except OSError:",
         "        pass",
         body(problem.answer)])
    try:
        assert view.verify_many([problem], [escape]) == [True], view.verifier.failures  # it still answers
        assert not any(t.exists() for t in targets)
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_one_answer_cannot_change_anothers_verdict(kind):
    config = config_for(kind, timeout_s=1.0)
    usable(kind, config)
    view = build_task(config, load_registry())
    batch = problems(4, difficulty=1)
    saboteur = "import builtins, json\nbuiltins.abs = lambda x: 0\njson.dumps = lambda *a, **k: 'x'\n" + body(batch[0].answer)
    forever = "def f(x):\n    while True:\n        pass"
    lingering = ("import subprocess\nsubprocess.Popen(['sleep', '30'], start_new_session=True)\n"
                 + body(batch[2].answer))
    verdicts = view.verify_many(batch, [saboteur, forever, lingering, batch[3].answer])
    assert verdicts == [False, False, True, True], view.verifier.failures  # its own json lied to nobody


def test_python_functions_never_verifies_on_the_host():
    task = PythonFunctions(chat=False)
    [problem] = problems(1)
    with pytest.raises(PluginError, match="only inside the sandbox"):
        task.verify(problem, problem.answer)
    with pytest.raises(PluginError, match="only inside the sandbox"):
        task.verify_many([problem], [problem.answer])
    with pytest.raises(PluginError, match="no sandbox verifier"):
        TaskView(task, name="python_functions").verify_many([problem], [problem.answer])


def test_the_runner_marks_every_payload_as_sandboxed(tmp_path):
    assert sandbox_runner.SANDBOXED_ENV == SANDBOXED_ENV
    code = tmp_path / "code"
    code.mkdir()
    sandbox = choose_backend(config_for("process").sandbox)
    script = "import json, os; json.dump({'v': os.environ.get('SELFLOOP_SANDBOXED')}, open(os.environ['SELFLOOP_RESULT'], 'w'))"
    result = sandbox.run(["python", "-c", script], code_dir=code, timeout_s=30)
    assert result.ok, result.reason
    assert result.result == {"v": "1"}


def test_a_failed_or_unauthentic_run_verifies_nothing(caplog):
    config = config_for("process")
    manifest = dict(protected_manifest())
    first = min(manifest)
    manifest[first] = "0" * 64  # the runner's integrity check fails: an error report, no verdicts
    verifier = SandboxVerifier(config, sandbox=choose_backend(config.sandbox, manifest))
    batch = problems(2)
    assert verifier(batch, [p.answer for p in batch]) == [False, False]
    assert "integrity" in verifier.failures[0] and "integrity" in caplog.text

    class Forged:  # a run whose report is "ok" but whose verdicts do not fit the batch
        name = "process"

        def run(self, *args, **kwargs):
            from selfloop.sandbox.base import SandboxResult

            return SandboxResult("ok", 0, {"verdicts": [True]}, "", "", False, False, 0.1, "process")

    forged = SandboxVerifier(config, sandbox=Forged())
    assert forged(batch, [p.answer for p in batch]) == [False, False]
    assert "no verdict per answer" in forged.failures[0]


def test_a_big_batch_goes_in_chunks_one_run_each():
    config = config_for("process")
    verifier = SandboxVerifier(config, chunk=2)
    batch = problems(5)
    answers = [p.answer for p in batch]
    answers[3] = WRONG
    assert verifier(batch, answers) == [True, True, True, False, True]
    assert verifier.runs == 3


def test_problems_cross_as_json_only():
    verifier = SandboxVerifier(config_for("process"))
    odd = Problem("p", "a", 1, meta={"tests": {1, 2}})
    with pytest.raises(PluginError, match="JSON-safe"):
        verifier([odd], ["a"])


def test_a_task_from_a_plugins_directory_is_verified_in_the_sandbox(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "echo_code.py").write_text(textwrap.dedent("""
        import os
        from selfloop.core.hookspecs import hookimpl
        from selfloop.core.types import Problem

        class EchoCode:
            runs_model_output = True

            def problems(self, difficulty, count, rng):
                return [Problem(f"say {i}", str(i), difficulty, meta={"n": i}) for i in range(count)]

            def verify(self, problem, completion):
                assert os.environ.get("SELFLOOP_SANDBOXED") == "1"
                return completion.strip() == str(problem.meta["n"])

        @hookimpl
        def register_task(register):
            register("echo_code", EchoCode)
    """))
    config = load_config(None, {"task": {"name": "echo_code"}, "sandbox": {"backend": "process", "timeout_s": 60}})
    view = build_task(config, load_registry([plugins]))
    batch = view.problems(1, 3, random.Random(0))
    assert view.verify_many(batch, ["0", "7", "2"]) == [True, False, True], view.verifier.failures
