"""The Archive: add, query, diff, materialize and export variants (see the package docstring)."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from selfloop.core.clades import Clade, clades
from selfloop.core.errors import ArchiveError
from selfloop.core.types import VariantSummary

from .index import Index, refs_fingerprint
from .lock import WriterLock
from .record import (
    STATUSES,
    Variant,
    clean_meta,
    encode_message,
    make_record,
    variant_id,
)

INDEX_FILE = "selfloop-index.sqlite"
LOCK_FILE = "selfloop-writer.lock"
# Exists while a writer is between its ref update and its index write. Found by someone holding the
# lock, it means that writer died there: its variant is complete in git but missing from the index.
PENDING_FILE = "selfloop-pending"
DEFAULT_METRIC = "score"
# Single adds write loose objects; every GC_EVERY variants `git gc --auto` packs them if git thinks
# there are enough (it returns at once otherwise, and packs in the background when it does).
GC_EVERY = 500


def _synchronized(method):
    """One thread at a time per Archive object (the web server is threaded; git readers are not)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._mutex:
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:  # damaged after it was opened (a damaged file is rebuilt on open)
                raise ArchiveError(f"{self.path / INDEX_FILE}: index unusable ({exc}); rebuild it from git "
                                   f"with `selfloop archive reindex --archive {self.path}`") from None

    return wrapper


def _clade_json(clade: Clade) -> str:
    """``Clade.to_dict()`` as compact JSON, made by hand: thousands per listing (json.dumps is slower)."""
    d = clade.to_dict()
    return (f'{{"successes":{float(d["successes"])!r},"failures":{float(d["failures"])!r},'
            f'"members":{int(d["members"])},"rate":{float(d["rate"])!r}}}')


