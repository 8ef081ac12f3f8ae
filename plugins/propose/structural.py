"""Structural offline edits: of the pipeline, and crossover of two variants function by function.

Pipeline edits rewrite a variant's ``pipeline.toml`` (``selfloop.core.pipeline``): remove, add or
move a selector, swap a component for another registered one of its kind, or set one of a
component's options (a number steps within its tunable's range, or by a factor; a flag flips; a
choice switches). The names come from the registered components, so most edits build; one that
names a component the sandbox cannot make is that variant's one-line load failure.

Function crossover takes, in one Python file both variants have, one top-level function or one
method from the other variant where the two differ: a larger unit than a tunable, and one that
keeps each file a whole program (the ``ast`` locates every definition).
"""

from __future__ import annotations

import ast
import random
from functools import lru_cache

from selfloop.core.pipeline import LISTS, PIPELINE_FILE, parse, render_sections
from selfloop.core.tunable import Tunable

KIND_OF = {"acquire": "acquirer", "select": "selector", "rewarder": "rewarder", "optimizer": "optimizer"}
# Components a pipeline edit never brings in: they need what an offline run lacks (an LLM), or
# training data of their own.
OFFLINE_UNUSABLE = {("acquirer", "llm_self_instruct"), ("rewarder", "llm_judge"),
                    ("selector", "quality_classifier")}


@lru_cache(maxsize=1)
def catalogue() -> dict[str, dict[str, list]]:
    """The installed components by kind: {kind: {name: [Option]}}, for the pipeline's kinds."""
    from selfloop.core.registry import load_registry

    registry = load_registry()
    out: dict[str, dict[str, list]] = {kind: {} for kind in KIND_OF.values()}
    for reg in registry.all():
        if reg.kind in out and (reg.kind, reg.name) not in OFFLINE_UNUSABLE:
            out[reg.kind][reg.name] = reg.options() or []
    return out


def edit_pipeline(text: str, rng: random.Random) -> tuple[str, str] | None:
    """A structurally edited pipeline text and what changed, or None when no edit applies."""
    sections = parse(text)
    ops = [_remove_selector, _add_selector, _move_selector, _swap_component, _set_option]
    rng.shuffle(ops)
    for op in ops:
        done = op(sections, rng)
        if done is not None:
            return render_sections(sections), done
    return None


def _selectors(sections) -> list[dict]:
    return sections.setdefault("select", [])


def _remove_selector(sections, rng):
    selectors = _selectors(sections)
    if not selectors:
        return None
    gone = selectors.pop(rng.randrange(len(selectors)))
    return f"pipeline: removed selector {gone['name']!r}"


def _add_selector(sections, rng):
    selectors = _selectors(sections)
    present = {s["name"] for s in selectors}
    choices = sorted(set(catalogue()["selector"]) - present)
    if not choices:
        return None
    name = rng.choice(choices)
    at = rng.randint(0, len(selectors))
    selectors.insert(at, {"name": name})
    return f"pipeline: added selector {name!r} at position {at + 1}"


def _move_selector(sections, rng):
    selectors = _selectors(sections)
    if len(selectors) < 2:
        return None
    i = rng.randrange(len(selectors) - 1)
    selectors[i], selectors[i + 1] = selectors[i + 1], selectors[i]
    return f"pipeline: moved selector {selectors[i + 1]['name']!r} after {selectors[i]['name']!r}"


def _swap_component(sections, rng):
    slots = [(section, i) for section in KIND_OF for i, _ in enumerate(_items(sections, section))]
    rng.shuffle(slots)
    for section, i in slots:
        item = _items(sections, section)[i]
        others = sorted(set(catalogue()[KIND_OF[section]]) - {item["name"]}
                        - {x["name"] for x in _items(sections, section)})
        if others:
            new = {"name": rng.choice(others)}
            _put(sections, section, i, new)
            return f"pipeline: {KIND_OF[section]} {item['name']!r} -> {new['name']!r}"
    return None


def _set_option(sections, rng):
    from .mutation import mutate_value

    slots = [(section, i) for section in KIND_OF for i, _ in enumerate(_items(sections, section))]
    rng.shuffle(slots)
    for section, i in slots:
        item = _items(sections, section)[i]
        options = [o for o in catalogue()[KIND_OF[section]].get(item["name"], [])
                   if _mutable(o.default) and o.name not in ("progress", "device")]
        if not options:
            continue
        option = rng.choice(options)
        current = (item.get("options") or {}).get(option.name, option.default)
        t = option.tunable or _range_for(option.name, current)
        value = mutate_value(Tunable(option.name, current, t.low, t.high, t.choices, 0, 0, 0, 0), rng)
        if value == current:
            continue
        item.setdefault("options", {})[option.name] = value
        return f"pipeline: {KIND_OF[section]} {item['name']!r} option {option.name} {current!r} -> {value!r}"
    return None


def _mutable(value) -> bool:
    return isinstance(value, (bool, int, float)) and value is not None


def _range_for(name: str, value) -> Tunable:
    """Bounds for an option no tunable declares: a factor of four around its value."""
    if isinstance(value, bool):
        return Tunable(name, value, None, None, None, 0, 0, 0, 0)
    low, high = (value / 4, value * 4) if value > 0 else (value * 4, value / 4) if value < 0 else (-1, 1)
    if isinstance(value, int):
        low, high = int(low), max(int(high), int(low) + 1)
    return Tunable(name, value, low, high, None, 0, 0, 0, 0)


def _items(sections, section) -> list[dict]:
    value = sections.get(section)
    if value is None:
        return []
    return value if section in LISTS else [value]


def _put(sections, section, i, item) -> None:
    if section in LISTS:
        sections[section][i] = item
    else:
        sections[section] = item


# --- function crossover ----------------------------------------------------------------------------


def definitions(text: str) -> dict[str, tuple[int, int]]:
    """Top-level functions and methods of top-level classes: {qualified name: (first, last) line,
    1-based, decorators included}."""
    tree = ast.parse(text)
    out = {}

    def add(node, prefix=""):
        first = min([node.lineno, *[d.lineno for d in node.decorator_list]])
        out[prefix + node.name] = (first, node.end_lineno)

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            add(node)
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    add(member, node.name + ".")
    return out


def cross_functions(mine: dict[str, str], theirs: dict[str, str], paths, rng: random.Random):
    """(path, new text, function name) taking one differing function from ``theirs``, or None."""
    pairs = []
    for path in sorted(paths):
        if not path.endswith(".py") or path not in mine or path not in theirs or mine[path] == theirs[path]:
            continue
        try:
            ours, other = definitions(mine[path]), definitions(theirs[path])
        except SyntaxError:
            continue
        for name in sorted(set(ours) & set(other)):
            if _lines(mine[path], ours[name]) != _lines(theirs[path], other[name]):
                pairs.append((path, name))
    if not pairs:
        return None
    path, name = rng.choice(pairs)
    first, last = definitions(mine[path])[name]
    o_first, o_last = definitions(theirs[path])[name]
    lines = mine[path].splitlines(keepends=True)
    taken = theirs[path].splitlines(keepends=True)[o_first - 1:o_last]
    text = "".join(lines[:first - 1] + taken + lines[last:])
    ast.parse(text)  # a whole definition for a whole one: still a program
    return path, text, name


def _lines(text: str, span: tuple[int, int]) -> str:
    return "".join(text.splitlines(keepends=True)[span[0] - 1:span[1]])


__all__ = ["PIPELINE_FILE", "catalogue", "cross_functions", "definitions", "edit_pipeline"]
