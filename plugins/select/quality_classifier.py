"""Model-based data selection (DataComp-LM, Li et al. 2024): a small quality classifier scores the
self-labels, and the selector keeps the top share.

The classifier is a logistic regression on features the model computes for a (prompt, label):
the log-probability of its least likely token and its mean token log-probability (EOS included),
the share of ``votes`` samples at ``temperature`` that give the label's answer, the share of the
peer models (``model.peers``) whose greedy answer gives it, and whether the label's answer has the
length most of the samples' answers have (answers as the task extracts them; samples within the
task's budget).

It is trained afresh every round on examples whose rightness is known without any audit: the
labelled data in ``history`` (right) against the policy's own answers to those prompts that differ
from the label (wrong: its greedy answer and ``negatives`` samples per prompt). With
``use_audits`` it also learns from earlier rounds' self-labels in ``history`` whose hidden true
answer the acquirer recorded (``meta["audit_answer"]``): only for experiments where the truth is
known; the meta-agent's judge never provides it. Without training data (no history) it ranks by
the mean token log-probability.

Labelled examples pass through. The report adds ``precision`` and ``recall`` of the kept labels
against ``meta["audit_answer"]`` where the acquirer recorded it (read for the report only, never to
choose), and the classifier's AUC on its own training set. After a round the admission gate
rejects, ``tighten()`` halves ``keep_share``.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import completion_logprobs, greedy_answers
from selfloop.core.tunable import tunable
from selfloop.core.types import Example, Selection, SelectionReport

from ..refine.answers import example_budget, extractor

KEEP_SHARE = tunable(0.5, low=0.05, high=1.0)
VOTES = tunable(4, low=0, high=32)
TEMPERATURE = tunable(0.7, low=0.05, high=2.0)
FEATURES = ("min_logp", "mean_logp", "sample_agreement", "peer_agreement", "modal_length")


@dataclass
class QualityReport(SelectionReport):
    """A selection report with the classifier's measurements."""

    measured: dict = field(default_factory=dict)

    def to_dict(self):
        return {**super().to_dict(), **self.measured}


