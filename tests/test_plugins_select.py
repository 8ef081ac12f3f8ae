"""The data selectors: each keeps what it should, drops the rest, and says why."""

from __future__ import annotations

import random

import pytest
from plugin_fixtures import TASK, tiny_policy
from selfloop.core.types import Example
from selfloop.plugins.select.accumulate import Accumulate
from selfloop.plugins.select.cap_per_prompt import CapPerPrompt
from selfloop.plugins.select.dedup import Dedup
from selfloop.plugins.select.format_filter import FormatFilter
from selfloop.plugins.select.majority_agreement import MajorityAgreement


def ex(prompt, completion, difficulty=2, source="self_label", **meta):
    return Example(prompt, completion, difficulty, source, meta=meta)


class TableGenerator:
    """A deterministic generator: answers each prompt from a table of sample lists."""

    def __init__(self, table):
        self.table = table

    def generate(self, policy, prompts, *, n, temperature, max_new_tokens, seed):
        return [list(self.table[p])[:n] for p in prompts]


def test_dedup_drops_exact_repeats_only():
    result = Dedup().select([ex("1+2=", "30"), ex("1+2=", "30"), ex("1+2=", "31")])
    assert [e.completion for e in result.kept] == ["30", "31"]
    assert result.report.to_dict() == {"selector": "dedup", "kept": 2, "dropped": {"duplicate": 1}}


def test_format_filter_checks_pattern_and_length_when_asked():
    examples = [ex("12+34=", "460"), ex("12+34=", ""), ex("12+34=", "4a0"), ex("12+34=", "4600"),
                ex("12+34=", "46", source="labelled")]
    result = FormatFilter(pattern=r"\d+", length_offset=1).select(examples)
    assert [e.completion for e in result.kept] == ["460", "46"]  # labelled data passes through
    assert result.report.dropped == {"empty": 1, "format": 1, "length": 1}
    # by default neither applies: only an answer the task can read is asked for
    default = FormatFilter().select(examples, task=TASK)
    assert [e.completion for e in default.kept] == ["460", "4a0", "4600", "46"]
    assert default.report.dropped == {"empty": 1}
    with pytest.raises(ValueError, match="regular expression"):
        FormatFilter(pattern="(")


def test_cap_per_prompt():
    examples = [ex("a", "1"), ex("a", "2"), ex("a", "3"), ex("b", "1")]
    result = CapPerPrompt(cap=2).select(examples)
    assert [(e.prompt, e.completion) for e in result.kept] == [("a", "1"), ("a", "2"), ("b", "1")]
    assert result.report.dropped == {"over_cap": 1}


def test_accumulate_keeps_labelled_history_and_weights_new_data():
    history = [ex(f"{i}+0=", f"{i}0", source="labelled") for i in range(8)]
    history += [ex("9+9=", "81", source="self_label")]
    new = [ex("11+11=", "220"), ex("22+22=", "440")]
    result = Accumulate(new_share=0.5, max_upweight=100).select(new, history=history)
    assert len(result.kept) == 11
    assert sum(e.source == "labelled" for e in result.kept) == 8
    new_weight = sum(e.weight for e in result.kept if e.prompt in {"11+11=", "22+22="})
    assert new_weight == pytest.approx(sum(e.weight for e in result.kept) / 2)
    capped = Accumulate(max_history=0, max_upweight=2).select(new, history=history)
    assert len(capped.kept) == 11
    assert sum(e.weight for e in capped.kept if e.source != "labelled" and e.prompt != "9+9=") == 4
    one = Accumulate(max_history=1).select(new, history=history + [ex("8+8=", "61")])
    assert one.report.dropped == {"history_cap": 1}
    assert sum(e.source == "labelled" for e in one.kept) == 8  # the labelled data is never capped


