"""Self-consistency (Wang et al. 2023): the most common answer over ``samples`` samples.

The greedy answer is one of the votes when ``include_greedy`` is set, which breaks ties toward it.
With ``views``, the greedy answers of the same model at other position offsets (0, ``view_spacing``,
...) vote too, for models whose abacus positions take an offset (see
``selfloop.plugins.model.abacus.position_offset``); other models skip them.

With ``peer_vote``, the policy's peer models (``model.peers``, independently seeded) answer greedily
as well, and the models vote: the policy with its majority answer, each peer with its own, one vote
each, a tie going to the policy. Each peer costs one more greedy pass.
"""

from __future__ import annotations

from collections import Counter

from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import greedy_answers
from selfloop.core.tunable import tunable

from ..model.abacus import greedy_across_offsets
from .greedy import answer_budget

SAMPLES = tunable(5, low=1, high=64)
TEMPERATURE = tunable(0.5, low=0.05, high=2.0)
INCLUDE_GREEDY = tunable(True, choices=(False, True))
VIEWS = tunable(0, low=0, high=16)
VIEW_SPACING = tunable(2, low=1, high=8)
PEER_VOTE = tunable(False, choices=(False, True))


class SelfConsistency:
    """Majority answer over sampled completions."""

    def __init__(self, samples: int = SAMPLES, temperature: float = TEMPERATURE,
                 include_greedy: bool = INCLUDE_GREEDY, views: int = VIEWS,
                 view_spacing: int = VIEW_SPACING, peer_vote: bool = PEER_VOTE):
        self.samples, self.temperature, self.include_greedy = samples, temperature, include_greedy
        self.views, self.view_spacing, self.peer_vote = views, view_spacing, peer_vote

    def refine(self, policy, problems, *, generator, rewarder=None, seed=0):
        if not problems:
            return []
        prompts, budget = [p.prompt for p in problems], answer_budget(problems)
        votes = [[] for _ in problems]
        if self.include_greedy:
            for ballot, group in zip(votes, generator.generate(
                    policy, prompts, n=1, temperature=0.0, max_new_tokens=budget, seed=seed)):
                ballot.append(group[0].strip())
        if self.samples > 0:
            for ballot, group in zip(votes, generator.generate(
                    policy, prompts, n=self.samples, temperature=self.temperature,
                    max_new_tokens=budget, seed=seed)):
                ballot.extend(s.strip() for s in group)
        for ballot, answers in zip(votes, greedy_across_offsets(
                policy, generator, prompts, views=self.views, spacing=self.view_spacing,
                max_new_tokens=budget, seed=seed)):
            ballot.extend(answers)
        # Counter.most_common keeps first-seen order on ties, so the greedy answer wins a tie.
        answers = [Counter(ballot).most_common(1)[0][0] for ballot in votes]
        peers = (getattr(policy, "peers", None) or []) if self.peer_vote else []
        per_peer = [greedy_answers(peer, generator, prompts, max_new_tokens=budget, seed=seed)
                    for peer in peers]
        # One vote per model, the policy's first: a tie goes to it.
        return [Counter(models).most_common(1)[0][0] for models in zip(answers, *per_peer)]


@hookimpl(trylast=True)
def register_refiner(register):
    register("self_consistency", SelfConsistency,
             description="majority answer over k sampled completions")
