"""The variant archive: every variant of the plugins a git commit, with a SQLite index and a browser.

An archive is a bare git repository. A variant is a commit whose tree is the whole editable surface
(a plugins directory) and whose first parent is its parent variant's commit, so `git log v12` is
v12's lineage. Each variant has a lightweight tag (its id, ``v0``, ``v1``, ...); ``main`` (HEAD)
follows the most recently admitted variant. The commit message carries the variant's full record
as JSON, so the SQLite index next to it (``selfloop-index.sqlite``) is a cache that is rebuilt from
git alone when missing, stale or damaged. One writer at a time (a file lock); commits are made with
plumbing, never through a checked-out working tree. `selfloop archive serve` browses it (server.py
and browser.html/.js/.css, no network assets).

The interface the meta loop uses::

    from selfloop.archive import Archive

    archive = Archive.init(path, from_dir="plugins/")   # seed variant v0 from a plugin tree
    archive = Archive(path, main_metric="score")        # open an existing archive
    vid = archive.add(
        parent="v0",
        files=Path("work/plugins") or {"tasks/x.py": "...", ...},   # the FULL tree (None = absent)
        meta={
            "proposer": "mutation", "model": "openai/gpt-4o-mini",
            "summary": "one line on the edit",
            "calls": [LLMCall(...) or {"model", "messages", "response", "prompt_tokens",
                      "completion_tokens", "cost_usd", "seconds"}],
            "scores": {"smoke": 1.0, "held_out": 0.62} or {"held_out": {"accuracy": 0.62}},
            "decision": "admitted", "reasons": ["held_out improved by 0.04"],
            "sandbox": {"backend": "docker", "exit_code": 0, "log_tail": "..."},
            "seconds": 41.2,
        },
        status="admitted",                                  # or "rejected": recorded, kept apart
    )
    archive.get(vid)            # Variant: id, parent, created, status, scores, commit, meta
    archive.children(vid)       # [Variant] whose parent is vid (admitted and rejected)
    archive.lineage(vid)        # [Variant] root first, ending with vid
    archive.best("held_out")    # Variant | None: highest metric among admitted variants
    archive.list(status=None, sort=None, limit=None)   # [Variant], oldest first or best first
    archive.diff(a, b=None)     # unified diff text: a vs its parent, or a -> b
    archive.files(vid)          # {relative path: text}
    archive.materialize(vid, d) # writes the tree: `selfloop plugins --plugins-dir d` loads it
    archive.summaries(metric=None, status="admitted")  # [VariantSummary] for parent selectors

``selfloop.archive.export.export_package(archive, vid, d)`` writes an installable distribution
with ``selfloop`` entry points. Also: ``add_many(items)`` (many variants under one lock, one pack: imports), ``file_bytes(id)``,
``metrics()``, ``len(archive)``, ``list_json(...)`` and ``compact_json()`` (JSON text made by
SQLite, for the CLI and the browser), ``reindex()``. An ``Archive`` is safe to share between
threads; any number of processes may open the same archive and add to it at once.

Scores are a flat ``{metric: float | None}``; a nested dict per evaluation stage becomes
``stage.metric`` keys, and a numeric ``meta["score"]`` also counts as the metric ``score`` (the
default main metric). Meta may hold anything JSON-serialisable (dataclasses become dicts; NaN and
infinities become null). Errors are ``selfloop.core.errors.ArchiveError``.
"""

from .archive import Archive
from .record import Variant

__all__ = ["Archive", "Variant"]
