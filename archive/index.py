"""The SQLite index: a cache of the variant records in git, for fast queries.

Git is the truth; this file can be deleted at any time. It remembers a fingerprint of the refs it
was built from (the tags directory's and packed-refs' stat); when the refs have changed behind its
back (a writer killed between its ref update and its index write, a person running git), or when
the file is missing or damaged, the archive syncs it from git again.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from .record import Variant, decode_message, variant_seq

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS variants (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    sha TEXT NOT NULL,
    parent TEXT,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    proposer TEXT,
    summary TEXT,
    scores TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS variants_parent ON variants(parent);
CREATE TABLE IF NOT EXISTS scores (
    id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (id, metric)
);
CREATE INDEX IF NOT EXISTS scores_metric ON scores(metric, value);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT);
"""
LIGHT_COLUMNS = "seq, id, sha, parent, created, status, scores"


def refs_fingerprint(repo: Path) -> str:
    """Changes whenever a variant tag is created or deleted (loose or packed), cheap to compute."""
    parts = []
    for path in (repo / "refs" / "tags", repo / "packed-refs"):
        try:
            info = os.stat(path)
            parts.append(f"{info.st_mtime_ns}:{info.st_size}:{info.st_ino}")
        except FileNotFoundError:
            parts.append("-")
    return "|".join(parts)


