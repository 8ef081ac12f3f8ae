"""A running summary of what worked and what failed, as ShinkaEvolve's meta-scratchpad.

The proposer keeps one ``Scratchpad`` for all its proposals (they run in parallel threads): the first
proposal that sees any history, and then every ``every`` proposals, one cheap LLM call rewrites the
insights from the attempts in view (their summaries, outcomes and reasons) and the previous
insights. Only the thread that claims a refresh makes the call; the others use the text as it is.
Nothing hidden is needed after a resume: the attempts come from the archive, so the first proposal
rebuilds the insights, and every edit's ``meta["insights"]`` records what it was shown.
"""

from __future__ import annotations

import threading

SYSTEM = """You keep the research notes of an automated search that edits the plugins of a small \
language model's training loop. Be concrete and brief."""

PROMPT = """Previous insights:
{previous}

Attempts so far, with how each ended:
{history}

Rewrite the insights in at most 150 words, as three short lists: what worked (and by how much), \
what failed and why (the rejection reasons), and what to try next. No code."""


class Scratchpad:
    def __init__(self, every: int = 5):
        self.every = every  # 0: never
        self.text = ""
        self.since = 0  # proposals since the last refresh
        self.refreshing = False
        self.tried = False  # a refresh was made (or failed) in this process
        self.lock = threading.Lock()

    def claim(self, has_history: bool) -> bool:
        """Count a proposal; True when this caller should refresh the insights now."""
        with self.lock:
            self.since += 1
            due = bool(self.every) and has_history and not self.refreshing and (
                not self.tried or self.since >= self.every)
            if due:
                self.refreshing, self.tried, self.since = True, True, 0
            return due

    def messages(self, history: str) -> list[dict[str, str]]:
        with self.lock:
            previous = self.text or "(none yet)"
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": PROMPT.format(previous=previous, history=history)}]

    def done(self, text: str | None) -> None:
        """End a refresh: the new insights, or None when the call failed (the old ones stay)."""
        with self.lock:
            if text and text.strip():
                self.text = text.strip()
            self.refreshing = False

    def current(self) -> str:
        with self.lock:
            return self.text
