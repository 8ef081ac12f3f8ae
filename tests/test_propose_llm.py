"""The LLM proposer end to end with litellm's own mock_response (no network)."""

import random

import pytest
from selfloop.core.errors import ProposalError
from selfloop.core.llm import litellm_module
from selfloop.core.registry import load_registry
from selfloop.core.types import VariantView
from selfloop.plugins.propose.search_replace import apply_blocks, parse_blocks

litellm = litellm_module()  # through selfloop: its price table stays offline

FILE = '''from selfloop.core.tunable import tunable

VOTES = tunable(3, low=1, high=9)


def vote(answers):
    return max(set(answers), key=answers.count)
'''
PARENT = VariantView(id="v4", files={"refine/vote.py": FILE, "tasks/task.py": "A = 1\n"},
                     scores={"visible": 0.4}, feedback="accuracy 0.40 at 6 digits; votes often tie")
EDITABLE = ["refine/vote.py"]
DIAGNOSIS = "Three votes tie too often; use more votes."


def block(path, search, replace):
    return f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


GOOD = block("refine/vote.py", "VOTES = tunable(3, low=1, high=9)\n", "VOTES = tunable(7, low=1, high=9)\n")
MISSING = block("refine/vote.py", "VOTES = tunable(4, low=1, high=9)\n", "VOTES = tunable(7, low=1, high=9)\n")
SYNTAX = block("refine/vote.py", "def vote(answers):\n", "def vote(answers:\n")
CORE = block("../core/judge.py", "x\n", "y\n")


def proposer(responses, **options):
    return load_registry(entry_points=False).create(
        "proposer", "llm", {"model": "openai/gpt-4o-mini", "mock_response": responses, "backoff_s": 0, **options})


def propose(p):
    return p.propose(PARENT, editable=EDITABLE, others=[], rng=random.Random(0))


def test_valid_edit_records_every_call():
    edit = propose(proposer([DIAGNOSIS, "Here:\n" + GOOD]))
    assert edit.files == {"refine/vote.py": FILE.replace("tunable(3,", "tunable(7,")}
    assert edit.proposer == "llm" and edit.summary == DIAGNOSIS and edit.meta["fix_attempts"] == 0
    assert [c.response for c in edit.calls] == [DIAGNOSIS, "Here:\n" + GOOD]
    assert "votes often tie" in edit.calls[0].messages[-1]["content"]  # the parent's feedback was shown
    assert all(c.prompt_tokens > 0 and c.cost_usd is not None for c in edit.calls)


def test_block_that_does_not_apply_goes_back_with_the_reason():
    edit = propose(proposer([DIAGNOSIS, MISSING, GOOD]))
    assert edit.meta["fix_attempts"] == 1 and len(edit.calls) == 3
    retry = edit.calls[2].messages[-1]["content"]
    assert "does not occur in refine/vote.py" in retry and "closest line" in retry


def test_syntax_error_goes_back_then_gives_up():
    p = proposer([DIAGNOSIS, SYNTAX], fix_attempts=1)
    with pytest.raises(ProposalError, match="no longer parses") as info:
        propose(p)
    assert len(info.value.calls) == 3  # diagnosis + 2 attempts, all recorded for the budget


def test_edit_touching_the_core_is_refused():
    with pytest.raises(ProposalError, match="not an editable file") as info:
        propose(proposer([DIAGNOSIS, CORE], fix_attempts=0))
    assert "off limits" in str(info.value)


def test_edit_to_a_surface_file_outside_the_editable_targets_is_refused():
    tasks = block("tasks/task.py", "A = 1\n", "A = 2\n")
    with pytest.raises(ProposalError, match="tasks/task.py"):
        propose(proposer([DIAGNOSIS, tasks], fix_attempts=0))


def test_api_error_becomes_a_proposal_error():
    bad = litellm.BadRequestError(message="model does not exist", llm_provider="openai", model="gpt-4o-mini")
    with pytest.raises(ProposalError, match="model does not exist"):
        propose(proposer([bad]))


def test_rate_limit_is_retried_then_succeeds():
    limit = litellm.RateLimitError(message="429", llm_provider="openai", model="gpt-4o-mini")
    edit = propose(proposer([limit, DIAGNOSIS, limit, GOOD]))
    assert len(edit.calls) == 2 and edit.files


def test_needs_a_model():
    with pytest.raises(Exception, match="needs a model"):
        load_registry(entry_points=False).create("proposer", "llm", {})


def test_parse_and_apply_blocks_several_files():
    files = {"a.py": "x = 1\ny = 2\n", "b.py": "z = 3\n"}
    text = block("a.py", "y = 2\n", "y = 5\n") + "\n" + block("b.py", "z = 3\n", "z = 4\n") + block("c.py", "", "w = 0\n")
    changed, errors = apply_blocks(parse_blocks(text), files, ["a.py", "b.py", "c.py"])
    assert errors == [] and changed == {"a.py": "x = 1\ny = 5\n", "b.py": "z = 4\n", "c.py": "w = 0\n"}
    _, errors = apply_blocks(parse_blocks(block("a.py", "", "q\n").replace("a.py", "a.py", 1)), {"a.py": "x\nx\n"}, ["a.py"])
    assert apply_blocks([], files, ["a.py"])[1][0].startswith("no SEARCH/REPLACE blocks")
    _, errors = apply_blocks(parse_blocks(block("a.py", "x\n", "y\n")), {"a.py": "x\nx\n"}, ["a.py"])
    assert "occurs 2 times" in errors[0]


def test_a_trees_edited_prompts_reach_the_model_and_nothing_else_of_it_runs():
    """Evolve's "proposer" target: an LLM proposer's prompts are data a variant may edit."""
    from selfloop.core.evolve import read_surface, surface_dir
    from selfloop.core.meta import prompt_edits, prompt_problems, with_tree_prompts

    path = "propose/llm_edit.py"
    seed = read_surface(surface_dir())[path]
    careful = seed.replace("You improve the plugins of selfloop", "You carefully improve the plugins of selfloop")
    names = {"SYSTEM", "DIAGNOSE", "IMPLEMENT", "NOVELTY", "RETRY"}
    assert set(prompt_edits(careful, seed, names)) == {"SYSTEM"}
    assert prompt_edits(careful.replace("fix_attempts: int = 2", "fix_attempts: int = 3"), seed, names) is None
    base = proposer([DIAGNOSIS, GOOD])
    edited = with_tree_prompts(base, {path: careful}, {path: seed}, [path], "v7")
    assert edited.prompts_from == "v7" and base.prompts["SYSTEM"].startswith("You improve")
    assert prompt_problems(edited, base.prompts) == []
    edit = propose(edited)
    assert edit.calls[0].messages[0]["content"].startswith("You carefully improve")
    bad = with_tree_prompts(base, {path: seed.replace("Problem statement:\n{problem}", "Problem: {problem} {secret}")},
                            {path: seed}, [path], "v8")
    assert prompt_problems(bad, base.prompts) == ["meta: prompt IMPLEMENT uses secret, which the proposer does not fill in"]
