"""Agreement filter: keep a self-label only when independent answers agree with it.

For every example without a ground-truth label, the policy answers again: ``votes`` samples at
``temperature``, and the greedy answers of ``views`` views of the same model, its abacus positions
at offsets 0, ``view_spacing``, 2·``view_spacing``... (a model trained at random offsets makes
different mistakes at different offsets; skipped for models without such positions). Its answer is
the most common one of these and its own label, if at least ``threshold`` of them give it. An
answer is what the task extracts from a completion (``extract_answer``), so two phrasings of one
answer agree; the votes are drawn within the task's budget (``max_new_tokens``).

Without peers, that answer is kept (with ``relabel``; without, only when it is the label). With
peer models (the policy's ``peers`` and the model directories in ``checkpoints``, independently
seeded), every model has one vote: the policy votes its answer (or abstains when under the
threshold), each peer its greedy answer, and the answer at least ``quorum`` of the models give is
kept. One model repeats its own mistakes however often it is asked; another model seldom shares
them, and the majority can correct the policy (with ``relabel``). Labelled examples pass through.

After a round the lifecycle's admission gate rejects, ``tighten()`` raises both shares halfway to
unanimity: fewer, surer labels.
"""

from __future__ import annotations

from collections import Counter

from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import greedy_answers
from selfloop.core.tunable import tunable
from selfloop.core.types import Selection, SelectionReport

from ..model.abacus import greedy_across_offsets
from ..refine.answers import example_budget, extractor, vote

VOTES = tunable(2, low=0, high=32)
VIEWS = tunable(5, low=0, high=16)
VIEW_SPACING = tunable(2, low=1, high=8)
THRESHOLD = tunable(0.8, low=0.0, high=1.0)
TEMPERATURE = tunable(0.5, low=0.05, high=2.0)
RELABEL = tunable(True, choices=(False, True))
QUORUM = tunable(0.6, low=0.0, high=1.0)  # share of models (policy and peers) that must agree


def stricter(share: float) -> float:
    """Halfway from ``share`` to 1 (a share within a thousandth of 1 becomes 1)."""
    return 1.0 if share >= 0.999 else share + (1.0 - share) / 2


class MajorityAgreement:
    """Keeps self-labels that at least ``threshold`` of the votes agree with."""

    def __init__(self, votes: int = VOTES, threshold: float = THRESHOLD,
                 temperature: float = TEMPERATURE, relabel: bool = RELABEL,
                 checkpoints: list[str] | None = None,
                 views: int = VIEWS, view_spacing: int = VIEW_SPACING, quorum: float = QUORUM):
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= quorum <= 1.0:
            raise ValueError(f"threshold and quorum must be in [0, 1], got {threshold}, {quorum}")
        self.quorum = quorum
        self.votes, self.threshold, self.temperature = votes, threshold, temperature
        self.relabel = relabel
        self.views, self.view_spacing = views, view_spacing
        self.checkpoints = list(checkpoints or [])
        self._peers = None

    def tighten(self) -> str | None:
        """Stricter after a rejected round: ``threshold`` and ``quorum`` halve their distance to 1."""
        if self.threshold == 1.0 and self.quorum == 1.0:
            return None
        change = (f"threshold {self.threshold:.3g} -> {stricter(self.threshold):.3g}, "
                  f"quorum {self.quorum:.3g} -> {stricter(self.quorum):.3g}")
        self.threshold, self.quorum = stricter(self.threshold), stricter(self.quorum)
        return change

    def peers(self, policy) -> list:
        if self._peers is None:
            from selfloop.core.models import load_policy

            self._peers = [load_policy(path) for path in self.checkpoints]
        return list(getattr(policy, "peers", None) or []) + self._peers

    def ballots(self, examples, policy, generator, seed, task=None
                ) -> tuple[list[list[str]], list[list[str]]]:
        """Every example's own ballot (its label, the samples, the views) and its peers' answers."""
        prompts = [e.prompt for e in examples]
        budget = example_budget(examples, task)
        ballots = [[e.completion] for e in examples]
        if self.votes > 0:
            samples = generator.generate(policy, prompts, n=self.votes, temperature=self.temperature,
                                         max_new_tokens=budget, seed=seed)
            for ballot, group in zip(ballots, samples):
                ballot.extend(s.strip() for s in group)
        for ballot, answers in zip(ballots, greedy_across_offsets(
                policy, generator, prompts, views=self.views, spacing=self.view_spacing,
                max_new_tokens=budget, seed=seed)):
            ballot.extend(answers)
        per_peer = [greedy_answers(peer, generator, prompts, max_new_tokens=budget, seed=seed)
                    for peer in self.peers(policy)]
        return ballots, [list(answers) for answers in zip(*per_peer)] if per_peer else [[] for _ in examples]

    def verdict(self, label: str, ballot: list[str], peer_answers: list[str],
                extract=str.strip) -> tuple[str, float] | None:
        """The completion to keep for one example and its agreement, or None to drop it.

        Completions vote for the answer ``extract`` finds in them (none: they abstain); the kept
        completion is the label when its answer won, else the first completion giving the winner.
        """
        answers = [extract(c) for c in ballot]
        mine = extract(label)
        won = vote(ballot, extract)
        own = won[1] if won is not None and won[2] / len(ballot) >= self.threshold else None
        if not self.relabel and own != mine:
            own = mine if mine and answers.count(mine) / len(ballot) >= self.threshold else None
        candidates = [label, *ballot, *peer_answers]
        if not peer_answers:
            if own is None:
                return None
            return next(c for c in candidates if extract(c) == own), answers.count(own) / len(ballot)
        models = 1 + len(peer_answers)
        votes = Counter(a for a in [extract(c) for c in peer_answers] + [own] if a)
        if not votes:
            return None
        answer, count = votes.most_common(1)[0]
        if count / models < self.quorum or (not self.relabel and answer != mine):
            return None
        return next(c for c in candidates if extract(c) == answer), count / models

    def select(self, examples, *, task=None, policy=None, generator=None, round_index=0, rng=None,
               history=()):
        unlabelled = [e for e in examples if e.unverified]
        if not unlabelled:
            return Selection(list(examples), SelectionReport("majority_agreement", len(examples)))
        if policy is None or generator is None:
            raise ValueError("majority_agreement needs the policy and a generator to draw votes")
        seed = rng.randrange(2**31) if rng is not None else round_index
        extract = extractor(task)
        verdicts = {}
        ballots, peer_answers = self.ballots(unlabelled, policy, generator, seed, task)
        for example, ballot, peers in zip(unlabelled, ballots, peer_answers):
            verdict = self.verdict(example.completion, ballot, peers, extract)
            if verdict is not None:
                verdicts[id(example)] = verdict
        kept = []
        for example in examples:
            if not example.unverified:
                kept.append(example)
            elif id(example) in verdicts:
                completion, agreement = verdicts[id(example)]
                example.completion = completion
                example.meta["agreement"] = agreement
                example.meta["extracted_answer"] = extract(completion)
                kept.append(example)
        dropped = len(examples) - len(kept)
        return Selection(kept, SelectionReport("majority_agreement", len(kept),
                                               {"disagreement": dropped} if dropped else {}))


@hookimpl(trylast=True)
def register_selector(register):
    register("majority_agreement", MajorityAgreement,
             description="keeps self-labels that a majority of sampled/peer answers agree with")
