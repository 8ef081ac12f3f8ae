"""Every default plugin asks the task: a word task whose answers follow reasoning and "####", with
a finite list of difficulties, a held-out part and a budget of 40 tokens."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from plugin_fixtures import TASK, RecordingGenerator, WordTask, labelled, tiny_policy
from selfloop.core.tasks import DEFAULT_MAX_NEW_TOKENS, TaskView
from selfloop.core.types import Example, Problem
from selfloop.plugins.acquire.labelled import LabelledProblems
from selfloop.plugins.acquire.self_label import SelfLabel
from selfloop.plugins.evaluate.dynamic_benchmark import DynamicBenchmark
from selfloop.plugins.evaluate.held_out import HeldOut
from selfloop.plugins.optimize.dpo import DPO
from selfloop.plugins.optimize.rejection_sft import (
    PaddedBatches,
    RejectionSFT,
    _reject_wrong_labels,
    tokenize_examples,
    train,
)
from selfloop.plugins.optimize.spin import SPIN
from selfloop.plugins.refine.best_of_n import BestOfN
from selfloop.plugins.refine.greedy import Greedy
from selfloop.plugins.refine.self_consistency import SelfConsistency
from selfloop.plugins.reward.ground_truth import GroundTruthReward
from selfloop.plugins.reward.majority_vote import MajorityVoteReward
from selfloop.plugins.select.format_filter import FormatFilter
from selfloop.plugins.select.majority_agreement import MajorityAgreement


def word_task():
    return TaskView(WordTask(), name="words")


def problems(task, difficulty=1, count=2):
    return task.problems(difficulty, count, random.Random(0))


def label(completion, difficulty=1, prompt="opposite of hot is", source="self_label", **meta):
    return Example(prompt, completion, difficulty, source, meta=meta)


# --- votes compare extracted answers ------------------------------------------------------------

def test_votes_group_phrasings_of_one_answer():
    task = word_task()
    group = ["hot is warm, so the opposite is cold #### cold", "cold, surely #### cold", "#### warm",
             "no answer here"]
    assert MajorityVoteReward().reward(problems(task, count=1), [group], task=task) == [
        [0.5, 0.5, 0.25, 0.0]]
    # self-consistency: "cold" wins two votes to one, and the answer is a whole completion
    generator = RecordingGenerator("#### warm", "first #### cold", "second #### cold")
    answers = SelfConsistency(samples=3, include_greedy=False).refine(
        None, problems(task), generator=generator, task=task)
    assert answers == ["first #### cold"] * 2
    assert SelfConsistency(samples=3, include_greedy=False).refine(  # raw strings: no majority
        None, problems(task), generator=generator) == ["#### warm"] * 2


def test_majority_agreement_counts_an_answer_however_it_is_phrased():
    task = word_task()
    agree = MajorityAgreement(votes=2, views=0, threshold=0.6)
    kept = agree.select([label("because hot #### cold")], task=task, policy=object(),
                        generator=RecordingGenerator("so #### cold", "#### warm"),
                        rng=random.Random(0)).kept
    assert [e.completion for e in kept] == ["because hot #### cold"]  # the label, as it was written
    assert kept[0].meta["extracted_answer"] == "cold"
    # relabel: the winning answer replaces the label, as a whole completion that gives it
    kept = agree.select([label("#### warm")], task=task, policy=object(),
                        generator=RecordingGenerator("a #### cold", "b #### cold"),
                        rng=random.Random(0)).kept
    assert [(e.completion, e.meta["extracted_answer"]) for e in kept] == [("a #### cold", "cold")]
    # completions without an answer abstain: they never agree on nothing
    assert agree.select([label("hmm")], task=task, policy=object(),
                        generator=RecordingGenerator("hmm"), rng=random.Random(0)).kept == []


# --- budgets follow the task --------------------------------------------------------------------

def test_every_budget_is_the_tasks():
    task = word_task()
    for refiner in (Greedy(), SelfConsistency(samples=2), BestOfN(n=2)):
        generator = RecordingGenerator()
        refiner.refine(None, problems(task), generator=generator, rewarder=MajorityVoteReward(),
                       task=task)
        assert set(generator.budgets) == {40}, type(refiner).__name__
    generator = RecordingGenerator()
    Greedy().refine(None, problems(task), generator=generator)
    assert generator.budgets == [DEFAULT_MAX_NEW_TOKENS]  # no task: a generous default
    generator = RecordingGenerator("46")
    Greedy().refine(None, TASK.problems(4, 2, random.Random(0)), generator=generator, task=TASK)
    assert generator.budgets == [7]  # reversed addition: the old budget, difficulty + 3

    examples = [label("#### cold"), label("#### dark", difficulty=2)]
    generator = RecordingGenerator("x #### cold")
    MajorityAgreement(votes=2, views=0).select(examples, task=task, policy=object(),
                                               generator=generator, rng=random.Random(0))
    SelfLabel(start_difficulty=1, count=2).acquire(task=task, policy=None, generator=generator,
                                                   round_index=1, rng=random.Random(0))
    DPO(samples=2).pairs(None, examples, task=task, generator=generator,
                         rewarder=MajorityVoteReward(), seed=0)
    SPIN().pairs(None, examples, generator=generator, seed=0, task=task)
    assert generator.budgets == [40, 40, 40, 40]


def test_dpo_prefers_the_label_over_a_sample_with_another_answer():
    task = word_task()
    rows = DPO(samples=2).pairs(None, [label("so #### cold")], task=task,
                                generator=RecordingGenerator("other words #### cold", "#### warm"),
                                rewarder=MajorityVoteReward(), seed=0)
    assert rows == [{"prompt": "opposite of hot is", "chosen": "so #### cold", "rejected": "#### warm"}]


# --- selection and acquisition ------------------------------------------------------------------

def test_format_filter_keeps_answers_the_task_can_read():
    task, policy = word_task(), tiny_policy()  # the char tokenizer: a token per character
    examples = [label("hot is warm so it is cold #### cold"), label("no idea"),
                label("x" * 40 + " #### cold"), label("", source="labelled")]
    result = FormatFilter().select(examples, task=task, policy=policy)
    assert [e.completion for e in result.kept] == [examples[0].completion, ""]
    assert result.report.dropped == {"no_answer": 1, "over_budget": 1}
    # the digit checks are there when asked for, and would drop every word answer
    assert FormatFilter(pattern=r"\d+").select(examples[:1], task=task).report.dropped == {"format": 1}


def test_self_label_labels_only_offered_difficulties():
    task = word_task()  # offers 1, 2 and 4
    acquirer = SelfLabel(start_difficulty=2, count=3, window=2, ahead=1)
    assert [acquirer.difficulties(r, task.difficulties) for r in (1, 2, 3)] == [[2, 4], [4], [4]]
    assert SelfLabel(start_difficulty=3, ahead=0).difficulties(1, task.difficulties) == [4]
    assert SelfLabel(ahead=0).difficulties(5, task.difficulties) == [4]  # never past the last
    generator = RecordingGenerator("light is bright, so #### dark")
    got = acquirer.acquire(task=task, policy=None, generator=generator, round_index=1,
                           rng=random.Random(0))
    assert sorted({e.difficulty for e in got}) == [2, 4] and len(got) == 6
    assert all(e.completion == "light is bright, so #### dark" and e.unverified for e in got)
    assert {e.meta["extracted_answer"] for e in got} == {"dark"}


def test_labelled_data_teaches_the_worked_solution():
    task = word_task()
    got = LabelledProblems(min_difficulty=1, max_difficulty=3, per_difficulty=2).acquire(
        task=task, policy=None, generator=None, round_index=0, rng=random.Random(0))
    assert sorted({e.difficulty for e in got}) == [1, 2]  # 3 is not offered
    assert all(e.completion == f"the opposite is {e.meta['answer']} #### {e.meta['answer']}"
               for e in got)


# --- evaluation ---------------------------------------------------------------------------------

def test_evaluators_use_the_held_out_part_and_offered_difficulties_in_one_batch():
    words = WordTask()
    task = TaskView(words)
    generator = RecordingGenerator("big is large, so #### small")
    result = DynamicBenchmark(difficulties=[1, 2, 3, 4], per_difficulty=5).evaluate(
        None, task=task, refiner=Greedy(), generator=generator, rewarder=None,
        seen_prompts=set(), seed=0)
    # held out: one problem a difficulty ("big" at 1), fewer than asked; 3 is skipped
    assert result.accuracy_by_difficulty == {1: 1.0, 2: 0.0, 4: 0.0}
    assert result.details["skipped_difficulties"] == [3] and result.details["problems"] == 3
    assert words.verified == [3] and set(generator.budgets) == {40}
    held = HeldOut(difficulties=[1, 3], per_difficulty=4).evaluate(
        None, task=task, refiner=Greedy(), generator=generator, rewarder=None,
        seen_prompts=set(), seed=0)
    assert held.accuracy_by_difficulty == {1: 1.0} and held.details["problems"] == 1
    assert GroundTruthReward().reward([Problem("opposite of hot is", "cold", 1)],
                                      [["#### small", "it is #### cold"]], task=task) == [[0.0, 1.0]]


# --- rejection SFT beyond the char model ----------------------------------------------------------

def test_rejection_sft_trusts_a_task_without_answer_for():
    claimed = [label("#### wrong", source="llm", answer="wrong")]
    assert _reject_wrong_labels(claimed, word_task()) == (claimed, 0)
    wrong = [Example("11+11=", "999", 2, "llm", meta={"answer": "999"})]
    assert _reject_wrong_labels(wrong, TaskView(TASK)) == ([], 1)


def test_padded_batches_mask_prompts_and_padding():
    batches = PaddedBatches([([5, 6, 7, 2], 2), ([8, 9, 2], 1)], [1.0, 1.0], pad_id=0)
    ids, loss_mask, attention = batches.draw(random.Random(0), 2, torch.device("cpu"))
    rows = {tuple(r): (m.tolist(), a.tolist()) for r, m, a in zip(ids.tolist(), loss_mask, attention)}
    assert rows == {(5, 6, 7, 2): ([False, False, True, True], [1, 1, 1, 1]),
                    (8, 9, 2, 0): ([False, True, True, False], [1, 1, 1, 0])}


def test_right_padding_leaves_the_real_tokens_logits_unchanged():
    policy = tiny_policy()
    policy.model.eval()
    tokenized = tokenize_examples(policy.tokenizer, [label("#### cold"), label("it is #### dark", 2,
                                                                            prompt="opposite of light is")])
    pad = policy.tokenizer.pad_token_id
    ids, _, attention = PaddedBatches(tokenized, [1.0, 1.0], pad).draw(random.Random(0), 2, "cpu")
    with torch.no_grad():
        padded = policy.model(input_ids=ids, attention_mask=attention).logits
        for row, mask in zip(range(2), attention):
            n = int(mask.sum())
            alone = policy.model(input_ids=ids[row:row + 1, :n],
                                 attention_mask=attention[row:row + 1, :n]).logits
            assert torch.allclose(padded[row, :n], alone[0], atol=1e-4)


def test_sequences_end_with_eos_and_carry_no_bos_the_tokenizer_would_add():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2, "opposite": 3, "of": 4, "hot": 5, "is": 6,
             "####": 7, "cold": 8, "<unk>": 9}
    inner = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    inner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    inner.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=inner, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    assert tokenizer("hot")["input_ids"] == [0, 5]  # this tokenizer adds a BOS...
    [(ids, start)] = tokenize_examples(tokenizer, [label("#### cold")])
    assert ids == [3, 4, 5, 6, 7, 8, 1] and start == 4  # ...the prompt as the generators encode it


def test_rejection_sft_pads_variable_length_examples_and_keeps_buckets_for_the_char_model(tmp_path):
    policy = tiny_policy()
    words = [label(f"{'so ' * k}#### {w}", prompt=f"opposite of {p} is")
             for k, (p, w) in enumerate([("hot", "cold"), ("up", "down"), ("wet", "dry"),
                                         ("big", "small"), ("early", "late"), ("light", "dark")])]
    before = train(policy, words, steps=1, batch_size=8, lr=0.0, progress=False)
    after = train(policy, words, steps=40, batch_size=8, lr=3e-3, warmup=5, progress=False)
    assert before["padded_batches"] == after["padded_batches"] == 1.0  # one example per length
    assert after["loss"] < before["loss"] - 0.5
    result = RejectionSFT(base_steps=2, batch_size=8, progress=False).optimize(
        tiny_policy(), labelled(40), task=TASK, generator=None, rewarder=None,
        rng=random.Random(0), workdir=tmp_path)
    assert result.metrics["padded_batches"] == 0.0  # 40 examples of one length: length buckets
    with pytest.raises(ValueError, match="batching"):
        RejectionSFT(batching="ragged")