def test_majority_agreement_keeps_labels_the_votes_back():
    table = {"1+1=": ["20", "20", "20"], "2+2=": ["40", "50", "60"], "3+3=": ["70", "70", "60"],
             "5+5=": ["01", "01", "01"]}
    examples = [ex("1+1=", "20"), ex("2+2=", "40"), ex("3+3=", "60"),
                ex("4+4=", "80", source="labelled")]
    selector = MajorityAgreement(votes=3, threshold=0.75)
    result = selector.select(examples, policy=object(), generator=TableGenerator(table),
                             rng=random.Random(0))
    assert [e.prompt for e in result.kept] == ["1+1=", "4+4="]
    assert result.report.dropped == {"disagreement": 2}
    # relabel: the majority answer replaces a label when the majority is strong enough
    relabel = MajorityAgreement(votes=3, threshold=0.5, relabel=True)
    result = relabel.select([ex("5+5=", "02")], policy=object(), generator=TableGenerator(table),
                            rng=random.Random(0))
    assert [e.completion for e in result.kept] == ["01"]


class Model:
    """A stand-in policy for the table generator: a name, and peers."""

    def __init__(self, name, peers=()):
        self.name, self.peers = name, list(peers)


class ModelTableGenerator:
    """Answers each prompt from a per-model table: {model name: {prompt: [answers]}}."""

    def __init__(self, tables):
        self.tables = tables

    def generate(self, policy, prompts, *, n, temperature, max_new_tokens, seed):
        return [list(self.tables[policy.name][p])[:n] for p in prompts]


def test_majority_agreement_gives_each_peer_model_one_vote():
    own = {"1+1=": ["20", "20"], "2+2=": ["30", "30"], "3+3=": ["40", "41"], "4+4=": ["50", "50"]}
    first = {"1+1=": ["20"], "2+2=": ["31"], "3+3=": ["42"], "4+4=": ["51"]}
    second = {"1+1=": ["21"], "2+2=": ["31"], "3+3=": ["42"], "4+4=": ["52"]}
    generator = ModelTableGenerator({"policy": own, "a": first, "b": second})
    policy = Model("policy", peers=[Model("a"), Model("b")])
    labels = {"1+1=": "20", "2+2=": "30", "3+3=": "40", "4+4=": "50"}

    def select(**options):
        examples = [ex(p, c) for p, c in labels.items()] + [ex("9+9=", "81", source="labelled")]
        kept = MajorityAgreement(votes=2, views=0, threshold=0.8, **options).select(
            examples, policy=policy, generator=generator, rng=random.Random(0)).kept
        return {e.prompt: e.completion for e in kept}

    # 1+1: the policy and one peer agree (2 of 3). 2+2: both peers outvote a sure policy, and their
    # answer replaces its label. 3+3: the policy is unsure (abstains), the two peers agree.
    # 4+4: every model answers differently.
    assert select() == {"1+1=": "20", "2+2=": "31", "3+3=": "42", "9+9=": "81"}
    assert select(relabel=False) == {"1+1=": "20", "9+9=": "81"}
    assert select(quorum=1.0) == {"9+9=": "81"}


def test_majority_agreement_with_a_real_model_and_generator():
    from selfloop.plugins.generate.batched import BatchedGenerator

    policy = tiny_policy()
    generator = BatchedGenerator()
    prompts = ["12+34=", "56+78="]
    greedy = [g[0] for g in generator.generate(policy, prompts, n=1, temperature=0.0,
                                               max_new_tokens=5, seed=0)]
    examples = [ex(p, g.strip()) for p, g in zip(prompts, greedy)]
    # near-zero temperature: every vote is the greedy answer (within the task's budget of 5 tokens
    # at 2 digits), so all labels are kept; the untrained model's answers are compared verbatim
    verbatim = type("Verbatim", (type(TASK),), {"extract_answer": staticmethod(str.strip)})()
    result = MajorityAgreement(votes=3, threshold=1.0, temperature=1e-4, views=0).select(
        examples, task=verbatim, policy=policy, generator=generator, rng=random.Random(0))
    assert len(result.kept) == 2


