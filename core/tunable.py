"""Tunable values: the knobs a plugin declares in its own code for the meta-agent to mutate.

A plugin writes, at module level::

    VOTES = tunable(5, low=1, high=15)                      # an int in a range
    THRESHOLD = tunable(0.6, low=0.0, high=1.0)             # a float in a range
    STRATEGY = tunable("majority", choices=("majority", "weighted"))

At run time ``tunable`` returns its first argument unchanged. The offline proposer finds these
calls in the source (``find_tunables``) and edits the literal, so a mutation is a real code edit
with a diff like any other proposer's.

A component's options are declared once, by its factory's signature (name, annotation, default:
what ``selfloop plugins --options`` lists). A tunable option's default is the module-level tunable
named after it in capitals (``tunable_name``), which adds the bounds::

    VOTES = tunable(5, low=1, high=15)

    class Vote:
        def __init__(self, votes: int = VOTES): ...

so the value is written once, and evolve can move a config's ``votes = 7`` into the code.
"""

from __future__ import annotations

import ast
import threading
from dataclasses import dataclass
from typing import Any

_PARSE_LOCK = threading.Lock()


def parse_python(source: str, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse``, one thread at a time: CPython 3.11's parser can fail with "AST constructor
    recursion depth mismatch" when threads parse at once (the meta loop's workers do)."""
    with _PARSE_LOCK:
        return ast.parse(source, filename=filename)


def tunable(value, *, low=None, high=None, choices=None):
    """Declare a tunable value; returns ``value``. The bounds are read from the source."""
    if choices is not None and value not in choices:
        raise ValueError(f"tunable value {value!r} is not one of {choices!r}")
    if low is not None and high is not None and not (low <= value <= high):
        raise ValueError(f"tunable value {value!r} is outside [{low}, {high}]")
    return value


@dataclass(frozen=True)
class Tunable:
    """A ``NAME = tunable(literal, ...)`` found in a source file."""

    name: str
    value: Any
    low: Any
    high: Any
    choices: tuple | None
    lineno: int
    col: int  # where the literal starts (0-based column)
    end_lineno: int
    end_col: int


def find_tunables(source: str) -> list[Tunable]:
    """Every module-level ``NAME = tunable(<literal>, ...)`` in ``source``, in file order."""
    found = []
    for node in parse_python(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        func = call.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name != "tunable" or not call.args or not isinstance(call.args[0], ast.Constant):
            continue
        opts = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        literal = call.args[0]
        found.append(Tunable(
            node.targets[0].id, literal.value, opts.get("low"), opts.get("high"),
            tuple(opts["choices"]) if opts.get("choices") is not None else None,
            literal.lineno, literal.col_offset, literal.end_lineno, literal.end_col_offset,
        ))
    return found


def tunable_name(option: str) -> str:
    """The module-level tunable an option's default is: ``votes`` -> ``VOTES``."""
    return option.upper()


def set_tunable(source: str, name: str, value: Any) -> str:
    """``source`` with the literal of tunable ``name`` replaced by ``value`` (nothing else changes)."""
    for t in find_tunables(source):
        if t.name == name:
            if t.lineno != t.end_lineno:
                raise ValueError(f"tunable {name} spans several lines; keep its literal on one line")
            lines = source.splitlines(keepends=True)
            line = lines[t.lineno - 1]
            # ast columns count UTF-8 bytes; literals of tunables are ASCII, and so is what precedes.
            lines[t.lineno - 1] = line[: t.col] + repr(value) + line[t.end_col:]
            return "".join(lines)
    raise KeyError(f"no tunable named {name!r}")
