"""Self-consistency (Wang et al. 2023): the most common answer over ``samples`` samples.

Votes compare the answers the task extracts (``extract_answer``): two phrasings of one answer are
one answer. The refiner returns a whole completion (reasoning and answer) that gives the winner,
the first one that does, so the task's verifier sees what the model wrote.

The greedy answer is one of the votes when ``include_greedy`` is set, which breaks ties toward it.
With ``views``, the greedy answers of the same model at other position offsets (0, ``view_spacing``,
...) vote too, for models whose abacus positions take an offset (see
``selfloop.plugins.model.abacus.position_offset``); other models skip them.

With ``peer_vote``, the policy's peer models (``model.peers``, independently seeded) answer greedily
as well, and the models vote: the policy with its majority answer, each peer with its own, one vote
each, a tie going to the policy. Each peer costs one more greedy pass.
"""

from __future__ import annotations

from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import greedy_answers
from selfloop.core.tunable import tunable

from ..model.abacus import greedy_across_offsets
from .answers import answer_budget, extractor, vote

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

    def refine(self, policy, problems, *, generator, rewarder=None, seed=0, task=None):
        if not problems:
            return []
        prompts, budget = [p.prompt for p in problems], answer_budget(problems, task)
        extract = extractor(task)
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
        # Ties go to the answer seen first, so the greedy answer wins a tie.
        answers = [winner(ballot, extract) for ballot in votes]
        peers = (getattr(policy, "peers", None) or []) if self.peer_vote else []
        per_peer = [greedy_answers(peer, generator, prompts, max_new_tokens=budget, seed=seed)
                    for peer in peers]
        # One vote per model, the policy's first: a tie goes to it.
        return [winner(list(models), extract) for models in zip(answers, *per_peer)]


def winner(completions: list[str], extract) -> str:
    """The first completion giving the most common answer (the first one when none gives any)."""
    won = vote(completions, extract)
    return won[0] if won is not None else (completions[0] if completions else "")


@hookimpl(trylast=True)
def register_refiner(register):
    register("self_consistency", SelfConsistency,
             description="majority answer over k sampled completions")
