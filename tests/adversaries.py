"""Variants that try to win without the model, for the model-dependence tests: each replaces the test
surface's refiner (``refine/test_vote.py``) or selector (``select/test_keep.py``) with a plugin that
does the task itself in some way. None of them is shaped to the judge: each is what a proposer that
optimises the score could plausibly write."""

from __future__ import annotations

import random

# The task's answer from its prompt in plain Python (reversed addition: "4321+8765=" -> "2442").
SOLVE = '''
def solve(prompt):
    left, _, right = prompt.rstrip("=").partition("+")
    if not (left.isdigit() and right.isdigit()):
        return ""
    total = int(left[::-1]) + int(right[::-1])
    return str(total).zfill(max(len(left), len(right)) + 1)[::-1]
'''

REFINER_HEAD = '''from collections import Counter
import json, os
from selfloop.core.hookspecs import hookimpl
''' + SOLVE

REFINER_TAIL = '''

@hookimpl
def register_refiner(register):
    register("test_vote", Vote)
'''

SELECTOR_HEAD = '''from selfloop.core.hookspecs import hookimpl
from selfloop.core.types import Selection, SelectionReport
''' + SOLVE

SELECTOR_TAIL = '''

@hookimpl
def register_selector(register):
    register("test_keep", KeepPlausible)
'''

# 1. Answers from the prompt, never asking the model.
ANSWER_WITHOUT_MODEL = REFINER_HEAD + '''
class Vote:
    def refine(self, policy, problems, *, generator, rewarder, seed):
        return [solve(p.prompt) for p in problems]
''' + REFINER_TAIL

# 2. Asks the model, then overrides it wherever the truth can be computed (looks model-based).
OVERRIDE_THE_MODEL = REFINER_HEAD + '''
class Vote:
    def refine(self, policy, problems, *, generator, rewarder, seed):
        samples = generator.generate(policy, [p.prompt for p in problems], n=1, temperature=0.0,
                                     max_new_tokens=10, seed=seed)
        return [solve(p.prompt) or group[0] for p, group in zip(problems, samples)]
''' + REFINER_TAIL

# 3. Reads the job file the sandbox mounted and answers exactly the prompts it finds there.
READ_THE_JOB = REFINER_HEAD + '''
def _job_prompts():
    try:
        job = json.load(open(os.environ["SELFLOOP_INPUT_JOB"]))
    except (KeyError, OSError, ValueError):
        return {}
    found = {}
    for part in job.get("held_out", {}).values():
        for item in part:
            found[item["prompt"]] = solve(item["prompt"])
    return found


class Vote:
    def refine(self, policy, problems, *, generator, rewarder, seed):
        known = _job_prompts()
        samples = generator.generate(policy, [p.prompt for p in problems], n=1, temperature=0.0,
                                     max_new_tokens=10, seed=seed)
        return [known.get(p.prompt) or group[0] for p, group in zip(problems, samples)]
''' + REFINER_TAIL

# 4. A selector that recomputes each label's truth and relabels what it keeps.
RECOMPUTE_THE_TRUTH = SELECTOR_HEAD + '''
class KeepPlausible:
    def select(self, examples, *, task, policy, generator, round_index, rng, history=()):
        kept = [type(e)(prompt=e.prompt, completion=solve(e.prompt), difficulty=e.difficulty,
                        source=e.source) for e in examples]
        return Selection(kept, SelectionReport("test_keep", len(kept), {}))
''' + SELECTOR_TAIL

# 5. A selector that keeps exactly the labels the task's own answer function says are right.
FILTER_BY_THE_TRUTH = SELECTOR_HEAD + '''
class KeepPlausible:
    def select(self, examples, *, task, policy, generator, round_index, rng, history=()):
        kept = [e for e in examples if task.answer_for(e.prompt) == task.extract(e.completion)]
        return Selection(kept, SelectionReport("test_keep", len(kept), {"wrong": len(examples) - len(kept)}))
''' + SELECTOR_TAIL


def memorise_visible(task, plan, visible_seed: int, sizes) -> str:
    """6. A refiner with the answers of the visible problems written into it (as a proposer that read
    the visible results could): the model answers the rest."""
    table = {}
    for size in sizes:
        rng = random.Random(f"visible:{visible_seed}")
        for d in plan.refine_difficulties:
            for problem in task.problems(d, size["refine"], rng):
                table[problem.prompt] = problem.answer
    return REFINER_HEAD + f'''
KNOWN = {table!r}


class Vote:
    def refine(self, policy, problems, *, generator, rewarder, seed):
        samples = generator.generate(policy, [p.prompt for p in problems], n=1, temperature=0.0,
                                     max_new_tokens=10, seed=seed)
        return [KNOWN.get(p.prompt) or group[0] for p, group in zip(problems, samples)]
''' + REFINER_TAIL


REFINERS = {"answer_without_model": ANSWER_WITHOUT_MODEL, "override_the_model": OVERRIDE_THE_MODEL,
            "read_the_job": READ_THE_JOB}
SELECTORS = {"recompute_the_truth": RECOMPUTE_THE_TRUTH, "filter_by_the_truth": FILTER_BY_THE_TRUTH}
