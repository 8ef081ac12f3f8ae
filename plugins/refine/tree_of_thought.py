"""Tree-of-Thought (Yao et al. 2023) as a test-time refiner: beam search over partial answers.

A node is a prefix of the answer. Each depth expands every node of the beam into ``width``
children, scores the children with a value function, and keeps the ``beam`` best; a child that
ends the answer (EOS) leaves the beam for the pool of finished answers, and the answer is the best
of the pool. Dropping a low-valued branch and carrying on from a sibling is the search's
backtracking.

What a step is:
- by default one token: the children are the policy's ``width`` most likely next tokens. For the
  embedded task a prefix is a run of answer digits.
- with ``step_delimiter`` (a reasoning task whose steps end with, say, ``"\\n"``), one step: the
  children are ``width`` continuations sampled at ``temperature`` up to the delimiter (at most
  ``step_tokens`` tokens).

The value of a prefix (``value``):
- ``"confidence"``: the policy's log-probability of the prefix (the model's own confidence);
- ``"rewarder"``: every child is completed greedily and the run's rewarder scores the completed
  answers of a problem as one group (``majority_vote``: how many branches reach the same answer);
  the final answer is the rewarder's best of the finished ones;
- ``"peers"``: the mean log-probability of the prefix under the policy and its peer models
  (``model.peers``): the prefix the models agree on. Without peers it is ``"confidence"``.

Cost: ``tokens`` counts decoding steps of any model (one per expanded node and model, one per
rolled-out or sampled token), the unit self-consistency spends per sampled token; with ``beam = k``
and ``width`` children, a confidence search of an n-token answer costs about ``k * n``, like
``k`` samples. ``budget_tokens`` caps it per problem: once spent, the best node of the beam is
completed greedily. ``last_tokens`` holds the tokens of the last call, per problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from selfloop.core.hookspecs import hookimpl
from selfloop.core.models import completion_logprobs
from selfloop.core.tunable import tunable

from .answers import answer_budget

WIDTH = tunable(3, low=1, high=16)
BEAM = tunable(3, low=1, high=32)
VALUES = ("confidence", "rewarder", "peers")


@dataclass
class Node:
    text: str  # the answer prefix
    logp: float = 0.0  # the policy's log-probability of the prefix
    peer_logp: tuple[float, ...] = ()  # each peer's
    done: bool = False
    value: float = 0.0


class TreeOfThought:
    """Beam search over answer prefixes with a value function and a token budget."""

    def __init__(self, width: int = WIDTH, beam: int = BEAM, depth: int | None = None,
                 value: str = "confidence", budget_tokens: int | None = None,
                 step_delimiter: str | None = None, step_tokens: int = 32,
                 temperature: float = 0.7):
        if value not in VALUES:
            raise ValueError(f"value must be one of {', '.join(VALUES)}, got {value!r}")
        if width < 1 or beam < 1:
            raise ValueError("width and beam must be at least 1")
        self.width, self.beam, self.depth, self.value = width, beam, depth, value
        self.budget_tokens, self.step_delimiter, self.step_tokens = budget_tokens, step_delimiter, step_tokens
        self.temperature = temperature
        self.task = None  # the task of the current call (its budget, and the rewarder's answers)
        self.last_tokens: list[int] = []

    # --- the search ---------------------------------------------------------------------------

    def refine(self, policy, problems, *, generator, rewarder=None, seed=0, task=None):
        self.task = task
        if not problems:
            return []
        if self.value == "rewarder" and rewarder is None:
            raise ValueError("tree_of_thought with value = 'rewarder' needs the run's rewarder")
        problems = list(problems)
        peers = list(getattr(policy, "peers", None) or []) if self.value == "peers" else []
        max_tokens = answer_budget(problems, task)
        depth = self.depth or (max_tokens if self.step_delimiter is None else 8)
        beams = [[Node("", peer_logp=tuple(0.0 for _ in peers))] for _ in problems]
        pools: list[list[Node]] = [[] for _ in problems]
        spent = [0] * len(problems)
        for level in range(depth):
            active = [i for i, b in enumerate(beams) if b and not self._over(spent[i])]
            if not active:
                break
            children = self._expand(policy, peers, problems, beams, active, spent, generator,
                                    seed + level)
            self._score(policy, problems, children, active, spent, generator, rewarder,
                        max_tokens, seed + level)
            for i in active:
                ranked = sorted(children[i], key=lambda n: (n.value, n.logp), reverse=True)
                kept = ranked[:self.beam]
                pools[i] += [n for n in kept if n.done]
                beams[i] = [n for n in kept if not n.done]
        answers = self._finish(policy, problems, beams, pools, spent, generator, rewarder,
                               max_tokens, seed)
        self.last_tokens = spent
        return answers

    def _over(self, spent: int) -> bool:
        return self.budget_tokens is not None and spent >= self.budget_tokens

    def _expand(self, policy, peers, problems, beams, active, spent, generator, seed):
        """Each active problem's children of its beam's nodes."""
        children: dict[int, list[Node]] = {i: [] for i in active}
        nodes = [(i, n) for i in active for n in beams[i]]
        prompts = [problems[i].prompt + n.text for i, n in nodes]
        if self.step_delimiter is None:  # children: the most likely next tokens
            eos = policy.tokenizer.eos_token_id
            per_model = [next_token_logprobs(m, prompts) for m in [policy, *peers]]
            for k, (i, node) in enumerate(nodes):
                spent[i] += 1 + len(peers)
                row = per_model[0][k]
                for token in row.topk(min(self.width, row.numel())).indices.tolist():
                    text = "" if token == eos else policy.tokenizer.decode([token])
                    children[i].append(Node(
                        node.text + text, node.logp + float(row[token]),
                        tuple(p + float(lp[k][token])
                              for p, lp in zip(node.peer_logp, per_model[1:])),
                        done=token == eos))
            return children
        samples = generator.generate(policy, prompts, n=self.width, temperature=self.temperature,
                                     max_new_tokens=self.step_tokens, seed=seed)
        for (i, node), group in zip(nodes, samples):
            seen = set()
            for sample in group:
                spent[i] += len(policy.tokenizer(sample, add_special_tokens=False)["input_ids"]) + 1
                cut = sample.find(self.step_delimiter)
                step = sample if cut < 0 else sample[:cut + len(self.step_delimiter)]
                if step in seen:
                    continue
                seen.add(step)
                children[i].append(Node(node.text + step, done=cut < 0))
        flat = [(i, n) for i in active for n in children[i]]
        for model, key in [(policy, None)] + [(p, j) for j, p in enumerate(peers)]:
            logps = continuation_logps(model, [problems[i].prompt for i, _ in flat],
                                       [n.text for _, n in flat], [n.done for _, n in flat])
            for (_, n), lp in zip(flat, logps):
                if key is None:
                    n.logp = lp
                else:
                    n.peer_logp = n.peer_logp + (lp,)
        return children

    def _score(self, policy, problems, children, active, spent, generator, rewarder, max_tokens,
               seed):
        if self.value == "confidence":
            for i in active:
                for n in children[i]:
                    n.value = n.logp
        elif self.value == "peers":
            for i in active:
                for n in children[i]:
                    n.value = (n.logp + sum(n.peer_logp)) / (1 + len(n.peer_logp))
        else:
            flat = [(i, n) for i in active for n in children[i]]
            completed = self._complete(policy, problems, flat, spent, generator, max_tokens, seed)
            groups = {i: [] for i in active}
            for (i, n), answer in zip(flat, completed):
                groups[i].append(answer)
            scores = rewarder.reward([problems[i] for i in active], [groups[i] for i in active],
                                     task=self.task)
            for i, group_scores in zip(active, scores):
                for n, s in zip(children[i], group_scores):
                    n.value = float(s)

    def _complete(self, policy, problems, flat, spent, generator, max_tokens, seed) -> list[str]:
        """Each node's answer completed greedily (finished nodes are their own answer)."""
        todo = [k for k, (_, n) in enumerate(flat) if not n.done]
        answers = [n.text.strip() for _, n in flat]
        if todo:
            out = generator.generate(policy, [problems[flat[k][0]].prompt + flat[k][1].text
                                              for k in todo],
                                     n=1, temperature=0.0, max_new_tokens=max_tokens, seed=seed)
            for k, group in zip(todo, out):
                i, n = flat[k]
                spent[i] += len(policy.tokenizer(group[0], add_special_tokens=False)["input_ids"]) + 1
                answers[k] = (n.text + group[0]).strip()
        return answers

    def _finish(self, policy, problems, beams, pools, spent, generator, rewarder, max_tokens,
                seed) -> list[str]:
        """The best finished answer of each problem; a problem with none completes its best node."""
        need = [i for i in range(len(problems)) if not pools[i]]
        if need:
            flat = [(i, max(beams[i], key=lambda n: (n.value, n.logp)) if beams[i] else Node(""))
                    for i in need]
            for (i, node), answer in zip(flat, self._complete(policy, problems, flat, spent,
                                                              generator, max_tokens, seed)):
                pools[i].append(Node(answer, node.logp, node.peer_logp, True, node.value))
        if self.value == "rewarder":  # the finished answers of a problem, scored as one group
            groups = [[n.text.strip() for n in pool] for pool in pools]
            scores = rewarder.reward(problems, groups, task=self.task)
            for pool, group_scores in zip(pools, scores):
                for n, s in zip(pool, group_scores):
                    n.value = float(s)
        return [max(pool, key=lambda n: (n.value, n.logp)).text.strip() for pool in pools]