def test_majority_agreement_votes_across_position_offsets():
    """Views: the same model's greedy answers at offsets 0, spacing, 2*spacing; skipped (not
    duplicated) for a model whose positions take no offset."""
    from selfloop.plugins.generate.batched import BatchedGenerator
    from selfloop.plugins.model.abacus import position_offset

    generator = BatchedGenerator(progress=False)
    policy = tiny_policy(inference_offset=3)
    examples = [ex("12+34=", "460"), ex("56+78=", "231")]
    ballots, peer_answers = MajorityAgreement(votes=0, views=3, view_spacing=2).ballots(
        examples, policy, generator, seed=0, task=TASK)  # the task's budget: 5 tokens at 2 digits
    assert peer_answers == [[], []]
    for k, offset in enumerate((0, 2, 4)):
        with position_offset(policy, offset):
            greedy = generator.generate(policy, [e.prompt for e in examples], n=1, max_new_tokens=5)
        assert [b[1 + k] for b in ballots] == [g[0].strip() for g in greedy]
    assert policy.model.selfloop_inference_offset == 3  # restored
    learned = tiny_policy(positions="learned")
    ballots, _ = MajorityAgreement(votes=0, views=3).ballots(examples, learned, generator, seed=0)
    assert [len(b) for b in ballots] == [1, 1]


def test_confidence_keeps_labels_the_model_is_sure_of():
    import torch
    from selfloop.plugins.select.confidence import Confidence, least_token_probability

    policy = tiny_policy()
    examples = [ex("12+34=", "460"), ex("5+6=", "11"), ex("56+78=", "231"),
                ex("1+1=", "20", source="labelled")]
    scores = least_token_probability(policy, examples[:3], batch_size=1)
    # the same number computed by hand for one example: a full forward pass, min over its tokens
    tok = policy.tokenizer
    prompt = tok("5+6=", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + tok("11", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
    with torch.no_grad():
        probs = torch.softmax(policy.model(input_ids=ids).logits[0, len(prompt) - 1:-1], -1)
    by_hand = probs.gather(1, ids[0, len(prompt):, None]).min().item()
    assert scores[1] == pytest.approx(by_hand, rel=1e-4)
    assert all(0.0 < s < 1.0 for s in scores)
    middle = sorted(scores)[1]
    result = Confidence(min_probability=middle).select(examples, policy=policy)
    assert len(result.kept) == 3 and result.report.dropped == {"low_confidence": 1}
    assert all("confidence" in e.meta for e in result.kept if e.source != "labelled")
    none = Confidence(min_probability=1.0).select(examples, policy=policy)
    assert [e.source for e in none.kept] == ["labelled"]


def test_majority_agreement_tightens_toward_unanimity():
    """After a rejected round the lifecycle calls tighten(): a label the old shares kept is dropped."""
    selector = MajorityAgreement(votes=3, views=0, threshold=0.5, quorum=0.6)
    table = {"1+1=": ["20", "20", "21"]}  # 3 of 4 ballots agree with the label

    def kept():
        return len(selector.select([ex("1+1=", "20")], policy=object(),
                                   generator=TableGenerator(table), rng=random.Random(0)).kept)

    assert kept() == 1
    assert selector.tighten() == "threshold 0.5 -> 0.75, quorum 0.6 -> 0.8"
    assert kept() == 1  # 3/4 still meets 0.75
    assert selector.tighten() == "threshold 0.75 -> 0.875, quorum 0.8 -> 0.9"
    assert kept() == 0
    while selector.tighten() is not None:
        pass
    assert (selector.threshold, selector.quorum) == (1.0, 1.0)


def test_confidence_tightens_toward_certainty():
    from selfloop.plugins.select.confidence import Confidence

    selector = Confidence(min_probability=0.9)
    assert selector.tighten() == "min_probability 0.9 -> 0.95"
    assert selector.min_probability == pytest.approx(0.95)
    steps = 0
    while selector.tighten() is not None:
        steps += 1
    assert steps < 20 and 0.9999 <= selector.min_probability < 1.0
