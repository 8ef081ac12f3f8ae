"""SPIN, Tree-of-Thought and the quality classifier do what they claim, and the TRL guards hold."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from plugin_fixtures import TASK, labelled, tiny_policy
from selfloop.core.types import Example, Policy, Problem
from selfloop.plugins.generate.batched import BatchedGenerator
from selfloop.plugins.model.embedded import build_tokenizer
from selfloop.plugins.optimize._trl_common import sequence_logps, trained_in_place
from selfloop.plugins.optimize.rejection_sft import RejectionSFT
from selfloop.plugins.optimize.spin import SPIN
from selfloop.plugins.refine.tree_of_thought import TreeOfThought
from selfloop.plugins.reward.ground_truth import GroundTruthReward
from selfloop.plugins.reward.majority_vote import MajorityVoteReward
from selfloop.plugins.select.quality_classifier import QualityClassifier, auc

# --- SPIN ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_spin_step_prefers_the_target_over_the_previous_iterates_answers(tmp_path):
    policy = tiny_policy()
    policy.peers = []
    data = labelled(48)
    spin = SPIN(steps=15, batch_size=8, lr=2e-3, beta=0.1, sft_weight=0.0)
    rows = spin.pairs(policy, data, generator=BatchedGenerator(progress=False), seed=123)
    assert rows and all(r["chosen"] != r["rejected"] for r in rows)

    def margin():
        return sum(c - r for c, r in zip(sequence_logps(policy, rows, "chosen"),
                                         sequence_logps(policy, rows, "rejected"))) / len(rows)

    before = margin()
    result = spin.optimize(policy, data, task=TASK, generator=BatchedGenerator(progress=False),
                           rewarder=GroundTruthReward(), rng=random.Random(0), workdir=tmp_path,
                           round_index=1)
    assert result.metrics["steps"] == 15 and result.metrics["pairs"] > 0
    # the loss -log sigmoid(beta * margin) fell: the margin of chosen over rejected grew
    assert margin() > before + 1.0
    assert policy.model.config.use_cache and not policy.model.training


def test_spin_options_are_checked():
    with pytest.raises(ValueError, match="iterations"):
        SPIN(iterations=0)
    with pytest.raises(ValueError, match="targets"):
        SPIN(targets="everything")
    labelled_only = SPIN(targets="labelled").target_examples(
        labelled(3) + [Example("12+34=", "460", 2, "self_label")])
    assert [e.source for e in labelled_only] == ["labelled"] * 3


def test_trl_guards_restore_the_model_and_let_generate_see_the_cache():
    policy = tiny_policy()
    model = policy.model
    prompts = ["12+34=", "5+6=", "123+456="]
    ours = BatchedGenerator(progress=False).generate(policy, prompts, n=1, temperature=0.0,
                                                     max_new_tokens=5, seed=0)
    tok = policy.tokenizer
    with trained_in_place(model):
        model.train()
        model.config.use_cache = False  # what TRL leaves behind
        assert model.selfloop_max_offset == 0  # positions at the inference offset meanwhile
        for prompt, (mine,) in zip(prompts, ours):  # generate() passes `cache=`: aliased
            ids = tok([prompt], add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=5, pad_token_id=tok.pad_token_id, use_cache=True)
            assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == mine
    assert model.config.use_cache and model.selfloop_max_offset == 4 and not model.training


# --- Tree-of-Thought ----------------------------------------------------------------------------

TABLE = {  # next-token probabilities after the answer prefix; the greedy path is not the best
    "": {"1": 0.6, "2": 0.4},
    "1": {"5": 0.34, "6": 0.33, "7": 0.33},
    "2": {"3": 1.0},
}


class TableModel(torch.nn.Module):
    """A causal LM whose next token depends only on the answer written so far (after '=')."""

    def __init__(self, tokenizer):
        super().__init__()
        self.tok = tokenizer
        self.training = False

    def forward(self, input_ids, attention_mask=None, **_):
        vocab = len(self.tok)
        logits = torch.full((*input_ids.shape, vocab), -30.0)
        for b, row in enumerate(input_ids.tolist()):
            text = self.tok.decode(row, skip_special_tokens=True)
            answer = text.split("=", 1)[1]
            probs = TABLE.get(answer, {self.tok.eos_token: 1.0})
            for token, p in probs.items():
                logits[b, -1, self.tok.convert_tokens_to_ids(token)] = float(torch.tensor(p).log())
        return type("Out", (), {"logits": logits})()


class TableGenerator:
    """Greedy decoding of the table (what the rewarder's rollouts use)."""

    def generate(self, policy, prompts, *, n, temperature, max_new_tokens, seed):
        out = []
        for prompt in prompts:
            answer = prompt.split("=", 1)[1]
            text = ""
            while (answer + text) in TABLE and len(text) < max_new_tokens:
                options = TABLE[answer + text]
                text += max(options, key=options.get)
            out.append([text] * n)
        return out


class PlantedReward:
    def __init__(self, best):
        self.best = best

    def reward(self, problems, completions, *, task=None):
        return [[1.0 if c.strip() == self.best else 0.0 for c in group] for group in completions]


def table_policy():
    tok = build_tokenizer()
    return Policy(model=TableModel(tok), tokenizer=tok)


def test_tree_of_thought_finds_the_planted_best_answer_greedy_misses():
    policy, problem = table_policy(), [Problem("1+1=", None, 1)]
    generator = TableGenerator()
    greedy = TreeOfThought(beam=1, width=1).refine(policy, problem, generator=generator)
    assert greedy == ["15"] == [generator.generate(policy, ["1+1="], n=1, temperature=0,
                                                   max_new_tokens=4, seed=0)[0][0]]
    # confidence: p("23") = 0.4 beats p("15") = 0.204 once the search keeps a second branch
    assert TreeOfThought(beam=2, width=2).refine(policy, problem, generator=generator) == ["23"]
    # a rewarder that only likes a low-probability branch: the search reaches it, greedy does not
    found = TreeOfThought(beam=3, width=3, value="rewarder").refine(
        policy, problem, generator=generator, rewarder=PlantedReward("16"))
    assert found == ["16"]


def test_tree_of_thought_counts_tokens_and_keeps_to_its_budget():
    policy, problem = table_policy(), [Problem("1+1=", None, 1)]
    wide = TreeOfThought(beam=3, width=3)
    wide.refine(policy, problem, generator=TableGenerator())
    capped = TreeOfThought(beam=3, width=3, budget_tokens=3)
    answer = capped.refine(policy, problem, generator=TableGenerator())
    assert capped.last_tokens[0] < wide.last_tokens[0] and answer[0] in ("15", "23", "16", "17")
    with pytest.raises(ValueError, match="value"):
        TreeOfThought(value="oracle")


def test_tree_of_thought_by_steps_on_a_real_model():
    policy = tiny_policy()
    problems = TASK.problems(2, 4, random.Random(0))
    answers = TreeOfThought(beam=2, width=2, step_delimiter="0", step_tokens=3, depth=2).refine(
        policy, problems, generator=BatchedGenerator(progress=False),
        rewarder=MajorityVoteReward())
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)


