"""Agreement filter: keep a self-label only when independent answers agree with it.

For every example without a ground-truth label, more answers are drawn: ``votes`` samples at
``temperature`` from the policy; the greedy answers of ``views`` views of the same model, its
abacus positions at offsets 0, ``view_spacing``, 2·``view_spacing``... (a model trained at random
offsets makes different mistakes at different offsets; skipped for models without such positions);
and the greedy answer of each model directory in ``checkpoints`` (independently seeded models).
The example is kept when at least ``threshold`` of all votes, its own label included, give the
same answer. With ``relabel`` the majority answer replaces the
label first, when the majority reaches the threshold. Labelled examples pass through.
"""

from __future__ import annotations

from collections import Counter

from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import greedy_across_offsets
from selfloop.core.tunable import tunable
from selfloop.core.types import Selection, SelectionReport

VOTES = tunable(2, low=0, high=32)
VIEWS = tunable(5, low=0, high=16)
VIEW_SPACING = tunable(2, low=1, high=8)
THRESHOLD = tunable(0.8, low=0.0, high=1.0)
TEMPERATURE = tunable(0.5, low=0.05, high=2.0)
RELABEL = tunable(True, choices=(False, True))


class MajorityAgreement:
    """Keeps self-labels that at least ``threshold`` of the votes agree with."""

    def __init__(self, votes: int = VOTES, threshold: float = THRESHOLD,
                 temperature: float = TEMPERATURE, relabel: bool = RELABEL,
                 checkpoints: list[str] | None = None, slack_tokens: int = 2,
                 views: int = VIEWS, view_spacing: int = VIEW_SPACING):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.votes, self.threshold, self.temperature = votes, threshold, temperature
        self.relabel, self.slack_tokens = relabel, slack_tokens
        self.views, self.view_spacing = views, view_spacing
        self.checkpoints = list(checkpoints or [])
        self._peers = None

    def peers(self):
        if self._peers is None:
            from selfloop.core.models import load_policy

            self._peers = [load_policy(path) for path in self.checkpoints]
        return self._peers

    def ballots(self, examples, policy, generator, seed) -> list[list[str]]:
        """Every example's votes: its own label, the samples, and each peer's greedy answer."""
        prompts = [e.prompt for e in examples]
        longest = max(e.difficulty for e in examples) + 1 + self.slack_tokens
        ballots = [[e.completion] for e in examples]
        if self.votes > 0:
            samples = generator.generate(policy, prompts, n=self.votes, temperature=self.temperature,
                                         max_new_tokens=longest, seed=seed)
            for ballot, group in zip(ballots, samples):
                ballot.extend(s.strip() for s in group)
        for ballot, answers in zip(ballots, greedy_across_offsets(
                policy, generator, prompts, views=self.views, spacing=self.view_spacing,
                max_new_tokens=longest, seed=seed)):
            ballot.extend(answers)
        for peer in self.peers():
            answers = generator.generate(peer, prompts, n=1, temperature=0.0,
                                         max_new_tokens=longest, seed=seed)
            for ballot, group in zip(ballots, answers):
                ballot.append(group[0].strip())
        return ballots

    def select(self, examples, *, task=None, policy=None, generator=None, round_index=0, rng=None,
               history=()):
        unlabelled = [e for e in examples if e.unverified]
        if not unlabelled:
            return Selection(list(examples), SelectionReport("majority_agreement", len(examples)))
        if policy is None or generator is None:
            raise ValueError("majority_agreement needs the policy and a generator to draw votes")
        seed = rng.randrange(2**31) if rng is not None else round_index
        verdicts = {}
        for example, ballot in zip(unlabelled, self.ballots(unlabelled, policy, generator, seed)):
            answer, count = Counter(ballot).most_common(1)[0]
            agree = ballot.count(example.completion) / len(ballot)
            if self.relabel and count / len(ballot) >= self.threshold:
                verdicts[id(example)] = (answer, count / len(ballot))
            elif agree >= self.threshold:
                verdicts[id(example)] = (example.completion, agree)
        kept = []
        for example in examples:
            if not example.unverified:
                kept.append(example)
            elif id(example) in verdicts:
                completion, agreement = verdicts[id(example)]
                example.completion = completion
                example.meta["agreement"] = agreement
                kept.append(example)
        dropped = len(examples) - len(kept)
        return Selection(kept, SelectionReport("majority_agreement", len(kept),
                                               {"disagreement": dropped} if dropped else {}))


@hookimpl(trylast=True)
def register_selector(register):
    register("majority_agreement", MajorityAgreement,
             description="keeps self-labels that a majority of sampled/peer answers agree with")
