"""Python functions from templates, checked by hidden unit tests: a task whose answers are code.

A problem of difficulty n asks for ``f(x)`` composing n operations on an integer::

    Write a Python function f(x) that takes an integer x, doubles it, then adds 3, and returns
    the result. For example, f(2) returns 7.

Its hidden tests are ``problem.meta["tests"]``, ``[[input, expected], ...]`` (JSON, as everything in
``meta`` must be to cross into the sandbox); ``problem.answer`` and ``demonstration(problem)`` are
a reference solution in a ```python block. ``extract_answer`` takes the first fenced code block
of a completion (```python preferred; an unclosed one runs to the end), else the whole completion.

``runs_model_output = True``: verifying runs the model's code, so selfloop verifies these answers
only inside the sandbox (``selfloop.sandbox.verify``), and ``verify_many`` itself refuses to run
anywhere ``SELFLOOP_SANDBOXED`` is not set. There each answer runs in a child forked for it alone
(its own process group, stdout and stderr to /dev/null, the run's scratch off ``sys.path``, a CPU
and an address-space limit, killed at ``timeout_s``); the child sends the function's outputs back as
JSON on a pipe and the parent, which never ran model code, compares them with the tests. Every
process an answer left behind is killed before the next answer starts (the parent is their
subreaper), and the parent is non-dumpable, so no answer can reach another's verdict or the
parent's memory. An answer can still read the tests from the memory it was forked with, or kill
the parent (then the whole chunk is verified as wrong, never as right): the sandbox, not this
module, is what confines model code.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import re
import resource
import select
import signal
import sys
import time
from collections.abc import Sequence

from selfloop.core.errors import PluginError
from selfloop.core.hookspecs import hookimpl
from selfloop.core.tasks import SANDBOXED_ENV, in_held_out
from selfloop.core.types import Problem

FUNCTION = "f"
SYSTEM = ("You write small Python functions. Answer with one ```python code block that defines the "
          "function, and nothing else.")
TESTS_PER_PROBLEM = 6
OUTPUT_LIMIT_BYTES = 1 << 16
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)

# (the words, the statement of the reference solution, the operation); {k} is drawn from the range
OPERATIONS = [
    ("adds {k}", "x = x + {k}", lambda x, k: x + k, (1, 9)),
    ("subtracts {k}", "x = x - {k}", lambda x, k: x - k, (1, 9)),
    ("multiplies it by {k}", "x = x * {k}", lambda x, k: x * k, (2, 5)),
    ("doubles it", "x = 2 * x", lambda x, k: 2 * x, None),
    ("squares it", "x = x * x", lambda x, k: x * x, None),
    ("negates it", "x = -x", lambda x, k: -x, None),
    ("takes its absolute value", "x = abs(x)", lambda x, k: abs(x), None),
    ("takes the remainder of dividing it by {k}", "x = x % {k}", lambda x, k: x % k, (2, 7)),
    ("divides it by {k}, rounding down", "x = x // {k}", lambda x, k: x // k, (2, 5)),
]


class PythonFunctions:
    """Write ``f(x)`` composing ``difficulty`` operations; verified by hidden tests in the sandbox."""

    runs_model_output = True

    def __init__(self, min_operations: int = 1, max_operations: int = 4, chat: bool = True,
                 timeout_s: float = 2.0, memory_mb: int = 256, held_out_fraction: float = 0.2,
                 tokens_per_operation: int = 16, token_slack: int = 48):
        if not 1 <= min_operations <= max_operations:
            raise PluginError(f"task 'python_functions': need 1 <= min_operations <= max_operations, "
                              f"not {min_operations} and {max_operations}")
        if not 0 < held_out_fraction < 1:
            raise PluginError(f"task 'python_functions': held_out_fraction must be in (0, 1), not {held_out_fraction}")
        self.min_operations, self.max_operations, self.chat = min_operations, max_operations, chat
        self.timeout_s, self.memory_mb, self.held_out_fraction = timeout_s, memory_mb, held_out_fraction
        self.tokens_per_operation, self.token_slack = tokens_per_operation, token_slack

    # --- problems -------------------------------------------------------------------------------

    def difficulties(self) -> list[int]:
        return list(range(self.min_operations, self.max_operations + 1))

    def problems(self, difficulty: int, count: int, rng: random.Random, split: str = "train") -> list[Problem]:
        if difficulty not in self.difficulties():
            raise ValueError(f"difficulty {difficulty} is not one of {self.difficulties()}")
        out: list[Problem] = []
        while len(out) < count:  # a problem's split is a hash of its prompt: the two never share one
            problem = self.make(difficulty, rng)
            if in_held_out(problem.prompt, self.held_out_fraction) == (split == "held_out"):
                out.append(problem)
        return out

    def make(self, operations: int, rng: random.Random) -> Problem:
        steps = []
        for _ in range(operations):
            words, statement, apply, span = rng.choice(OPERATIONS)
            k = rng.randint(*span) if span else 0
            steps.append((words.format(k=k), statement.format(k=k), apply, k))

        def f(x: int) -> int:
            for _, _, apply, k in steps:
                x = apply(x, k)
            return x

        inputs = [0, *rng.sample([x for x in range(-20, 21) if x], TESTS_PER_PROBLEM - 1)]
        if len({f(x) for x in inputs}) < 3:  # a constant, or nearly: no test could tell answers apart
            return self.make(operations, rng)
        example = rng.choice(inputs[1:])  # one test is shown, the others stay hidden
        said = ", then ".join(words for words, _, _, _ in steps)
        prompt = (f"Write a Python function {FUNCTION}(x) that takes an integer x, {said}, and returns "
                  f"the result. For example, {FUNCTION}({example}) returns {f(example)}.")
        if not self.chat:
            prompt += "\nAnswer with the code in a ```python block.\n"
        code = "\n".join([f"def {FUNCTION}(x):", *(f"    {s}" for _, s, _, _ in steps), "    return x"])
        solution = f"```python\n{code}\n```"
        return Problem(prompt=prompt, answer=solution, difficulty=operations,
                       meta={"function": FUNCTION, "tests": [[x, f(x)] for x in inputs]})

    def messages(self, problem: Problem) -> list[dict] | None:
        if not self.chat:
            return None
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": problem.prompt}]

    def demonstration(self, problem: Problem) -> str:
        return problem.answer

    def max_new_tokens(self, problem: Problem) -> int:
        """About a line of code per operation, with room for the fences and the ``def`` line."""
        return self.token_slack + self.tokens_per_operation * problem.difficulty

    # --- answers --------------------------------------------------------------------------------

    @staticmethod
    def extract_answer(completion: str) -> str:
        blocks = FENCE.findall(completion)
        python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
        chosen = python[0] if python else blocks[0][1] if blocks else completion
        return chosen.strip()

    def verify(self, problem: Problem, completion: str) -> bool:
        return self.verify_many([problem], [completion])[0]

    def verify_many(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[bool]:
        """Run each answer against its problem's tests, one forked child each: sandbox only."""
        if not os.environ.get(SANDBOXED_ENV):
            raise PluginError("task 'python_functions' runs model-written code to verify it: only inside "
                              f"the sandbox (where {SANDBOXED_ENV} is set), never on the host")
        for problem in problems:
            if not isinstance(problem.meta.get("tests"), list):
                raise TypeError(f"problem {problem.prompt[:60]!r} has no tests (a list) in its meta")
        _prctl(PR_SET_DUMPABLE, 0)  # no answer may read or write this process's memory
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # what an answer leaves behind comes back to be killed
        verdicts = []
        for problem, completion in zip(problems, completions):
            tests = problem.meta["tests"]
            outputs = run_isolated(self.extract_answer(completion), problem.meta.get("function", FUNCTION),
                                   [x for x, _ in tests], self.timeout_s, self.memory_mb)
            verdicts.append(outputs is not None and outputs == json.dumps([y for _, y in tests]).encode())
        return verdicts


