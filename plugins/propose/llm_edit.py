"""The LLM proposer: diagnose the parent, then edit its plugin files with SEARCH/REPLACE blocks.

Two steps, as in the Darwin Gödel Machine: first the model reads the parent's visible evaluation
results and logs with its editable files and writes a problem statement (what to improve and why);
then it writes the change as SEARCH/REPLACE blocks (see ``search_replace``). A reply whose blocks do
not apply, or leave a file that no longer parses, goes back to the model with the reasons, at most
``fix_attempts`` times. Every prompt, response, token count and cost is kept on the ``Edit``.

Besides the parent it is shown what its peers show theirs: inspirations (the best and some diverse
variants, as diffs), the lineage and the latest attempts with how they ended (``llm_context``), and
a running summary of insights (``insights``). A change nearly the same as an attempt in view goes
back to the model once, then is refused before evaluation (``novelty``). With several models, a
bandit picks each proposal's model by gain per dollar or per token (``model_bandit``).

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

from . import llm_context
from .insights import Scratchpad
from .model_bandit import ModelBandit, operator_for
from .novelty import closest
from .search_replace import apply_blocks, parse_blocks

SYSTEM = """You improve the plugins of selfloop, a system in which a small language model improves \
itself (data acquisition, data selection, training, inference-time refinement, evaluation). You may \
change only the editable plugin files you are shown. Your change is judged by a held-out evaluation \
you cannot see or change; gaming the visible metrics does not help."""

DIAGNOSE = """Here are the editable files of plugin variant {id} and its visible evaluation.

{files}

## Visible evaluation results and logs
{feedback}
{context}
Diagnose: what limits this variant's score, and what one focused change to the editable files \
would most likely raise it? Learn from what was tried: build on what worked and do not repeat a \
change that was already made or rejected. Answer with a short problem statement (at most 200 \
words), no code."""

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

NOVELTY = """Your change is nearly the same as that of {other} (similarity {similarity:.2f}), which \
was already tried: {outcome}. Make a substantially different change: write new SEARCH/REPLACE blocks \
against the files as they were shown (none of your previous blocks were applied)."""

