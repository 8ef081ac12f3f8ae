"""Near-duplicate proposals, caught before they are evaluated (ShinkaEvolve's novelty rejection,
with a normalized diff in place of embeddings).

A change is the lines it removes and adds, stripped of whitespace, blank lines and comments; two
changes are compared token by token (``difflib`` ratio). A change is a near-duplicate of another when
the ratio reaches the threshold and the values it writes (the number and string literals of its
added lines) are the same: re-indenting or re-commenting a change does not make it new, trying
another value does.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from selfloop.core.types import VariantView

TOKEN = re.compile(r"\w+|[^\w\s]")
LITERAL = re.compile(r"\"[^\"]*\"|'[^']*'|\b\d+(?:\.\d*)?(?:e[-+]?\d+)?")


def change(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The normalized lines that differ from ``old`` to ``new``: ``@path``, then ``-line``/``+line``."""
    lines: list[str] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        lines.append(f"@{path}")
        lines += [line for line in difflib.unified_diff(_norm(a), _norm(b), lineterm="", n=0)
                  if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return lines


def similarity(a: list[str], b: list[str]) -> float:
    """How alike two changes are, token by token (0 to 1)."""
    if not a or not b:
        return 0.0
    tokens = lambda lines: [t for line in lines for t in [line[0], *TOKEN.findall(line[1:])]]
    return difflib.SequenceMatcher(None, tokens(a), tokens(b), autojunk=False).ratio()


def same_values(a: list[str], b: list[str]) -> bool:
    written = lambda lines: sorted(v for line in lines if line.startswith("+") for v in LITERAL.findall(line))
    return written(a) == written(b)


def closest(parent: VariantView, proposed: dict[str, str], others: Sequence[VariantView],
            threshold: float = 0.95) -> tuple[VariantView | None, float, bool]:
    """The attempt in ``others`` whose change is most like the proposed one, the similarity, and
    whether it is a near-duplicate (similar at ``threshold`` or more, writing the same values).

    Each other's change is taken against its own parent when that is known (the parent or among
    ``others``), else against this proposal's parent."""
    by_id = {v.id: v for v in others}
    by_id.setdefault(parent.id, parent)
    mine = change(parent.files, proposed)
    best, best_sim, duplicate = None, 0.0, False
    for v in by_id.values():
        if v.id == parent.id:
            continue
        if v.files == proposed:
            return v, 1.0, threshold <= 1.0  # above 1: the check is off
        theirs = change(by_id.get(v.parent, parent).files, v.files)
        sim = similarity(mine, theirs)
        dup = sim >= threshold and same_values(mine, theirs)
        if (dup, sim) > (duplicate, best_sim):
            best, best_sim, duplicate = v, sim, dup
    return best, best_sim, duplicate


def _norm(text: str | None) -> list[str]:
    out = []
    for line in (text or "").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            out.append(" ".join(line.split()))
    return out
