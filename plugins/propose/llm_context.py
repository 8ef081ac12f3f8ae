"""What the LLM proposer is shown besides its parent: inspirations and the search's history.

Inspirations (as in OpenEvolve and ShinkaEvolve) are the best admitted variants by visible score
plus a few diverse ones (another operator, or the largest change), each shown as its diff against
the parent, never as whole files. The history is the parent's lineage and the latest attempts, one
line each, with how they ended ("admitted, smoke 0.610" or "rejected: smoke: ...").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from selfloop.core.types import VariantView


def visible_score(view: VariantView, key: str | None = None) -> float | None:
    """The variant's visible score: ``key`` if given, else smoke, else full (None when unscored)."""
    for k in ([key] if key else ["smoke", "full"]):
        if isinstance(view.scores.get(k), (int, float)):
            return float(view.scores[k])
    return None


def outcome(view: VariantView) -> str:
    """How an attempt ended, in a few words."""
    if view.status == "rejected":
        return "rejected: " + (view.reasons[0] if view.reasons else "no reason given")
    shown = ", ".join(f"{k} {view.scores[k]:.3f}" for k in ("smoke", "full") if k in view.scores)
    return "admitted" + (f", {shown}" if shown else "")


def file_diff(old: dict[str, str], new: dict[str, str], max_chars: int = 2500) -> str:
    """A unified diff from ``old`` to ``new`` over every file either has, cut at ``max_chars``."""
    lines: list[str] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        lines += difflib.unified_diff((a or "").splitlines(), (b or "").splitlines(),
                                      f"a/{path}", f"b/{path}", n=1, lineterm="")
    text = "\n".join(lines)
    return text if len(text) <= max_chars else text[:max_chars] + "\n... (diff cut)"


def changed_size(old: dict[str, str], new: dict[str, str]) -> int:
    """How many lines differ between two file sets."""
    return sum(1 for line in file_diff(old, new, max_chars=10**9).splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---")))


def inspirations(parent: VariantView, others: Sequence[VariantView], top_k: int = 2,
                 diverse: int = 2) -> list[VariantView]:
    """The ``top_k`` admitted variants by visible score, then ``diverse`` others of the admitted ones
    outside the parent's lineage (the history shows that): those of an operator not yet shown first,
    then the largest changes from the parent."""
    admitted = [v for v in _unique(others) if v.id != parent.id and v.status == "admitted"
                and v.files != parent.files]
    ancestors = set(lineage(parent, others))
    ranked = sorted(admitted, key=lambda v: (-(visible_score(v) if visible_score(v) is not None else -1e9),
                                             v.id in ancestors, -_number(v.id)))  # ties: newer outsiders
    chosen = ranked[:top_k]
    rest = [v for v in ranked[top_k:] if v.id not in ancestors]
    operators = {v.operator for v in chosen}
    rest.sort(key=lambda v: (v.operator in operators, -changed_size(parent.files, v.files), -_number(v.id)))
    return chosen + rest[:diverse]


def render_inspirations(parent: VariantView, chosen: Sequence[VariantView], max_chars: int = 2500) -> str:
    parts = []
    for v in chosen:
        head = f"### {v.id} ({outcome(v)}; made by {v.operator or 'unknown'}): {v.summary or '(no summary)'}"
        parts.append(f"{head}\n```diff\n{file_diff(parent.files, v.files, max_chars)}\n```")
    return "\n\n".join(parts)


def history(parent: VariantView, others: Sequence[VariantView], max_lines: int = 16,
            max_chars: int = 4000) -> str:
    """The parent's lineage (oldest first), then the latest other attempts (newest first)."""
    by_id = {v.id: v for v in _unique(others)}
    ancestors = lineage(parent, others)
    recent = sorted((v for v in by_id if v not in ancestors and v != parent.id), key=_number, reverse=True)
    lines = []
    if ancestors:
        lines.append(f"Lineage of {parent.id} (its ancestors, oldest first):")
        lines += [_line(by_id[v]) for v in reversed(ancestors)]
    lines.append(f"- {parent.id} (the parent): {parent.summary or '(seed)'} - {outcome(parent)}")
    if recent:
        lines.append("Latest attempts (newest first):")
        lines += [_line(by_id[v]) for v in recent[:max_lines]]
    text = "\n".join(lines)
    return text if len(text) <= max_chars else text[:max_chars] + "\n... (history cut)"


def lineage(parent: VariantView, others: Sequence[VariantView]) -> list[str]:
    """The parent's ancestors in view, nearest first."""
    by_id = {v.id: v for v in others}
    out, at = [], parent.parent
    while at in by_id and at not in out:
        out.append(at)
        at = by_id[at].parent
    return out


def _line(v: VariantView) -> str:
    made = f"from {v.parent}" if v.parent else "seed"
    ended = outcome(v)
    summary = " ".join((v.summary or "(no summary)").split())
    if summary in " ".join(ended.split()):  # a failed proposal: its summary is its reason
        summary = "(no edit)"
    return f"- {v.id} ({made}, {v.operator or 'unknown'}): {summary[:160]} - {ended}"


def _unique(views: Sequence[VariantView]) -> list[VariantView]:
    return list({v.id: v for v in views}.values())


def _number(variant_id: str) -> int:
    digits = re.findall(r"\d+", variant_id)
    return int(digits[-1]) if digits else -1
