"""Sandboxed verification: what verifying a batch of answers in the sandbox costs per answer.

For each batch size, the same answers (the task's reference solutions, every fourth one wrong) are
verified two ways, each the median of ``--runs`` timed calls after one warm-up:

- sandboxed: ``selfloop.sandbox.verify.SandboxVerifier`` (one sandbox run per chunk of 512:
  start the sandbox, load the plugins, build the task, verify, write and authenticate the report);
- in-process: the task's own ``verify_many`` in this process (``SELFLOOP_SANDBOXED`` set here only
  for this; the code run is the task's own reference solutions).

Overhead per answer = (sandboxed - in-process) / batch. ``python_functions`` forks a child per
answer in both ways (that cost is the task's own, not the sandbox's); ``word_arithmetic`` verifies
by string comparison, so its sandboxed rows are the sandbox's cost alone.

    python benchmarks/sandbox_verification.py [--batches 16,64,256,1024] [--runs 5] [--backend process]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from rich.console import Console
from rich.table import Table
from selfloop.core.config import load_config
from selfloop.core.registry import load_registry
from selfloop.core.tasks import SANDBOXED_ENV, TaskView
from selfloop.sandbox.verify import SandboxVerifier

WRONG = {"python_functions": "```python\ndef f(x):\n    return x + 1000\n```", "word_arithmetic": "#### -1"}


def median_ms(runs: int, once) -> float:
    once()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def measure(task_name: str, backend: str, batch: int, runs: int) -> dict:
    config = load_config(None, {"task": {"name": task_name, "options": {"chat": False}},
                                "sandbox": {"backend": backend}})
    view = TaskView(load_registry().create("task", task_name, {"chat": False}), name=task_name)
    difficulties = view.difficulties.values[:3]
    rng = random.Random(0)
    problems = [p for d in difficulties for p in view.problems(d, -(-batch // len(difficulties)), rng)][:batch]
    answers = [WRONG[task_name] if i % 4 == 3 else view.demonstration(p) for i, p in enumerate(problems)]
    expected = [i % 4 != 3 for i in range(batch)]
    verifier = SandboxVerifier(config)

    def sandboxed():
        assert verifier(problems, answers) == expected, verifier.failures[-1:]

    def in_process():
        os.environ[SANDBOXED_ENV] = "1"
        try:
            assert view.verify_here(problems, answers) == expected
        finally:
            del os.environ[SANDBOXED_ENV]

    boxed, local = median_ms(runs, sandboxed), median_ms(runs, in_process)
    return {"task": task_name, "backend": verifier.sandbox.name, "batch": batch, "sandboxed_ms": boxed,
            "in_process_ms": local, "per_answer_ms": boxed / batch, "in_process_per_answer_ms": local / batch,
            "overhead_per_answer_ms": (boxed - local) / batch, "runs": verifier.runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="16,64,256,1024")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default="process", choices=["process", "docker", "auto"])
    parser.add_argument("--tasks", default="python_functions,word_arithmetic")
    args = parser.parse_args()
    table = Table(title=f"sandboxed verification ({args.backend} backend; medians of {args.runs} runs)")
    for column in ("task", "batch", "sandboxed total ms", "ms / answer", "in-process ms / answer",
                   "overhead ms / answer"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task_name in args.tasks.split(","):
        for batch in map(int, args.batches.split(",")):
            row = measure(task_name, args.backend, batch, args.runs)
            table.add_row(task_name, str(batch), f"{row['sandboxed_ms']:.0f}", f"{row['per_answer_ms']:.2f}",
                          f"{row['in_process_per_answer_ms']:.2f}", f"{row['overhead_per_answer_ms']:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