def run_isolated(code: str, function: str, inputs: list, timeout_s: float, memory_mb: int) -> bytes | None:
    """The JSON of ``[function(x) for x in inputs]`` as ``code`` defines it, computed in a forked
    child; None when it raised, printed too much, timed out or sent nothing."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing it does returns here
        os.close(read_end)
        _child(code, function, inputs, write_end, timeout_s, memory_mb)
    os.close(write_end)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child already did (or is gone)
    received, complete = bytearray(), False
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([read_end], [], [], left)[0]:
                break
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                complete = True
                break
            received += chunk
            if len(received) > OUTPUT_LIMIT_BYTES:
                break
    finally:
        os.close(read_end)
        _kill_all(pid)
    return bytes(received) if complete and received else None


def _child(code, function, inputs, write_end, timeout_s, memory_mb) -> None:
    try:
        os.setpgid(0, 0)
        cwd = os.getcwd()  # the run's scratch: what an answer leaves there, no later one imports
        sys.path[:] = [p for p in sys.path if p not in ("", ".", cwd)]
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        cpu = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if memory_mb:
            with open("/proc/self/statm") as statm:
                in_use = int(statm.read().split()[0]) * resource.getpagesize()
            cap = in_use + (memory_mb << 20)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        namespace = {"__name__": "__answer__"}
        exec(compile(code, "<answer>", "exec"), namespace)  # noqa: S102 (in the sandbox, in this child)
        data = json.dumps([namespace[function](x) for x in inputs]).encode()
        while data:
            data = data[os.write(write_end, data):]
    except BaseException:  # noqa: BLE001, S110 (any failure of the answer is its verdict: no output)
        pass
    os._exit(0)


def _kill_all(pid: int) -> None:
    """SIGKILL the answer's child and its process group, then every child left to us (orphans come
    to this subreaper), until none is left."""
    for kill in (os.kill, os.killpg):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os.waitpid(pid, 0)
    for _ in range(1000):
        left = _children()
        if not left:
            return
        for child in left:
            try:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _children() -> list[int]:
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as listed:
            return [int(pid) for pid in listed.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: read every process's parent
        pass
    me, out = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[1] == me:
                        out.append(int(entry))
            except (OSError, IndexError):
                pass
    return out



def _prctl(option: int, value: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


@hookimpl
def register_task(register):
    register("python_functions", PythonFunctions,
             description="write f(x) composing operations; hidden unit tests run in the sandbox; difficulty = operations")
