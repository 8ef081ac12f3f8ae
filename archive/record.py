"""A variant's record, and how it travels in its commit message.

The message is readable in `git log` (a subject line, the edit's summary, the scores) and ends with
the complete record as JSON after a marker line, so the index can be rebuilt from git alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import PurePath
from typing import Any

from selfloop.core.errors import ArchiveError

FORMAT = 1
MARKER = "\nselfloop-record:\n"
STATUSES = ("admitted", "rejected")


@dataclass
class Variant:
    """One archived variant. ``meta`` is everything the proposer and the evaluators recorded."""

    id: str
    parent: str | None
    created: float
    status: str
    scores: dict[str, float | None]
    commit: str
    record_json: str | None = field(default=None, repr=False)  # the full record, JSON
    fetch: Callable[[str], str] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def meta(self) -> dict[str, Any]:
        """Parsed on first use; listings leave the (possibly large) record in the index till then."""
        if self.record_json is None and self.fetch is not None:
            self.record_json = self.fetch(self.id)
        return json.loads(self.record_json)["meta"]

    @property
    def admitted(self) -> bool:
        return self.status == "admitted"

    @property
    def seq(self) -> int:
        return variant_seq(self.id)

    def score(self, metric: str) -> float | None:
        return self.scores.get(metric)

    def to_dict(self, full: bool = True) -> dict[str, Any]:
        out = {
            "id": self.id, "parent": self.parent, "created": self.created, "status": self.status,
            "scores": self.scores, "commit": self.commit,
        }
        if full:
            out["meta"] = self.meta
        return out


def variant_id(seq: int) -> str:
    return f"v{seq}"


def variant_seq(variant_id: str) -> int:
    if not (variant_id.startswith("v") and variant_id[1:].isdigit()):
        raise ArchiveError(f"{variant_id!r} is not a variant id (they look like v12)")
    return int(variant_id[1:])


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def clean_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """Meta as plain JSON (dataclasses such as LLMCall become dicts) with checked scores."""
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ArchiveError(f"meta must be a dict, not {type(meta).__name__}")
    try:
        # NaN and infinities become null: browsers cannot parse them
        meta = json.loads(json.dumps(meta, default=_jsonable), parse_constant=lambda _: None)
    except (TypeError, ValueError) as exc:
        raise ArchiveError(f"meta is not JSON-serialisable: {exc}") from None
    scores = clean_scores(meta.get("scores") or {})
    top = meta.get("score")  # a plain meta["score"] number is the main metric's usual home
    if "score" not in scores and isinstance(top, (int, float)) and not isinstance(top, bool):
        scores["score"] = float(top)
    meta["scores"] = scores
    return meta


def clean_scores(scores: Any, prefix: str = "") -> dict[str, float | None]:
    """{metric: number}; a nested dict (per evaluation stage) becomes ``stage.metric`` keys."""
    if not isinstance(scores, dict):
        raise ArchiveError(f"scores must be a dict of metric -> number, not {type(scores).__name__}")
    out: dict[str, float | None] = {}
    for key, value in scores.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(clean_scores(value, prefix=f"{name}."))
        elif value is None:
            out[name] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = None if math.isnan(value) else float(value)
        else:
            raise ArchiveError(f"score {name!r} must be a number, not {value!r}")
    return out


def make_record(variant: str, parent: str | None, created: float, status: str, meta: dict) -> dict:
    return {"format": FORMAT, "id": variant, "parent": parent, "created": created,
            "status": status, "meta": meta}


def encode_message(record: dict) -> str:
    meta = record["meta"]
    scores = meta.get("scores") or {}
    score_text = ", ".join(f"{k}={v:.4g}" if v is not None else f"{k}=none" for k, v in scores.items())
    subject = f"{record['id']}: {record['status']}"
    subject += f" from {record['parent']}" if record["parent"] else " (root)"
    if meta.get("proposer"):
        subject += f" by {meta['proposer']}"
    lines = [subject, ""]
    if isinstance(meta.get("summary"), str) and meta["summary"].strip():
        lines += [meta["summary"].strip(), ""]
    if score_text:
        lines += [f"scores: {score_text}", ""]
    reasons = meta.get("reasons")
    if meta.get("decision") or reasons:
        why = "; ".join(map(str, reasons)) if isinstance(reasons, list) else str(reasons or "")
        lines += [f"decision: {meta.get('decision', record['status'])}" + (f" ({why})" if why else ""), ""]
    body = json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False)
    return "\n".join(lines).rstrip("\n") + "\n" + MARKER + body + "\n"


def decode_message(message: str, where: str) -> dict:
    """The record in a commit message; ArchiveError when the commit is not a variant."""
    at = message.rfind(MARKER)
    if at < 0:
        raise ArchiveError(f"{where}: commit carries no selfloop record")
    try:
        record = json.loads(message[at + len(MARKER):])
    except json.JSONDecodeError as exc:
        raise ArchiveError(f"{where}: damaged selfloop record: {exc}") from None
    missing = {"id", "parent", "created", "status", "meta"} - set(record)
    if missing:
        raise ArchiveError(f"{where}: selfloop record lacks {', '.join(sorted(missing))}")
    return record