# --- the quality classifier ---------------------------------------------------------------------

def test_logistic_classifier_ranks_a_separable_feature():
    clf = QualityClassifier()
    x = [[float(i), 0.0, 0.0, 0.0, 1.0] for i in range(20)]
    y = [int(i >= 10) for i in range(20)]
    clf.fit(x, y)
    assert auc(clf.score(x), y) == 1.0
    assert auc([0.1, 0.9], [0, 1]) == 1.0 and auc([0.5, 0.5], [0, 1]) == 0.5


@pytest.mark.slow
def test_the_quality_classifier_ranks_known_good_above_known_bad(tmp_path):
    policy = tiny_policy()
    policy.peers = []
    history = labelled(300, difficulty=1)
    RejectionSFT(base_steps=250, batch_size=32, lr=3e-3, progress=False).optimize(
        policy, history, task=TASK, generator=BatchedGenerator(progress=False),
        rewarder=GroundTruthReward(), rng=random.Random(0), workdir=tmp_path, round_index=0)
    problems = TASK.problems(1, 40, random.Random(5))

    def wrong(answer):  # one digit off: the same length and format as the truth
        return str((int(answer[0]) + 3) % 10) + answer[1:]

    good = [Example(p.prompt, p.answer, 1, "self_label", meta={"audit_answer": p.answer})
            for p in problems]
    bad = [Example(p.prompt, wrong(p.answer), 1, "self_label", meta={"audit_answer": p.answer})
           for p in problems]
    selector = QualityClassifier(keep_share=0.5, votes=2, train_size=200)
    result = selector.select(good + bad, task=TASK, policy=policy,
                             generator=BatchedGenerator(progress=False), round_index=1,
                             rng=random.Random(0), history=history)
    scores = [e.meta["quality"] for e in good + bad]
    assert auc(scores, [1] * len(good) + [0] * len(bad)) > 0.8
    report = result.report.to_dict()
    assert report["kept"] == 40 and report["precision"] > 0.75
    assert report["classifier_trained_on"] > 200 and report["classifier_auc_train"] > 0.6
    assert selector.tighten() == "keep_share 0.5 -> 0.25"
