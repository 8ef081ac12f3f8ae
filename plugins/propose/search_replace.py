"""SEARCH/REPLACE edit blocks, the edit format of the LLM proposer (as in aider and OpenEvolve).

A reply holds one or more blocks, each under the path of the file it changes::

    select/majority_agreement.py
    <<<<<<< SEARCH
    THRESHOLD = tunable(0.6, low=0.0, high=1.0)
    =======
    THRESHOLD = tunable(0.8, low=0.0, high=1.0)
    >>>>>>> REPLACE

The SEARCH text must occur exactly once in the file (an empty SEARCH creates a new file). Applying
either succeeds for every block or fails with reasons the model can act on.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from selfloop.core.tunable import parse_python

BLOCK = re.compile(
    r"^(?P<path>[^\n`<>=]+?)[ \t]*\n(?:```[^\n]*\n)?<{5,9} SEARCH[ \t]*\n(?P<search>.*?)^={5,9}[ \t]*\n"
    r"(?P<replace>.*?)^>{5,9} REPLACE[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    path: str
    search: str
    replace: str


def parse_blocks(text: str) -> list[Block]:
    """Every SEARCH/REPLACE block in a model's reply, in order."""
    return [
        Block(m["path"].strip().strip("`*").strip(), m["search"], m["replace"])
        for m in BLOCK.finditer(text)
    ]


def apply_blocks(
    blocks: Sequence[Block], files: dict[str, str], editable: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """Apply ``blocks`` to ``files``: (the changed files' new texts, the reasons blocks failed).

    A block fails when its path is not editable, its SEARCH text is missing or ambiguous; an edited
    Python file must still parse. With any failure, no change should be used.
    """
    allowed = set(editable)
    changed: dict[str, str] = {}
    errors: list[str] = []
    if not blocks:
        return {}, [("no SEARCH/REPLACE blocks found; write each edit as: the file path on its own "
                     "line, then <<<<<<< SEARCH, the exact old lines, =======, the new lines, >>>>>>> REPLACE")]
    for i, block in enumerate(blocks, 1):
        path = block.path.removeprefix("./").removeprefix("plugins/")
        if path not in allowed:
            errors.append(f"block {i}: {block.path!r} is not an editable file (only these are: "
                          f"{', '.join(sorted(allowed))}); the core, the sandbox and the evaluators are off limits")
            continue
        text = changed.get(path, files.get(path))
        if text is None:
            if block.search.strip():
                errors.append(f"block {i}: {path} does not exist; to create it, leave SEARCH empty")
                continue
            changed[path] = block.replace
            continue
        count = text.count(block.search) if block.search else 0
        if count == 0:
            errors.append(f"block {i}: the SEARCH text does not occur in {path} (it must match the "
                          f"current file exactly, whitespace included){_near(text, block.search)}")
        elif count > 1:
            errors.append(f"block {i}: the SEARCH text occurs {count} times in {path}; include more "
                          "surrounding lines so it is unique")
        else:
            changed[path] = text.replace(block.search, block.replace, 1)
    for path, text in changed.items():
        if path.endswith(".py"):
            try:
                parse_python(text, filename=path)
            except SyntaxError as exc:
                errors.append(f"{path}:{exc.lineno}: the edited file no longer parses: {exc.msg}")
    return changed, errors


def _near(text: str, search: str) -> str:
    """A hint: the file's line most like the SEARCH text's first line."""
    first = next((line.strip() for line in search.splitlines() if line.strip()), "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    close = difflib.get_close_matches(first, lines, n=1, cutoff=0.6) if first else []
    return f"; the closest line in the file is: {close[0]!r}" if close else ""
