"""A task read from disk: a jsonl file of prompt/answer rows, or a ``datasets.load_from_disk`` directory.

Options (``[task] name = "dataset"``):

- ``path``: a ``.jsonl`` file (one JSON object a line), or a directory saved by
  ``datasets.Dataset.save_to_disk`` (needs the ``datasets`` package); relative to the working
  directory.
- ``prompt_column`` / ``answer_column``: the columns of the prompt and the answer.
- ``difficulty_column``: an integer column of difficulties; without one every row is difficulty 1.
  ``difficulties()`` are the distinct values present.
- ``solution_column``: worked solutions, what ``demonstration(problem)`` teaches; else the answer.
- ``split_column``: ``"train"`` or ``"held_out"`` per row (``"test"`` and ``"validation"`` count as
  held-out); without one a row is held out when a hash of its prompt falls in ``held_out_fraction``.
  A ``DatasetDict`` directory's ``train`` split is train and its other splits held-out.
- ``answer_marker``: where an answer holds it (GSM8K's ``"#### 72"``), the answer is what follows
  its last occurrence, and the whole field is the worked solution (unless ``solution_column``).
  ``extract_answer`` reads a completion the same way: after the last marker, else the whole text.
- ``max_new_tokens``: the answer budget (default: twice the longest worked solution's characters
  plus 8, a bound for a char-level model and loose for BPE).

``verify`` compares the extracted answer with the row's, both stripped, as numbers when both are
(``"72.0"`` is ``"72"``). ``problems(difficulty, count, rng, split)`` samples rows of that
difficulty and split without replacement and returns fewer when there are fewer. A file that does
not load or a missing column is a one-line ``PluginError`` naming the task and the path.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from selfloop.core.errors import PluginError
from selfloop.core.hookspecs import hookimpl
from selfloop.core.tasks import in_held_out
from selfloop.core.types import Problem

HELD_OUT_NAMES = {"held_out", "test", "validation"}


class DatasetTask:
    """Problems drawn from rows on disk, split into train and held-out."""

    def __init__(self, path: str, prompt_column: str = "prompt", answer_column: str = "answer",
                 difficulty_column: str | None = None, solution_column: str | None = None,
                 split_column: str | None = None, held_out_fraction: float = 0.2,
                 answer_marker: str | None = None, max_new_tokens: int | None = None):
        self.path = Path(path)
        self.where = f"task 'dataset' ({self.path})"
        if not 0 <= held_out_fraction < 1:
            raise PluginError(f"{self.where}: held_out_fraction must be in [0, 1), not {held_out_fraction}")
        self.columns = {"prompt": prompt_column, "answer": answer_column, "difficulty": difficulty_column,
                        "solution": solution_column, "split": split_column}
        self.held_out_fraction, self.marker, self.budget = held_out_fraction, answer_marker, max_new_tokens
        self.pools: dict[tuple[str, int], list[Problem]] = {}
        for number, (row, split) in enumerate(self._rows(), 1):
            problem, split = self._problem(row, split, number)
            self.pools.setdefault((split, problem.difficulty), []).append(problem)
        if not self.pools:
            raise PluginError(f"{self.where}: holds no rows")
        longest = max(len(p.meta["solution"]) for pool in self.pools.values() for p in pool)
        self.default_budget = 2 * longest + 8

    # --- reading --------------------------------------------------------------------------------

    def _rows(self):
        """(row, its split or None) for every row, from a jsonl file or a datasets directory."""
        if self.path.is_dir():
            yield from self._load_from_disk()
            return
        try:
            lines = self.path.read_text().splitlines()
        except OSError as exc:
            raise PluginError(f"{self.where}: cannot read it: {exc.strerror or exc}") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise PluginError(f"{self.where}: line {number} is not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise PluginError(f"{self.where}: line {number} is not a JSON object")
            yield row, None

    def _load_from_disk(self):
        try:
            import datasets
        except ImportError:
            raise PluginError(f"{self.where} is a directory, which needs the 'datasets' package "
                              "(pip install datasets); or give a .jsonl file") from None
        try:
            loaded = datasets.load_from_disk(str(self.path))
        except Exception as exc:  # noqa: BLE001 (datasets raises many kinds; each is one line here)
            raise PluginError(f"{self.where}: datasets.load_from_disk failed: {type(exc).__name__}: {exc}") from None
        parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
        for name, part in parts:
            split = None if name is None else "train" if name == "train" else "held_out"
            for row in part:
                yield row, split

    def _problem(self, row: dict, split: str | None, number: int) -> tuple[Problem, str]:
        c = self.columns
        for role in ("prompt", "answer", "difficulty", "solution", "split"):
            if c[role] is not None and c[role] not in row:
                raise PluginError(f"{self.where}: row {number} has no {role} column {c[role]!r} "
                                  f"(it has {', '.join(map(repr, row)) or 'none'}); set {role}_column")
        prompt, answer = str(row[c["prompt"]]), str(row[c["answer"]])
        solution = str(row[c["solution"]]) if c["solution"] else answer
        if self.marker and self.marker in answer:
            answer = answer.rpartition(self.marker)[2].strip()
        difficulty = 1
        if c["difficulty"]:
            try:
                difficulty = int(row[c["difficulty"]])
            except (TypeError, ValueError):
                raise PluginError(f"{self.where}: row {number}: difficulty {row[c['difficulty']]!r} "
                                  "is not an integer") from None
            if difficulty < 0:
                raise PluginError(f"{self.where}: row {number}: difficulty {difficulty} is negative")
        if c["split"]:
            named = str(row[c["split"]])
            if named != "train" and named not in HELD_OUT_NAMES:
                raise PluginError(f"{self.where}: row {number}: split {named!r} is not train or held_out")
            split = "train" if named == "train" else "held_out"
        if split is None:
            split = "held_out" if in_held_out(prompt, self.held_out_fraction) else "train"
        return Problem(prompt=prompt, answer=answer, difficulty=difficulty, meta={"solution": solution}), split

    # --- the task -------------------------------------------------------------------------------

    def difficulties(self) -> list[int]:
        return sorted({difficulty for _, difficulty in self.pools})

    def problems(self, difficulty: int, count: int, rng: random.Random, split: str = "train") -> list[Problem]:
        pool = self.pools.get((split, difficulty), [])
        return rng.sample(pool, min(count, len(pool)))

    def demonstration(self, problem: Problem) -> str:
        return problem.meta.get("solution") or problem.answer

    def max_new_tokens(self, problem: Problem) -> int:
        return self.budget or self.default_budget

    def extract_answer(self, completion: str) -> str:
        if self.marker and self.marker in completion:
            completion = completion.rpartition(self.marker)[2]
        return completion.strip()

    def verify(self, problem: Problem, completion: str) -> bool:
        if problem.answer is None:
            raise ValueError(f"problem {problem.prompt!r} has no ground-truth answer")
        return _normal(self.extract_answer(completion)) == _normal(problem.answer)


def _normal(text: str) -> str:
    """``text`` stripped, and a number written one way (``"1,000.0"`` is ``"1000"``)."""
    text = text.strip()
    plain = text.replace(",", "")
    try:
        number = float(plain)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else plain


@hookimpl
def register_task(register):
    register("dataset", DatasetTask,
             description="problems read from a jsonl file or a datasets directory, with a train/held-out split")