RETRY = """Your edit could not be applied:
{errors}

Write the corrected SEARCH/REPLACE blocks against the files as they were shown (none of your \
previous blocks were applied)."""
PROMPTS = ("SYSTEM", "DIAGNOSE", "IMPLEMENT", "NOVELTY", "RETRY")  # templates a variant may edit



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

    name = "llm"  # the operator evolve records for a proposal that failed (a success names its model)

    def __init__(self, model: str | Sequence[str] | None = None, api_base: str | None = None,
                 temperature: float = 0.7, max_tokens: int = 2048, timeout_s: float = 120,
                 fix_attempts: int = 2, max_file_chars: int = 60_000, mock_response=None, retries: int = 4,
                 backoff_s: float = 2.0, inspirations: int = 2, diverse: int = 2, max_diff_chars: int = 2500,
                 history_lines: int = 16, insights_every: int = 5, insights_model: str | None = None,
                 novelty_threshold: float = 0.95, exploration: float = 1.0,
                 prompts: dict[str, str] | None = None):
        models = [model] if isinstance(model, str) else list(dict.fromkeys(model or []))
        if not models or not all(isinstance(m, str) and m for m in models):
            raise ProposalError("the llm proposer needs a model: --model PROVIDER/NAME (more than once for "
                                "several), SELFLOOP_LLM_MODEL, or [llm] model in the run config")
        self.llm_options = {"api_base": api_base, "temperature": temperature, "max_tokens": max_tokens,
                            "timeout_s": timeout_s, "retries": retries, "backoff_s": backoff_s}
        self.mock_response = list(mock_response) if isinstance(mock_response, list) else mock_response
        self.insights_model = insights_model or models[0]
        for m in [*models, self.insights_model]:
            LLM(model=m, **self.llm_options)  # a bad model string fails here, before any work
        self.models = models
        self.fix_attempts = fix_attempts
        self.max_file_chars = max_file_chars
        self.inspirations, self.diverse, self.max_diff_chars = inspirations, diverse, max_diff_chars
        self.history_lines = history_lines
        self.novelty_threshold = novelty_threshold
        self.bandit = ModelBandit(models, exploration=exploration)
        self.scratchpad = Scratchpad(every=insights_every)
        # The prompt templates: this file's, or a variant's edited copies (evolve's "proposer"
        # target reads them from the variant's tree as data, never running its code).
        unknown = sorted(set(prompts or {}) - set(PROMPTS))
        if unknown:
            raise ProposalError(f"unknown prompt(s) {', '.join(unknown)}; the prompts are {', '.join(PROMPTS)}")
        self.prompts = {name: globals()[name] for name in PROMPTS} | dict(prompts or {})

    def _prompt(self, name: str, **fields) -> str:
        """A prompt template filled in; an edited template that does not fit is a ProposalError."""
        try:
            return self.prompts[name].format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ProposalError(f"prompt {name} does not fill in: {type(exc).__name__}: {exc}") from None

    def _llm(self, model: str, **options) -> LLM:
        # One LLM (and call log) per proposal: proposals may run in parallel workers. A list of mock
        # responses is shared, so that consecutive calls consume it in turn.
        return LLM(model=model, **{**self.llm_options, **options}, mock_response=self.mock_response)

    def propose(self, parent: VariantView, *, editable: Sequence[str], others: Sequence[VariantView],
                rng: random.Random) -> Edit:
        self.bandit.observe(parent, others)
        model = self.bandit.choose(rng)
        history = llm_context.history(parent, others, self.history_lines)
        insight_calls, insights_error = self._refresh_insights(history, has_history=bool(others))
        insights = self.scratchpad.current()  # as this proposal sees them (another thread may refresh)
        llm = self._llm(model)
        try:
            edit = self._propose(llm, parent, editable, others, history, insights)
        except (LLMError, ProposalError) as exc:
            self.bandit.spent(model, llm.calls)
            failure = ProposalError(str(exc))
            failure.calls = insight_calls + list(llm.calls)  # spent tokens count even when nothing came of them
            raise failure from None
        self.bandit.spent(model, llm.calls)
        edit.calls = insight_calls + edit.calls
        edit.meta.update({"operator": operator_for(model), "model": model, "bandit": self.bandit.state()})
        if insights:
            edit.meta["insights"] = insights
        if insights_error:
            edit.meta["insights_error"] = insights_error
        return edit

    def _refresh_insights(self, history: str, has_history: bool) -> tuple[list, str | None]:
        """One cheap call rewriting the running insights, when this proposal's turn has come."""
        if not self.scratchpad.claim(has_history):
            return [], None
        llm = self._llm(self.insights_model, max_tokens=min(400, self.llm_options["max_tokens"]))
        try:
            text = llm.complete(self.scratchpad.messages(history))
        except LLMError as exc:  # the proposal goes on with the insights it has
            self.scratchpad.done(None)
            return list(llm.calls), str(exc)
        self.scratchpad.done(text)
        return list(llm.calls), None

    def _context(self, parent: VariantView, others: Sequence[VariantView], history: str,
                 insights: str) -> tuple[str, list[str]]:
        shown = llm_context.inspirations(parent, others, self.inspirations, self.diverse)
        parts = []
        if insights:
            parts.append("## Insights from the search so far\n" + insights)
        if shown:
            parts.append(f"## Other variants, as diffs against {parent.id}\n"
                         + llm_context.render_inspirations(parent, shown, self.max_diff_chars))
        if others:
            parts.append("## History: the lineage and the latest attempts\n" + history)
        return "".join(f"\n{p}\n" for p in parts), [v.id for v in shown]

    def _propose(self, llm: LLM, parent: VariantView, editable: Sequence[str], others: Sequence[VariantView],
                 history: str, insights: str) -> Edit:
        shown = render_files(parent.files, editable, self.max_file_chars)
        context, inspirations = self._context(parent, others, history, insights)
        messages = [
            {"role": "system", "content": self.prompts["SYSTEM"]},
            {"role": "user", "content": self._prompt("DIAGNOSE", id=parent.id, files=shown, context=context,
                                                        feedback=parent.feedback or "(none)")},
        ]
        problem = llm.complete(messages).strip()
        messages += [{"role": "assistant", "content": problem},
                     {"role": "user", "content": self._prompt("IMPLEMENT", problem=problem)}]
        fixes, novelty_retried = 0, False
        while True:
            reply = llm.complete(messages)
            changed, errors = apply_blocks(parse_blocks(reply), parent.files, editable)
            if not errors and changed:
                changed = {p: t for p, t in changed.items() if parent.files.get(p) != t}
            if not errors and changed:
                near, similarity, duplicate = closest(parent, {**parent.files, **changed}, others,
                                                      self.novelty_threshold)
                novelty = {"closest": near.id if near else None, "similarity": round(similarity, 4),
                           "retried": novelty_retried}
                if not duplicate:
                    return Edit(files=changed, summary=_first_line(problem), proposer="llm",
                                calls=list(llm.calls),
                                meta={"problem": problem, "fix_attempts": fixes, "novelty": novelty,
                                      "inspirations": inspirations})
                ended = " ".join(llm_context.outcome(near).split())[:200]
                if novelty_retried:
                    raise ProposalError(f"{llm.model}: near-duplicate of {near.id} (similarity {similarity:.2f}; "
                                        f"{near.id} was {ended}), refused before evaluation")
                novelty_retried = True
                messages += [{"role": "assistant", "content": reply},
                             {"role": "user", "content": self._prompt("NOVELTY", other=near.id, similarity=similarity,
                                                                        outcome=ended)}]
                continue
            if not errors:
                errors = ["the blocks change nothing"]
            if fixes == self.fix_attempts:
                raise ProposalError(
                    f"{llm.model}: no applicable edit after {self.fix_attempts + 1} attempts: {errors[0]}")
            fixes += 1
            messages += [{"role": "assistant", "content": reply},
                         {"role": "user", "content": self._prompt("RETRY", errors="\n".join(f"- {e}" for e in errors))}]


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "llm edit")
    return line[:200]


@hookimpl(trylast=True)
def register_proposer(register):
    register("llm", LLMProposer,
             description="a language model (any litellm provider) diagnoses the parent and writes SEARCH/REPLACE edits")