class QualityClassifier:
    """Keeps the ``keep_share`` of self-labels a per-round logistic classifier scores highest."""

    def __init__(self, keep_share: float = KEEP_SHARE, votes: int = VOTES,
                 temperature: float = TEMPERATURE, train_size: int = 600, negatives: int = 2,
                 l2: float = 1e-2, use_audits: bool = False, batch_size: int = 512):
        if not 0.0 < keep_share <= 1.0:
            raise ValueError(f"keep_share must be in (0, 1], got {keep_share}")
        self.keep_share, self.votes, self.temperature = keep_share, votes, temperature
        self.train_size, self.negatives, self.l2 = train_size, negatives, l2
        self.use_audits, self.batch_size = use_audits, batch_size
        self.weights = None  # the last trained classifier: (mean, std, w, b)

    def tighten(self) -> str | None:
        if self.keep_share <= 0.05:
            return None
        before, self.keep_share = self.keep_share, max(0.05, self.keep_share / 2)
        return f"keep_share {before:.3g} -> {self.keep_share:.3g}"

    # --- features -----------------------------------------------------------------------------

    def features(self, policy, generator, examples: list[Example], seed: int,
                 task=None) -> list[list[float]]:
        """One row of ``FEATURES`` per example (agreement and length: of the extracted answers)."""
        if not examples:
            return []
        extract = extractor(task)
        token_lps = token_logprobs(policy, examples, self.batch_size)
        prompts = [e.prompt for e in examples]
        budget = example_budget(examples, task)
        samples = (generator.generate(policy, prompts, n=self.votes, temperature=self.temperature,
                                      max_new_tokens=budget, seed=seed)
                   if self.votes > 0 else [[] for _ in examples])
        peers = list(getattr(policy, "peers", None) or [])
        per_peer = [greedy_answers(p, generator, prompts, max_new_tokens=budget, seed=seed)
                    for p in peers]
        rows = []
        for k, (e, lps, group) in enumerate(zip(examples, token_lps, samples)):
            group = [extract(s) for s in group]
            label = extract(e.completion)
            lengths = Counter(len(s) for s in group + [label])
            rows.append([
                min(lps), sum(lps) / len(lps),
                sum(s == label for s in group) / len(group) if group else 0.0,
                sum(extract(a[k]) == label for a in per_peer) / len(per_peer) if per_peer else 0.0,
                1.0 if len(label) == lengths.most_common(1)[0][0] else 0.0,
            ])
        return rows

    def training_data(self, policy, generator, history, seed,
                      task=None) -> tuple[list[list[float]], list[int]]:
        """Known-right and known-wrong (prompt, label) pairs from the history, their features."""
        extract = extractor(task)
        rng = random.Random(seed)
        labelled = [e for e in history if e.source == "labelled"]
        labelled = rng.sample(labelled, min(len(labelled), self.train_size))
        examples, y = [], []
        if labelled:
            prompts = [e.prompt for e in labelled]
            budget = example_budget(labelled, task)
            greedy = greedy_answers(policy, generator, prompts, max_new_tokens=budget, seed=seed)
            sampled = generator.generate(policy, prompts, n=self.negatives, temperature=1.0,
                                         max_new_tokens=budget, seed=seed + 1)
            for e, g, group in zip(labelled, greedy, sampled):
                examples.append(e)
                y.append(1)
                for wrong in dict.fromkeys([g] + [s.strip() for s in group]):
                    if wrong and extract(wrong) != extract(e.completion):
                        examples.append(Example(e.prompt, wrong, e.difficulty, "negative"))
                        y.append(0)
        if self.use_audits:
            audited = [e for e in history
                       if e.source != "labelled" and e.meta.get("audit_answer") is not None]
            for e in rng.sample(audited, min(len(audited), self.train_size)):
                examples.append(e)
                y.append(int(extract(e.completion) == e.meta["audit_answer"]))
        return self.features(policy, generator, examples, seed + 2, task), y

    # --- the classifier -----------------------------------------------------------------------

    def fit(self, x: list[list[float]], y: list[int]) -> None:
        """L2-regularized logistic regression on standardized features (L-BFGS)."""
        import torch

        X = torch.tensor(x, dtype=torch.float64)
        Y = torch.tensor(y, dtype=torch.float64)
        mean, std = X.mean(0), X.std(0).clamp(min=1e-6)
        Z = (X - mean) / std
        w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(Z @ w + b, Y) \
                + self.l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weights = (mean, std, w.detach(), b.detach())

    def score(self, x: list[list[float]]) -> list[float]:
        import torch

        X = torch.tensor(x, dtype=torch.float64)
        if self.weights is None:  # no training data: the mean token log-probability
            return X[:, FEATURES.index("mean_logp")].tolist()
        mean, std, w, b = self.weights
        return torch.sigmoid(((X - mean) / std) @ w + b).tolist()

    # --- the selector -------------------------------------------------------------------------

    def select(self, examples, *, task=None, policy=None, generator=None, round_index=0, rng=None,
               history=()):
        judged = [e for e in examples if e.unverified]
        if not judged:
            return Selection(list(examples), SelectionReport("quality_classifier", len(examples)))
        if policy is None or generator is None:
            raise ValueError("quality_classifier needs the policy and a generator for its features")
        seed = rng.randrange(2**31) if rng is not None else round_index
        x, y = self.training_data(policy, generator, list(history), seed, task)
        measured: dict = {"classifier_trained_on": len(y)}
        self.weights = None
        if len(set(y)) == 2:
            self.fit(x, y)
            measured["classifier_auc_train"] = auc(self.score(x), y)
        scores = self.score(self.features(policy, generator, judged, seed + 3, task))
        order = sorted(range(len(judged)), key=lambda i: -scores[i])
        keep = {id(judged[i]) for i in order[:math.ceil(self.keep_share * len(judged))]}
        for e, s in zip(judged, scores):
            e.meta["quality"] = s
        kept = [e for e in examples if not e.unverified or id(e) in keep]
        measured.update(precision_recall(judged, keep, extractor(task)))
        dropped = len(examples) - len(kept)
        return Selection(kept, QualityReport("quality_classifier", len(kept),
                                             {"low_quality": dropped} if dropped else {},
                                             measured=measured))


def precision_recall(judged, keep_ids, extract=str.strip) -> dict:
    """Precision and recall of the kept labels against the recorded truth (where there is one)."""
    audited = [e for e in judged if e.meta.get("audit_answer") is not None]
    if not audited:
        return {}
    right = {id(e) for e in audited if extract(e.completion) == e.meta["audit_answer"]}
    kept = [e for e in audited if id(e) in keep_ids]
    kept_right = sum(id(e) in right for e in kept)
    return {"precision": kept_right / len(kept) if kept else None,
            "recall": kept_right / len(right) if right else None,
            "label_accuracy_before": len(right) / len(audited)}


def auc(scores, labels) -> float | None:
    """The probability a random positive scores above a random negative (ties count half)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    ranked = sorted(scores)
    rank = {}
    for i, s in enumerate(ranked):  # average ranks of ties
        rank.setdefault(s, []).append(i + 1)
    r = sum(sum(rank[s]) / len(rank[s]) for s in pos)
    return (r - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def token_logprobs(policy, examples, batch_size: int = 512) -> list[list[float]]:
    """Each example's per-token log-probabilities of its completion and EOS under the policy."""
    tok = policy.tokenizer
    prompts = tok([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    completions = tok([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    return completion_logprobs(policy, prompts, [c + [tok.eos_token_id] for c in completions],
                               batch_size=batch_size)


@hookimpl(trylast=True)
def register_selector(register):
    register("quality_classifier", QualityClassifier,
             description="a per-round logistic quality classifier on model-computed features "
                         "(likelihoods, agreement, length) keeps the top share of self-labels")
