"""What refiners, selectors, rewarders and optimizers share about answers: the task decides.

A budget is the task's ``max_new_tokens`` (``TaskView.budget``: the largest of a batch's), and a
vote compares the answers the task extracts (``TaskView.extract_answer``), so "#### 8" and "so it
is 8 #### 8" are one answer. Without a task (a caller outside the lifecycle) the budget is
``DEFAULT_MAX_NEW_TOKENS`` and an answer is the stripped completion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from selfloop.core.tasks import DEFAULT_MAX_NEW_TOKENS, task_view
from selfloop.core.types import Example, Problem


def answer_budget(problems: Sequence[Problem], task=None) -> int:
    """Tokens to allow for the answers of ``problems``: the task's budget for the batch."""
    return task_view(task).budget(problems) if task is not None else DEFAULT_MAX_NEW_TOKENS


def example_budget(examples: Sequence[Example], task=None) -> int:
    """The budget for examples' prompts (each as an unlabelled problem of its difficulty)."""
    return answer_budget([as_problem(e) for e in examples], task)


def as_problem(example: Example) -> Problem:
    """An example as its task's problem; ``answer`` is the ground truth it claims, if any."""
    answer = example.meta.get("answer")
    if answer is None and example.source == "labelled":
        answer = example.completion
    return Problem(example.prompt, answer, example.difficulty)


def extractor(task=None) -> Callable[[str], str]:
    """The task's answer extraction (without a task: the stripped completion)."""
    return task_view(task).extract_answer if task is not None else str.strip


def vote(completions: Sequence[str], extract: Callable[[str], str]) -> tuple[str, str, int] | None:
    """The winning answer of ``completions``: (its first completion, the answer, its votes).

    Completions vote for the answer ``extract`` finds in them; one without an answer abstains. Ties
    go to the answer seen first. None when no completion gives an answer.
    """
    answers = [extract(c) for c in completions]
    counts = Counter(a for a in answers if a)
    if not counts:
        return None
    answer, count = counts.most_common(1)[0]  # most_common keeps first-seen order on ties
    return completions[answers.index(answer)], answer, count