# --- model scores -------------------------------------------------------------------------------

def next_token_logprobs(policy, texts, batch_size: int = 512) -> list:
    """The log-probabilities of every next token after each text, a tensor per text (eval mode)."""
    import torch

    tok, model = policy.tokenizer, policy.model
    encoded = tok(list(texts), add_special_tokens=False)["input_ids"]
    out: list = [None] * len(texts)
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for idx in by_length.values():
                for s in range(0, len(idx), batch_size):
                    chunk = idx[s:s + batch_size]
                    ids = torch.tensor([encoded[i] for i in chunk], dtype=torch.long)
                    # an explicit mask: without one, transformers reads abacus ids as packed sequences
                    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
                    for i, row in zip(chunk, torch.log_softmax(logits.float(), -1)):
                        out[i] = row
    finally:
        model.train(was_training)
    return out


def continuation_logps(policy, prompts, continuations, ended, batch_size: int = 512) -> list[float]:
    """log p(continuation [+ EOS where ``ended``] | prompt) under the policy, each pair."""
    tok = policy.tokenizer
    p_ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
    c_ids = [tok(c, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else [])
             if c or e else [] for c, e in zip(continuations, ended)]
    rows = completion_logprobs(policy, p_ids, c_ids, batch_size=batch_size)
    return [(v if math.isfinite(v) else -1e9) for v in (sum(row) for row in rows)]


@hookimpl(trylast=True)
def register_refiner(register):
    register("tree_of_thought", TreeOfThought,
             description="Tree-of-Thought: beam search over answer prefixes (digits or steps) with "
                         "a value: confidence, rewarder or peer agreement; a token budget")
