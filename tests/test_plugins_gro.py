"""Generation, reward, refinement, acquisition and evaluation plugins on a real tiny model."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from plugin_fixtures import tiny_policy
from selfloop.core.types import Problem
from selfloop.plugins.acquire.labelled import LabelledProblems
from selfloop.plugins.acquire.llm_self_instruct import LLMSelfInstruct
from selfloop.plugins.acquire.self_label import SelfLabel
from selfloop.plugins.evaluate.dynamic_benchmark import DynamicBenchmark
from selfloop.plugins.evaluate.held_out import HeldOut
from selfloop.plugins.generate.batched import BatchedGenerator
from selfloop.plugins.refine.best_of_n import BestOfN
from selfloop.plugins.refine.greedy import Greedy
from selfloop.plugins.refine.self_consistency import SelfConsistency
from selfloop.plugins.refine.self_refine import SelfRefine
from selfloop.plugins.reward.ground_truth import GroundTruthReward
from selfloop.plugins.reward.llm_judge import LLMJudgeReward
from selfloop.plugins.reward.majority_vote import MajorityVoteReward
from selfloop.plugins.tasks.reversed_addition import ReversedAddition

TASK = ReversedAddition()


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def test_batched_generator_matches_transformers_greedy_generate(policy):
    prompts = ["12+34=", "5+6=", "123+456=", "98+76="]  # mixed lengths: grouped, no padding
    ours = BatchedGenerator(batch_size=2).generate(policy, prompts, n=1, temperature=0.0,
                                                   max_new_tokens=5, seed=0)
    tok = policy.tokenizer
    for prompt, (mine,) in zip(prompts, ours):
        ids = tok([prompt], add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = policy.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                        max_new_tokens=5, pad_token_id=tok.pad_token_id)
        assert mine == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_sampling_is_seeded_and_returns_n_per_prompt(policy):
    gen = BatchedGenerator()
    a = gen.generate(policy, ["12+34=", "5+6="], n=3, temperature=1.0, max_new_tokens=4, seed=7)
    b = gen.generate(policy, ["12+34=", "5+6="], n=3, temperature=1.0, max_new_tokens=4, seed=7)
    assert a == b and [len(g) for g in a] == [3, 3]


def test_rewarders():
    problems = [Problem("12+34=", "460", 2)]
    assert GroundTruthReward().reward(problems, [["460", "461"]], task=TASK) == [[1.0, 0.0]]
    assert MajorityVoteReward().reward(problems, [["460", "460", "1"]]) == [[2 / 3, 2 / 3, 1 / 3]]
    judge = LLMJudgeReward(model="openai/gpt-4o-mini", mock_response="0.8")
    assert judge.reward(problems, [["460"]]) == [[0.8]]
    assert judge.llm.calls and judge.llm.calls[0].response == "0.8"


def test_refiners_return_one_answer_per_problem(policy):
    problems = TASK.problems(2, 5, random.Random(0))
    gen, reward = BatchedGenerator(), MajorityVoteReward()
    greedy = Greedy().refine(policy, problems, generator=gen, rewarder=reward, seed=0)
    assert len(greedy) == 5 and all(isinstance(a, str) for a in greedy)
    consistent = SelfConsistency(samples=4, temperature=1e-4).refine(
        policy, problems, generator=gen, rewarder=reward, seed=0)
    assert consistent == greedy  # every near-greedy sample agrees with the greedy answer
    # views only: one view at offset 0 is the greedy answer at offset 0
    from selfloop.plugins.model.abacus import position_offset

    with position_offset(policy, 0):
        at_zero = Greedy().refine(policy, problems, generator=gen, seed=0)
    viewed = SelfConsistency(samples=0, include_greedy=False, views=1).refine(
        policy, problems, generator=gen, seed=0)
    assert viewed == at_zero
    best = BestOfN(n=4).refine(policy, problems, generator=gen, rewarder=reward, seed=0)
    assert len(best) == 5
    refine = SelfRefine(model="openai/gpt-4o-mini", mock_response="123")
    assert refine.refine(policy, problems[:2], generator=gen, seed=0) == ["123", "123"]
    assert Greedy().refine(policy, [], generator=gen, seed=0) == []


def test_acquirers(policy):
    rng = random.Random(0)
    labelled = LabelledProblems(max_difficulty=2, per_difficulty=10)
    got = labelled.acquire(task=TASK, policy=policy, generator=None, round_index=0, rng=rng)
    assert len(got) == 20 and all(TASK.verify(Problem(e.prompt, e.completion, e.difficulty),
                                              e.completion) for e in got)
    assert labelled.acquire(task=TASK, policy=policy, generator=None, round_index=1, rng=rng) == []
    self_label = SelfLabel(start_difficulty=3, count=6, window=2, ahead=0)
    assert [self_label.difficulties(r) for r in (1, 2, 3)] == [[3], [3, 4], [4, 5]]
    ahead = SelfLabel(start_difficulty=3, window=3, ahead=1)
    assert [ahead.difficulties(r) for r in (1, 2, 3)] == [[3, 4], [3, 4, 5], [4, 5, 6]]
    assert self_label.acquire(task=TASK, policy=policy, generator=BatchedGenerator(),
                              round_index=0, rng=rng) == []
    got = self_label.acquire(task=TASK, policy=policy, generator=BatchedGenerator(),
                             round_index=2, rng=rng)
    assert len(got) == 12 and {e.difficulty for e in got} == {3, 4}
    assert all(e.source == "self_label" and e.meta["audit_answer"] for e in got)
    llm = LLMSelfInstruct(model="openai/gpt-4o-mini", difficulties=[2],
                          mock_response="21+43= 640\nnot a problem here\n55+55= 011")
    got = llm.acquire(task=TASK, policy=policy, generator=None, round_index=0, rng=rng)
    assert [(e.prompt, e.completion, e.source) for e in got] == [
        ("21+43=", "640", "llm"), ("55+55=", "011", "llm")]


def test_evaluators_decontaminate_and_measure_diversity(policy):
    seen = {p.prompt for p in TASK.problems(1, 200, random.Random(1))}  # all 1-digit sums
    bench = DynamicBenchmark(difficulties=[1, 3], per_difficulty=20)
    result = bench.evaluate(policy, task=TASK, refiner=Greedy(), generator=BatchedGenerator(),
                            rewarder=MajorityVoteReward(), seen_prompts=seen, seed=0)
    assert set(result.accuracy_by_difficulty) == {1, 3}
    assert result.details["contaminated_by_difficulty"].get(1, 0) > 0  # 1-digit space exhausted
    assert 3 not in result.details["contaminated_by_difficulty"]
    assert {"distinct_ratio", "char_entropy_bits", "accuracy"} <= set(result.metrics)
    held = HeldOut(difficulties=[2], per_difficulty=10)
    a = held.evaluate(policy, task=TASK, refiner=Greedy(), generator=BatchedGenerator(),
                      rewarder=None, seen_prompts=set(), seed=0)
    b = held.evaluate(policy, task=TASK, refiner=Greedy(), generator=BatchedGenerator(),
                      rewarder=None, seen_prompts=set(), seed=1)
    assert a.accuracy_by_difficulty == b.accuracy_by_difficulty and a.details["problems"] == 10


def test_vllm_generator_explains_what_it_needs(policy):
    from selfloop.core.errors import PluginError
    from selfloop.plugins.generate.vllm_generator import VLLMGenerator

    with pytest.raises(PluginError, match="vLLM|abacus"):
        VLLMGenerator().generate(policy, ["1+1="], n=1)


def test_self_consistency_gives_each_peer_model_one_vote():
    class Model:
        def __init__(self, name, peers=()):
            self.name, self.peers = name, list(peers)

    class TableGenerator:  # every model answers every prompt the same way, however often asked
        def generate(self, policy, prompts, *, n, temperature, max_new_tokens, seed):
            answers = {"policy": "11", "a": "22", "b": "22"}
            return [[answers[policy.name]] * n for _ in prompts]

    problems = TASK.problems(2, 3, random.Random(0))

    def refine(*peers, vote=True):
        return SelfConsistency(samples=3, peer_vote=vote).refine(
            Model("policy", peers=[Model(p) for p in peers]), problems, generator=TableGenerator(), seed=0)

    assert refine("a", "b", vote=False) == ["11"] * 3  # the policy's many samples are one vote...
    assert refine("a") == ["11"] * 3  # ...a tie goes to the policy...
    assert refine("a", "b") == ["22"] * 3  # ...and two peers outvote it
