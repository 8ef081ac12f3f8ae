"""Verifying a task's answers inside the sandbox, for a task whose verifier runs model output (code).

Host side: ``SandboxVerifier(config, plugins_dirs)`` is what ``selfloop.core.tasks.build_task``
gives a ``TaskView`` whose task declares ``runs_model_output = True``. Called as
``verifier(problems, completions) -> list[bool]``, it verifies the whole batch in one sandbox run
(``config.sandbox``: Docker or the process backend, ``choose_backend``), in chunks of at most
``chunk`` answers (one run each), so that the sandbox's start-up is shared by every answer of a
chunk.

Inside: ``python -m selfloop.sandbox.verify`` builds the task from the same plugins as the host
(the built-in and installed ones, and the user's ``--plugins-dir`` directories, mounted read-only as
the inputs ``plugins<k>`` as the judge mounts them) and calls ``TaskView(task).verify_here``. The
runner sets ``SELFLOOP_SANDBOXED=1`` for every payload, which is what lets a task's code run there.
The task itself isolates one answer from another within the run (``python_functions`` forks a child
per answer, with a timeout); the sandbox confines them all.

What crosses: each problem as JSON (``prompt``, ``answer``, ``difficulty``, ``meta``), so a task that
runs model output must keep ``Problem.meta`` JSON-safe (str keys; str, int, float, bool, None, lists
and dicts of them); a problem that is not is a ``PluginError`` naming the task. What comes back is
the run's authenticated report (``SandboxResult``): unless it is "ok" and holds exactly one bool per
answer, every verdict of the chunk is False and the reason is logged (and kept in ``failures``) —
a broken or forged run never passes an answer. A chunk's run has ``sandbox.timeout_s`` (or
``timeout_s``) in all: a chunk whose answers mostly hang until the task's own per-answer timeout can
outlast it, and is then verified as wrong whole.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PAYLOAD = ["python", "-m", "selfloop.sandbox.verify"]
JOB_NAME = "job.json"
DEFAULT_CHUNK = 512
LOAD_ENV = "SELFLOOP_LOAD_PLUGINS"  # selfloop.core.registry.LOAD_ENV: which distributions load
log = logging.getLogger("selfloop.sandbox.verify")


class SandboxVerifier:
    """Verifies ``config.task``'s answers in the sandbox ``config.sandbox`` names, a chunk per run."""

    def __init__(self, config, plugins_dirs: Sequence[str | os.PathLike] = (), *, chunk: int = DEFAULT_CHUNK,
                 sandbox=None, timeout_s: float | None = None):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        self.task = {"name": config.task.name, "options": dict(config.task.options)}
        self.settings = config.sandbox
        self.plugins = {f"plugins{k}": Path(d).resolve() for k, d in enumerate(plugins_dirs)}
        self.chunk, self.timeout_s = chunk, timeout_s
        self._sandbox = sandbox
        self.runs = 0
        self.failures: list[str] = []  # one line per chunk that verified nothing, and why

    @property
    def sandbox(self):
        if self._sandbox is None:
            from . import choose_backend

            self._sandbox = choose_backend(self.settings)
        return self._sandbox

    def __call__(self, problems: Sequence, completions: Sequence[str]) -> list[bool]:
        problems, completions = list(problems), list(completions)
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
        verdicts: list[bool] = []
        for start in range(0, len(problems), self.chunk):
            end = start + self.chunk
            verdicts += self._run(problems[start:end], completions[start:end])
        return verdicts

    def _run(self, problems: list, completions: list[str]) -> list[bool]:
        from selfloop.core.errors import PluginError, SandboxError

        job = {"task": self.task, "plugins_inputs": sorted(self.plugins), "completions": completions,
               "problems": [{"prompt": p.prompt, "answer": p.answer, "difficulty": p.difficulty,
                             "meta": p.meta} for p in problems]}
        try:
            text = json.dumps(job, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"task {self.task['name']!r}: a problem does not cross into the sandbox as "
                              f"JSON ({exc}); keep Problem.meta JSON-safe") from None
        env = {LOAD_ENV: os.environ[LOAD_ENV]} if LOAD_ENV in os.environ else {}
        self.runs += 1
        with tempfile.TemporaryDirectory(prefix="selfloop-verify-") as tmp:
            code = Path(tmp)
            (code / JOB_NAME).write_text(text)
            code.chmod(0o755)  # the payload's uid reads it (where no idmapped mount gives it the owner's)
            (code / JOB_NAME).chmod(0o644)
            try:
                result = self.sandbox.run(PAYLOAD, code_dir=code, inputs=self.plugins, env=env,
                                          timeout_s=self.timeout_s)
            except SandboxError as exc:
                return self._failed(len(problems), f"sandbox unusable: {exc}")
        verdicts = result.result.get("verdicts") if isinstance(result.result, dict) else None
        if not result.ok:
            error = result.result.get("error") if isinstance(result.result, dict) else None
            return self._failed(len(problems), f"sandbox {result.status}: {error or result.reason or 'no reason given'}")
        if (not isinstance(verdicts, list) or len(verdicts) != len(problems)
                or not all(isinstance(v, bool) for v in verdicts)):
            return self._failed(len(problems), f"the payload returned no verdict per answer ({result.reason or 'malformed result'})")
        return verdicts

    def _failed(self, count: int, why: str) -> list[bool]:
        line = f"task {self.task['name']!r}: {count} answers verified as wrong, in the sandbox: {why}"
        self.failures.append(line)
        log.warning(line)
        return [False] * count


def main() -> int:
    """The payload: verify the job's answers here, write ``{"verdicts": [...]}`` (or ``{"error"}``)."""
    result_path = Path(os.environ["SELFLOOP_RESULT"])
    try:
        job = json.loads((Path(os.environ["SELFLOOP_CODE"]) / JOB_NAME).read_text())
        verdicts = verify_job(job)
    except Exception as exc:  # noqa: BLE001 (the task raised: nothing verified)
        result_path.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]}))
        return 1
    result_path.write_text(json.dumps({"verdicts": verdicts}))
    return 0


def verify_job(job: dict) -> list[bool]:
    from selfloop.core.registry import load_registry
    from selfloop.core.tasks import TaskView
    from selfloop.core.types import Problem

    dirs = [os.environ[f"SELFLOOP_INPUT_{name.upper()}"] for name in job["plugins_inputs"]]
    registry = load_registry(dirs)
    name = job["task"]["name"]
    view = TaskView(registry.create("task", name, job["task"]["options"]), name=name)
    problems = [Problem(**p) for p in job["problems"]]
    return view.verify_here(problems, job["completions"])


if __name__ == "__main__":
    sys.exit(main())