class Index:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"index schema {version}, expected {SCHEMA_VERSION}")
        self.db.executescript(SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self.db.execute("SELECT count(*) FROM variants").fetchone()

    @staticmethod
    def remove(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every row and the fingerprint: the next use syncs everything from git."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM variants")
        self.db.execute("DELETE FROM scores")
        self.db.execute("DELETE FROM state")
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # --- freshness ---------------------------------------------------------------------------

    def fingerprint(self) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key='fingerprint'").fetchone()
        return row[0] if row else None

    def set_fingerprint(self, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO state VALUES ('fingerprint', ?)", (value,))

    def sync(self, refs: dict[str, str], read_messages, progress=None) -> int:
        """Make the rows match the variant tags {id: sha}; returns how many rows changed.

        ``read_messages(shas)`` yields (sha, commit message) for each sha, in order."""
        have = dict(self.db.execute("SELECT id, sha FROM variants"))
        gone = [vid for vid, sha in have.items() if refs.get(vid) != sha]
        new = [(vid, sha) for vid, sha in refs.items() if have.get(vid) != sha]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for vid in gone:
                self.db.execute("DELETE FROM variants WHERE id=?", (vid,))
                self.db.execute("DELETE FROM scores WHERE id=?", (vid,))
            messages = read_messages([sha for _, sha in new])
            for done, ((vid, sha), (_, message)) in enumerate(zip(new, messages)):
                try:
                    variant_seq(vid)
                    record = decode_message(message, f"tag {vid}")
                except Exception:  # noqa: BLE001, S112 - any tag that is not a variant (a person's own) is not ours to index
                    continue
                if record["id"] == vid:
                    self._insert(record, sha)
                if progress and done % 200 == 0:
                    progress(done, len(new))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return len(gone) + len(new)

    # --- writing -----------------------------------------------------------------------------

    def insert(self, record: dict, sha: str, fingerprint: str) -> None:
        self.insert_many([(record, sha)], fingerprint)

    def insert_many(self, items: list[tuple[dict, str]], fingerprint: str) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for record, sha in items:
                self._insert(record, sha)
            self.set_fingerprint(fingerprint)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _insert(self, record: dict, sha: str) -> None:
        meta = record["meta"]
        scores = meta.get("scores") or {}
        summary = meta.get("summary") if isinstance(meta.get("summary"), str) else None
        proposer = meta.get("proposer") if isinstance(meta.get("proposer"), str) else None
        self.db.execute(
            "INSERT OR REPLACE INTO variants VALUES (?,?,?,?,?,?,?,?,?,?)",
            (variant_seq(record["id"]), record["id"], sha, record["parent"], record["created"],
             record["status"], proposer, summary, json.dumps(scores),
             json.dumps(record, ensure_ascii=False)),
        )
        self.db.execute("DELETE FROM scores WHERE id=?", (record["id"],))
        self.db.executemany(
            "INSERT INTO scores VALUES (?,?,?)", [(record["id"], k, v) for k, v in scores.items()]
        )

    # --- queries -----------------------------------------------------------------------------

    def next_seq(self) -> int:
        return self.db.execute("SELECT coalesce(max(seq) + 1, 0) FROM variants").fetchone()[0]

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM variants").fetchone()[0]

    def record(self, variant_id: str) -> str | None:
        row = self.db.execute("SELECT record FROM variants WHERE id=?", (variant_id,)).fetchone()
        return row[0] if row else None

    def variants(self, where: str = "", params: tuple = (), order: str = "v.seq", limit: int | None = None,
                 join_metric: str | None = None, fetch=None) -> list[Variant]:
        columns = ", ".join("v." + c for c in LIGHT_COLUMNS.split(", "))
        return [
            Variant(vid, parent, created, status, json.loads(scores), sha, None, fetch)
            for _seq, vid, sha, parent, created, status, scores in
            self._select(columns, where, params, order, limit, join_metric)
        ]

    def variants_json(self, where: str = "", params: tuple = (), order: str = "v.seq", limit: int | None = None,
                      join_metric: str | None = None) -> list[tuple[str, str]]:
        """The same rows as :meth:`variants`, as (id, JSON object text built by SQLite)."""
        # operator, changed_kinds and judged_by (which edit made it, which component kinds it
        # changed, what judged it) are read from the stored record: older variants, archived before
        # evolve wrote them, give null.
        columns = ("v.id, json_object('id', v.id, 'parent', v.parent, 'status', v.status, 'created', v.created, "
                   "'proposer', v.proposer, 'operator', json_extract(v.record, '$.meta.operator'), "
                   "'changed_kinds', json(coalesce(json_extract(v.record, '$.meta.changed_kinds'), 'null')), "
                   "'judged_by', json_extract(v.record, '$.meta.judged_by'), "
                   "'scores', json(v.scores), 'commit', v.sha)")
        return self._select(columns, where, params, order, limit, join_metric).fetchall()

    def table_rows(self, metrics: list[str], where: str = "", params: tuple = (), order: str = "v.seq",
                   limit: int | None = None, join_metric: str | None = None) -> list[tuple]:
        """Rows for a text table, every cell a string formatted by SQLite: id, parent, status,
        proposer, one column per metric (4 significant digits, '-' when missing), created (UTC)."""
        cells = ["v.id", "coalesce(v.parent, '-')", "v.status", "coalesce(v.proposer, '-')"]
        joins = ""
        for n, _ in enumerate(metrics):
            cells.append(f"iif(m{n}.value IS NULL, '-', printf('%.4g', m{n}.value))")
            joins += f" LEFT JOIN scores m{n} ON m{n}.id = v.id AND m{n}.metric = ?"
        cells.append("strftime('%Y-%m-%d %H:%M:%S', v.created, 'unixepoch')")
        rows = self._select(", ".join(cells), where, params, order, limit, join_metric,
                            joins=joins, leading=tuple(metrics))
        return rows.fetchall()

    def _select(self, columns: str, where: str, params: tuple, order: str, limit: int | None,
                join_metric: str | None, joins: str = "", leading: tuple = ()):
        sql = f"SELECT {columns} FROM variants v{joins}"
        args: list = list(leading)  # parameters of the extra joins come first
        if join_metric is not None:
            sql += " LEFT JOIN scores s ON s.id = v.id AND s.metric = ?"
            args.append(join_metric)
        if where:
            sql += f" WHERE {where}"
            args += params
        sql += f" ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return self.db.execute(sql, args)

    def summary_rows(self, metric: str) -> list[tuple]:
        """Every variant, oldest first, as (id, parent, created, status, metric value or None,
        number of children): what :meth:`Archive.summaries` gives, without decoding any scores."""
        return self.db.execute(
            "SELECT v.id, v.parent, v.created, v.status, s.value, coalesce(c.n, 0) FROM variants v "
            "LEFT JOIN scores s ON s.id = v.id AND s.metric = ? "
            "LEFT JOIN (SELECT parent, count(*) AS n FROM variants WHERE parent IS NOT NULL GROUP BY parent) c "
            "ON c.parent = v.id ORDER BY v.seq", (metric,)).fetchall()

    def all_admitted_have(self, metric: str) -> bool:
        """Whether every admitted variant has a value of ``metric``."""
        return self.db.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM variants v LEFT JOIN scores s ON s.id = v.id AND s.metric = ? "
            "WHERE v.status = 'admitted' AND s.value IS NULL)", (metric,)).fetchone()[0] == 1

    def child_counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT parent, count(*) FROM variants WHERE parent IS NOT NULL GROUP BY parent"))

    def metrics(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT metric FROM scores ORDER BY metric")]

    def compact_json(self) -> str:
        """Every variant as [seq, id, parent, status, created, proposer, scores, edit], one JSON
        array text built by SQLite (10,000 variants in tens of milliseconds, no Python objects).

        ``edit`` is [operator, changed_kinds, judged_by] from the record (nulls for older ones),
        read with one parse of the record per row."""
        return self.db.execute(
            "SELECT json_group_array(json_array(seq, id, parent, status, round(created, 3), proposer, "
            "json(scores), json(json_extract(record, '$.meta.operator', '$.meta.changed_kinds', "
            "'$.meta.judged_by')))) FROM (SELECT * FROM variants ORDER BY seq)"
        ).fetchone()[0]