class Archive:
    """A variant archive at ``path``: a bare git repository plus its SQLite index."""

    def __init__(self, path: str | os.PathLike, *, main_metric: str = DEFAULT_METRIC, progress=None):
        self.path = Path(path).absolute()
        self.main_metric = main_metric
        self._progress = progress  # called as progress(done, total) while the index is rebuilt
        if not ((self.path / "HEAD").is_file() and (self.path / "objects").is_dir()):
            raise ArchiveError(
                f"{self.path}: no archive here; create one with "
                f"`selfloop archive init --archive {path} --from DIR`"
            )
        self._mutex = threading.RLock()
        self._lock = WriterLock(self.path / LOCK_FILE)
        self._store_obj = None
        self._index_obj: Index | None = None

    # --- creation ----------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike, from_dir: str | os.PathLike, *, meta: dict | None = None,
             main_metric: str = DEFAULT_METRIC) -> Archive:
        """Create an archive at ``path`` (absent or empty) seeded with the plugin tree ``from_dir``."""
        from .gitstore import GitStore, read_directory

        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            what = "an archive" if (path / "HEAD").exists() else "not empty"
            raise ArchiveError(f"{path}: already exists and is {what}; choose a new path")
        read_directory(Path(from_dir))  # check the seed before creating anything
        GitStore.create(path)
        (path / "description").write_text("selfloop variant archive: one commit per variant\n")
        archive = cls(path, main_metric=main_metric)
        seed_meta = {"proposer": "seed", "summary": f"seed from {Path(from_dir).name}/"}
        seed_meta.update(meta or {})
        archive.add(parent=None, files=Path(from_dir), meta=seed_meta)
        return archive

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def _store(self):
        if self._store_obj is None:
            from .gitstore import GitStore

            self._store_obj = GitStore(self.path)
        return self._store_obj

    @property
    def _index(self) -> Index:
        """The index, opened (rebuilt if damaged) and synced with git if the refs moved."""
        if self._index_obj is None:
            db = self.path / INDEX_FILE
            try:
                self._index_obj = Index(db)
            except sqlite3.DatabaseError:
                with self._lock.held():
                    Index.remove(db)  # damaged: git is the truth, rebuild from it
                    self._index_obj = Index(db)
        # the fingerprint alone can miss a change made within one tick of the file-system clock
        stale = self._index_obj.fingerprint() != refs_fingerprint(self.path)
        if stale or (self.path / PENDING_FILE).exists():
            self._sync()
        return self._index_obj

    def _sync(self) -> None:
        with self._lock.held():
            index = self._index_obj
            fingerprint = refs_fingerprint(self.path)
            pending = self.path / PENDING_FILE
            if index.fingerprint() == fingerprint and not pending.exists():
                return  # another process synced while we waited for the lock
            index.sync(self._store.variant_refs(), self._store.commit_messages, self._progress)
            index.set_fingerprint(fingerprint)
            pending.unlink(missing_ok=True)

    def reindex(self) -> int:
        """Rebuild the index from git; returns the number of variants.

        The rows are cleared in place, so other processes that have the index open (a server)
        follow; only a file SQLite cannot read at all is deleted and made anew.
        """
        with self._mutex, self._lock.held():
            try:
                self._index_obj = self._index_obj or Index(self.path / INDEX_FILE)
                self._index_obj.clear()
            except sqlite3.DatabaseError:
                if self._index_obj is not None:
                    self._index_obj.close()
                Index.remove(self.path / INDEX_FILE)
                self._index_obj = Index(self.path / INDEX_FILE)
            return self._index.count()

    def _row(self, variant: str) -> Variant:
        if not isinstance(variant, str):
            raise ArchiveError(f"variant ids are strings like 'v3', not {variant!r}")
        rows = self._index.variants("v.id = ?", (variant,), fetch=self._fetch_record)
        if not rows:
            count = self._index.count()
            known = f"it holds v0..v{count - 1}" if count else "it is empty"
            raise ArchiveError(f"unknown variant {variant!r} in {self.path} ({known})")
        return rows[0]

    def _fetch_record(self, variant: str) -> str:
        with self._mutex:
            record = self._index.record(variant)
        if record is None:
            raise ArchiveError(f"variant {variant!r} vanished from {self.path}")
        return record

    # --- writing -----------------------------------------------------------------------------

    def add(self, *, parent: str | None, files: dict[str, bytes | str] | str | os.PathLike,
            meta: dict[str, Any] | None = None, status: str = "admitted") -> str:
        """Record a variant (a full plugin tree, as a dict or a directory); returns its new id."""
        return self.add_many([{"parent": parent, "files": files, "meta": meta, "status": status}])[0]

    @_synchronized
    def add_many(self, items: Iterable[dict[str, Any]]) -> list[str]:
        """Record several variants under one lock, their new objects written as one pack (imports).

        Each item has the keyword arguments of :meth:`add`. A parent must already be archived.
        """
        from .gitstore import author_line, normalize_files, read_directory

        items = list(items)
        store = self._store
        with store.batch() if len(items) > 1 else contextlib.nullcontext():
            prepared = []
            for item in items:
                status = item.get("status", "admitted")
                if status not in STATUSES:
                    raise ArchiveError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
                meta = clean_meta(item.get("meta"))
                files = item["files"]
                tree_files = normalize_files(files) if isinstance(files, dict) else read_directory(Path(files))
                parent = item.get("parent")
                if parent is not None:
                    self._row(parent)  # fail before writing anything
                prepared.append((parent, status, meta, self._store.write_tree(tree_files)))

            with self._lock.held():
                index = self._index  # synced under the lock: next_seq sees every published variant
                seq = index.next_seq()
                published, ids, main = [], [], None
                for parent, status, meta, tree in prepared:
                    parent_sha = None
                    if parent is not None:
                        parent_sha = next((sha for vid, sha, _ in published if vid == parent), None)
                        parent_sha = parent_sha or self._row(parent).commit
                    vid = variant_id(seq)
                    seq += 1
                    created = time.time()
                    record = make_record(vid, parent, created, status, meta)
                    sha = self._store.write_commit(tree, parent_sha, encode_message(record),
                                                   author_line(meta.get("proposer")), created)
                    published.append((vid, sha, record))
                    ids.append(vid)
                    if status == "admitted":
                        main = sha
                if len(items) > 1:
                    store.flush()  # objects before refs, always
                pending = self.path / PENDING_FILE
                pending.write_text(" ".join(ids) + "\n")
                self._store.publish([(vid, sha) for vid, sha, _ in published], main)
                index.insert_many([(record, sha) for _, sha, record in published], refs_fingerprint(self.path))
                pending.unlink()
        if seq // GC_EVERY != (seq - len(ids)) // GC_EVERY:
            store.gc_auto()
        return ids

    # --- queries -----------------------------------------------------------------------------

    @_synchronized
    def get(self, variant: str) -> Variant:
        """One variant: id, parent, created, status, scores, commit, and ``meta`` (the full record)."""
        return self._row(variant)

    @_synchronized
    def list(self, status: str | None = None, *, sort: str | None = None, limit: int | None = None) -> list[Variant]:
        """Variants oldest first, or best first by the metric ``sort``; ``status`` filters."""
        return self._index.variants(**self._query(status, sort, limit), fetch=self._fetch_record)

    @_synchronized
    def list_json(self, status: str | None = None, *, sort: str | None = None, limit: int | None = None) -> list[str]:
        """What :meth:`list` selects, as JSON object texts (id, parent, status, created, proposer,
        operator, changed_kinds, judged_by, scores, commit) made by SQLite, each with its
        ``clade`` (see :meth:`clades`, over the whole archive) spliced in: the fast path for
        `selfloop archive list --json`."""
        rows = self._index.variants_json(**self._query(status, sort, limit))
        of = self.clades() if rows else {}
        return [f'{text[:-1]},"clade":{_clade_json(of.get(vid, Clade()))}}}' for vid, text in rows]

    @_synchronized
    def list_table(self, metrics: list[str], status: str | None = None, *, sort: str | None = None,
                   limit: int | None = None) -> list[tuple[str, ...]]:
        """What :meth:`list` selects, as text cells: id, parent, status, proposer, each metric,
        created (UTC)."""
        return self._index.table_rows(metrics, **self._query(status, sort, limit))

    @staticmethod
    def _query(status: str | None, sort: str | None, limit: int | None) -> dict:
        if status is not None and status not in STATUSES:
            raise ArchiveError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        where, params = ("v.status = ?", (status,)) if status else ("", ())
        query = {"where": where, "params": params, "limit": limit}
        if sort is not None:
            query |= {"order": "s.value IS NULL, s.value DESC, v.seq", "join_metric": sort}
        return query

    def __len__(self) -> int:
        with self._mutex:
            return self._index.count()

    @_synchronized
    def children(self, variant: str) -> list[Variant]:
        self._row(variant)
        return self._index.variants("v.parent = ?", (variant,), fetch=self._fetch_record)

    @_synchronized
    def lineage(self, variant: str) -> list[Variant]:
        """The chain of ancestors, root first, ending with ``variant`` itself."""
        chain = [self._row(variant)]
        while chain[-1].parent is not None:
            chain.append(self._row(chain[-1].parent))
        return chain[::-1]

    @_synchronized
    def best(self, metric: str | None = None, status: str | None = "admitted") -> Variant | None:
        """The variant with the highest ``metric`` (default: the main metric); None if none has it."""
        metric = metric or self.main_metric
        rows = self.list(status, sort=metric, limit=1)
        return rows[0] if rows and rows[0].scores.get(metric) is not None else None

    @_synchronized
    def compact_json(self) -> str:
        """Every variant as a JSON array of [seq, id, parent, status, created, proposer, scores],
        oldest first: what the web browser draws its tree and chart from."""
        return self._index.compact_json()

    @_synchronized
    def metrics(self) -> list[str]:
        return self._index.metrics()

    @_synchronized
    def summaries(self, metric: str | None = None, status: str | None = "admitted") -> list[VariantSummary]:
        """What a parent selector needs: score is ``metric`` (default the main metric).

        ``children`` counts every recorded child, admitted or rejected: each was an attempt from it.
        """
        metric = metric or self.main_metric
        counts = self._index.child_counts()
        return [
            VariantSummary(id=v.id, parent=v.parent, score=v.scores.get(metric),
                           children=counts.get(v.id, 0), created=v.created, admitted=v.admitted)
            for v in self.list(status)
        ]

    @_synchronized
    def clades(self) -> dict[str, Clade]:
        """Every variant's HGM clade (itself and all its descendants, ``selfloop.core.clades``)
        over :meth:`summaries` of every variant: a success is an admitted variant scoring above
        its parent, by ``gain`` (over its round's seed) when every admitted variant has one, else
        by the main metric (older archives).

        Only admitted variants decide the metric: evolve records no gain for a rejected variant,
        which is a failure whatever its score (as evolve's own clades count it)."""
        index = self._index
        metric = "gain" if index.all_admitted_have("gain") else self.main_metric
        return clades([VariantSummary(id=vid, parent=parent, score=score, children=children, created=created,
                                      admitted=status == "admitted")
                       for vid, parent, created, status, score, children in index.summary_rows(metric)])

    # --- files -------------------------------------------------------------------------------

    @_synchronized
    def diff(self, a: str, b: str | None = None) -> str:
        """Unified diff text: ``a`` against its parent, or from ``a`` to ``b`` when ``b`` is given."""
        if b is None:
            new = self._row(a)
            old = self._row(new.parent) if new.parent else None
            return self._store.diff(old.commit if old else None, new.commit,
                                    old.id if old else "empty", new.id)
        old, new = self._row(a), self._row(b)
        return self._store.diff(old.commit, new.commit, old.id, new.id)

    @_synchronized
    def file_bytes(self, variant: str) -> dict[str, bytes]:
        return self._store.read_files(self._row(variant).commit)

    def files(self, variant: str) -> dict[str, str]:
        """The variant's plugin tree as {relative path: text}."""
        return {p: data.decode("utf-8", "replace") for p, data in self.file_bytes(variant).items()}

    @_synchronized
    def materialize(self, variant: str, directory: str | os.PathLike) -> Path:
        """Write the variant's tree into ``directory`` (absent or empty): a `--plugins-dir`."""
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise ArchiveError(f"{directory}: exists and is not an empty directory")
        commit = self._row(variant).commit
        modes = self._store.read_modes(commit)
        for rel, data in self._store.read_files(commit).items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            if modes.get(rel, 0) & 0o111:
                target.chmod(0o755)
        return directory

    def gc(self) -> None:
        """Pack objects and refs with `git gc` (under the writer lock): fewer files, less disk."""
        import git

        with self._mutex, self._lock.held():
            try:
                self._store.repo.git.gc("--quiet")
            except git.GitCommandError as exc:
                raise ArchiveError(f"{self.path}: git gc failed: {exc.stderr.strip()}") from None

    def close(self) -> None:
        with self._mutex:
            if self._index_obj is not None:
                self._index_obj.close()
                self._index_obj = None
            if self._store_obj is not None:
                self._store_obj.close()
                self._store_obj = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r})"
