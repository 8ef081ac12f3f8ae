"""The LLM proposer: diagnose the parent, then edit its plugin files with SEARCH/REPLACE blocks.

Two steps, as in the Darwin Gödel Machine: first the model reads the parent's visible evaluation
results and logs with its editable files and writes a problem statement (what to improve and why);
then it writes the change as SEARCH/REPLACE blocks (see ``search_replace``). A reply whose blocks do
not apply, or leave a file that no longer parses, goes back to the model with the reasons, at most
``fix_attempts`` times. Every prompt, response, token count and cost is kept on the ``Edit``.

Any litellm provider works (``openai/…``, ``anthropic/…``, ``hosted_vllm/…`` with ``api_base`` of a
local vLLM server, ``ollama_chat/…``); see ``selfloop.core.llm`` for running against a real one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from selfloop.core.errors import ProposalError
from selfloop.core.hookspecs import hookimpl
from selfloop.core.llm import LLM, LLMError
from selfloop.core.types import Edit, VariantView

from .search_replace import apply_blocks, parse_blocks

SYSTEM = """You improve the plugins of selfloop, a system in which a small language model improves \
itself (data acquisition, data selection, training, inference-time refinement, evaluation). You may \
change only the editable plugin files you are shown. Your change is judged by a held-out evaluation \
you cannot see or change; gaming the visible metrics does not help."""

DIAGNOSE = """Here are the editable files of plugin variant {id} and its visible evaluation.

{files}

## Visible evaluation results and logs
{feedback}

Diagnose: what limits this variant's score, and what one focused change to the editable files \
would most likely raise it? Answer with a short problem statement (at most 200 words), no code."""

IMPLEMENT = """Problem statement:
{problem}

Implement the change. Write every edit as a SEARCH/REPLACE block: the file path on its own line \
(relative, as shown above), then

<<<<<<< SEARCH
exact lines from the current file
=======
the new lines
>>>>>>> REPLACE

The SEARCH part must match the file exactly and occur once. Keep each file valid Python, keep every \
component's methods and signatures, and keep the files' relative imports."""

RETRY = """Your edit could not be applied:
{errors}

Write the corrected SEARCH/REPLACE blocks against the files as they were shown (none of your \
previous blocks were applied)."""


def render_files(files: dict[str, str], editable: Sequence[str], max_chars: int) -> str:
    parts, used = [], 0
    for path in sorted(editable):
        if path not in files:
            continue
        text = files[path]
        if used + len(text) > max_chars:
            parts.append(f"### {path}\n(omitted: over the prompt's size limit)")
            continue
        used += len(text)
        parts.append(f"### {path}\n```python\n{text}```")
    return "\n\n".join(parts)


class LLMProposer:
    """Diagnose, then edit; failed blocks go back to the model up to ``fix_attempts`` times."""

    def __init__(self, model: str | None = None, api_base: str | None = None, temperature: float = 0.7,
                 max_tokens: int = 2048, timeout_s: float = 120, fix_attempts: int = 2,
                 max_file_chars: int = 60_000, mock_response=None, retries: int = 4,
                 backoff_s: float = 2.0):
        if not model:
            raise ProposalError("the llm proposer needs a model: --model PROVIDER/NAME, "
                                "SELFLOOP_LLM_MODEL, or [llm] model in the run config")
        self.llm_options = {"model": model, "api_base": api_base, "temperature": temperature,
                            "max_tokens": max_tokens, "timeout_s": timeout_s, "retries": retries,
                            "backoff_s": backoff_s}
        self.mock_response = list(mock_response) if isinstance(mock_response, list) else mock_response
        LLM(**self.llm_options)  # a bad model string fails here, before any work
        self.fix_attempts = fix_attempts
        self.max_file_chars = max_file_chars

    def propose(self, parent: VariantView, *, editable: Sequence[str], others: Sequence[VariantView],
                rng: random.Random) -> Edit:
        # One LLM (and call log) per proposal: proposals may run in parallel workers. A list of mock
        # responses is shared, so that consecutive proposals consume it in turn.
        llm = LLM(**self.llm_options, mock_response=self.mock_response)
        if isinstance(self.mock_response, list):
            llm.mock_response = self.mock_response
        try:
            return self._propose(llm, parent, editable)
        except (LLMError, ProposalError) as exc:
            failure = ProposalError(str(exc))
            failure.calls = list(llm.calls)  # spent tokens count even when nothing came of them
            raise failure from None

    def _propose(self, llm: LLM, parent: VariantView, editable: Sequence[str]) -> Edit:
        shown = render_files(parent.files, editable, self.max_file_chars)
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": DIAGNOSE.format(id=parent.id, files=shown,
                                                        feedback=parent.feedback or "(none)")},
        ]
        problem = llm.complete(messages).strip()
        messages += [{"role": "assistant", "content": problem},
                     {"role": "user", "content": IMPLEMENT.format(problem=problem)}]
        errors: list[str] = []
        for attempt in range(self.fix_attempts + 1):
            reply = llm.complete(messages)
            changed, errors = apply_blocks(parse_blocks(reply), parent.files, editable)
            if not errors and changed:
                changed = {p: t for p, t in changed.items() if parent.files.get(p) != t}
            if not errors and changed:
                return Edit(files=changed, summary=_first_line(problem), proposer="llm",
                            calls=list(llm.calls),
                            meta={"problem": problem, "fix_attempts": attempt})
            if not errors:
                errors = ["the blocks change nothing"]
            messages += [{"role": "assistant", "content": reply},
                         {"role": "user", "content": RETRY.format(errors="\n".join(f"- {e}" for e in errors))}]
        raise ProposalError(
            f"{llm.model}: no applicable edit after {self.fix_attempts + 1} attempts: {errors[0]}",
        )


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "llm edit")
    return line[:200]


@hookimpl(trylast=True)
def register_proposer(register):
    register("llm", LLMProposer,
             description="a language model (any litellm provider) diagnoses the parent and writes SEARCH/REPLACE edits")
