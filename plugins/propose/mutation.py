"""The offline proposer: mutation of declared tunable values, crossover of two variants, and
structural edits of the pipeline (``structural.py``).

Plugins declare their knobs in code (``VOTES = tunable(5, low=1, high=15)``, see
``selfloop.core.tunable``). A mutation rewrites one or two of those literals in the parent's source
(an int steps or jumps within its range, a float moves by a Gaussian step, a choice switches to
another named alternative); a crossover takes, tunable by tunable, the other parent's value. Either
way the result is a real code edit with a diff, like any other proposer's, and no network is needed.

Which tunables a mutation touches is coverage-first: a tunable holding the same value in every
archived variant has never been varied, and is picked before one whose values already differ
(weight 1 / (1 + values seen beyond the first)²). A run of a few iterations then tries most knobs
once instead of the same few again and again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from selfloop.core.errors import ProposalError
from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import Tunable, find_tunables, set_tunable, tunable
from selfloop.core.types import Edit, VariantView

from .structural import PIPELINE_FILE, cross_functions, edit_pipeline


def knobs(files: dict[str, str], editable: Sequence[str]) -> list[tuple[str, Tunable]]:
    """Every (path, tunable) declared in the editable Python files, in a stable order."""
    out = []
    for path in sorted(editable):
        if path.endswith(".py") and path in files:
            try:
                out += [(path, t) for t in find_tunables(files[path])]
            except SyntaxError:
                continue
    return out


def mutate_value(t: Tunable, rng: random.Random):
    """A new value for ``t``, different from its current one when its range allows."""
    if t.choices:
        others = [c for c in t.choices if c != t.value]
        return rng.choice(others) if others else t.value
    if isinstance(t.value, bool):
        return not t.value
    low = t.low if t.low is not None else (t.value - 10 if isinstance(t.value, int) else t.value - 1.0)
    high = t.high if t.high is not None else (t.value + 10 if isinstance(t.value, int) else t.value + 1.0)
    if isinstance(t.value, int):
        if rng.random() < 0.7:  # a local step most of the time, a jump sometimes
            step = rng.choice([-2, -1, 1, 2])
            value = min(high, max(low, t.value + step))
        else:
            value = rng.randint(low, high)
        if value == t.value and high > low:
            value = t.value + 1 if t.value < high else t.value - 1
        return value
    sigma = 0.15 * (high - low)
    value = round(min(high, max(low, t.value + rng.gauss(0, sigma))), 3)
    return min(high, max(low, value))  # rounding may step past a bound (0.9999 -> 1.0)


# The operators' weights: this file is itself editable (evolve's "proposer" target), so a run can
# learn which operators pay.
CROSSOVER_RATE = tunable(0.25, low=0.0, high=1.0)  # recombine with another admitted variant
FUNCTION_CROSSOVER_SHARE = tunable(0.5, low=0.0, high=1.0)  # of crossovers: a whole function
PIPELINE_RATE = tunable(0.4, low=0.0, high=1.0)  # a structural pipeline edit, when pipeline.toml is editable
MAX_MUTATIONS = tunable(2, low=1, high=6)


class MutationProposer:
    """Mutates tunable literals; recombines with another variant (tunable by tunable, or a whole
    function) with probability ``crossover_rate``; edits ``pipeline.toml`` structurally (when it
    is editable) with probability ``pipeline_rate``."""

    name = "mutation"  # the operator evolve records for a proposal that failed (as llm_edit's "llm")

    def __init__(self, crossover_rate: float = CROSSOVER_RATE, max_mutations: int = MAX_MUTATIONS,
                 pipeline_rate: float = PIPELINE_RATE,
                 function_crossover_share: float = FUNCTION_CROSSOVER_SHARE):
        self.crossover_rate = crossover_rate
        self.max_mutations = max_mutations
        self.pipeline_rate = pipeline_rate
        self.function_crossover_share = function_crossover_share

    def propose(self, parent: VariantView, *, editable: Sequence[str], others: Sequence[VariantView],
                rng: random.Random) -> Edit:
        if PIPELINE_FILE in editable and PIPELINE_FILE in parent.files and rng.random() < self.pipeline_rate:
            edited = edit_pipeline(parent.files[PIPELINE_FILE], rng)
            if edited is not None:
                return _edit(parent, {**parent.files, PIPELINE_FILE: edited[0]}, edited[1],
                             {"operator": "pipeline"})
        found = knobs(parent.files, editable)
        partners = [o for o in others if o.id != parent.id and o.status == "admitted"]
        if partners and rng.random() < self.crossover_rate:
            other = rng.choice(partners)
            edit = None
            if rng.random() < self.function_crossover_share:
                edit = self._function_crossover(parent, other, editable, rng)
            edit = edit or self._crossover(parent, other, found, rng)
            if edit is not None:
                return edit
        if not found:
            raise ProposalError(f"variant {parent.id}: no tunable(...) values in the editable files "
                                f"({', '.join(sorted(editable)) or 'none'}) to mutate")
        return self._mutate(parent, found, rng, others)

    def _function_crossover(self, parent: VariantView, other: VariantView, editable, rng) -> Edit | None:
        crossed = cross_functions(parent.files, other.files, editable, rng)
        if crossed is None:
            return None
        path, text, name = crossed
        return _edit(parent, {**parent.files, path: text}, f"function crossover with {other.id}: "
                     f"{path}: {name} from {other.id}", {"operator": "function_crossover",
                                                         "other_parent": other.id})

    def _mutate(self, parent: VariantView, found, rng, others: Sequence[VariantView] = ()) -> Edit:
        count = rng.randint(1, min(self.max_mutations, len(found)))
        files = dict(parent.files)
        changes = []
        for path, t in _pick_least_explored(found, [parent, *others], count, rng):
            value = mutate_value(t, rng)
            if value == t.value:
                continue
            files[path] = set_tunable(files[path], t.name, value)
            changes.append(f"{path}: {t.name} {t.value!r} -> {value!r}")
        if not changes:
            raise ProposalError(f"variant {parent.id}: every chosen tunable is fixed by its range")
        return _edit(parent, files, "mutation: " + "; ".join(changes), {"operator": "mutation"})

    def _crossover(self, parent: VariantView, other: VariantView, found, rng) -> Edit | None:
        theirs = {(p, t.name): t.value for p, t in knobs(other.files, [p for p, _ in found])}
        differing = [(p, t) for p, t in found if (p, t.name) in theirs and theirs[(p, t.name)] != t.value]
        if not differing:
            return None
        taken = [d for d in differing if rng.random() < 0.5] or [rng.choice(differing)]
        files = dict(parent.files)
        changes = []
        for path, t in taken:
            files[path] = set_tunable(files[path], t.name, theirs[(path, t.name)])
            changes.append(f"{path}: {t.name} {t.value!r} -> {theirs[(path, t.name)]!r}")
        return _edit(parent, files, f"crossover with {other.id}: " + "; ".join(changes),
                     {"operator": "crossover", "other_parent": other.id})


def _pick_least_explored(found, variants: Sequence[VariantView], count: int, rng):
    """``count`` distinct (path, tunable) pairs, the ones fewer variants have varied more likely."""
    seen: dict[tuple[str, str], set] = {}
    for variant in variants:
        for path, t in knobs(variant.files, sorted({p for p, _ in found})):
            seen.setdefault((path, t.name), set()).add(repr(t.value))
    pool = list(found)
    weights = [1.0 / len(seen.get((p, t.name), {None})) ** 2 for p, t in pool]
    picked = []
    for _ in range(min(count, len(pool))):
        index = rng.choices(range(len(pool)), weights=weights)[0]
        picked.append(pool.pop(index))
        weights.pop(index)
    return picked


def _edit(parent: VariantView, files: dict[str, str], summary: str, meta: dict) -> Edit:
    changed = {p: text for p, text in files.items() if parent.files.get(p) != text}
    return Edit(files=changed, summary=summary, proposer="mutation", meta=meta)


@hookimpl(trylast=True)
def register_proposer(register):
    register("mutation", MutationProposer,
             description="offline: mutates tunable(...) values in plugin code, crossover of two variants")
