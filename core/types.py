"""The data that flows between components. Plain dataclasses: no torch at import time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One problem of a task. ``answer`` is None when no ground-truth label exists for it."""

    prompt: str
    answer: str | None
    difficulty: int
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Example:
    """A training example: a prompt, the completion to learn, and where it came from."""

    prompt: str
    completion: str
    difficulty: int
    source: str  # e.g. "labelled", "self_label", "llm"
    weight: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def unverified(self) -> bool:
        """A label no ground truth backs: not labelled data, and claiming no answer of its own."""
        return self.source != "labelled" and self.meta.get("answer") is None


@dataclass
class SelectionReport:
    """What one selector did: how many examples it kept, and how many it dropped for each reason."""

    selector: str
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"selector": self.selector, "kept": self.kept, "dropped": dict(self.dropped)}


@dataclass
class Selection:
    """A selector's result: the examples it kept, and its report."""

    kept: list[Example]
    report: SelectionReport


@dataclass
class Policy:
    """A model being improved: a Hugging Face model and tokenizer, and the directory it lives in.

    ``peers`` are independently seeded models of the same shape trained on the same data beside it
    (``model.peers``): their mistakes differ from its own, so selectors can vote across models.
    """

    model: Any
    tokenizer: Any
    path: Path | None = None
    peers: list[Policy] = field(default_factory=list)


@dataclass
class OptimizeResult:
    """An optimizer's result: the updated policy and what it measured while training."""

    policy: Policy
    metrics: dict[str, float] = field(default_factory=dict)


def within_budget(value: int, budget: dict[str, int] | None, key: str) -> int:
    """``value`` capped by a training probe's ``budget[key]`` (``max_steps``, ``max_problems``).

    A component method that takes the optional ``budget`` keyword gets it only inside a probe, so
    that every variant's probe trains on the same number of steps and problems.
    """
    return min(value, (budget or {}).get(key, value))


@dataclass
class Evaluation:
    """An evaluator's result. ``accuracy_by_difficulty`` maps a difficulty to accuracy."""

    evaluator: str
    metrics: dict[str, float] = field(default_factory=dict)
    accuracy_by_difficulty: dict[int, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class LLMCall:
    """One call to a language model, as recorded with every variant it helped produce."""

    model: str
    messages: list[dict[str, str]]
    response: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when the provider's price is unknown (local models)
    seconds: float


@dataclass
class Edit:
    """A proposed change to the editable surface.

    ``files`` maps a path relative to the surface root to its new text (None deletes the file).
    """

    files: dict[str, str | None]
    summary: str
    proposer: str
    calls: list[LLMCall] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantSummary:
    """What a parent selector may know of an archived variant (``score`` is its held-out score)."""

    id: str
    parent: str | None
    score: float | None
    children: int
    created: float
    admitted: bool = True


@dataclass
class VariantView:
    """What a proposer sees of an archived variant: its files, its visible scores and feedback.

    ``files`` maps a path relative to the surface root to its text. The held-out score is never
    shown, so no proposer can aim at it.
    """

    id: str
    files: dict[str, str]
    scores: dict[str, float] = field(default_factory=dict)
    feedback: str = ""  # the visible evaluation's results and logs, as text
    # Its place in the search, so a proposer can learn from what was tried: its parent, what its
    # edit did, the operator that made it, and how it ended ("admitted" or "rejected", with the
    # reasons a proposer may read; never the held-out score).
    parent: str | None = None
    summary: str = ""
    operator: str = ""
    status: str = "admitted"
    reasons: list[str] = field(default_factory=list)
