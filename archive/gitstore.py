"""The git side of the archive: a bare repository written with plumbing only, never a checkout.

Blobs, trees and commits go straight into the object database (gitdb, gitpython's object store);
then the variant's tag and the ``main`` branch are written with gitpython's reference API. Objects
are written first and refs last: a process killed in between leaves only unreachable objects, never
a ref to something missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Any

from selfloop.core.errors import ArchiveError

TAG_PREFIX = "refs/tags/"  # one lightweight tag per variant: `git log v12` works as is
MAIN_REF = "refs/heads/main"  # the most recently admitted variant; HEAD points here
IGNORED_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
IGNORED_SUFFIXES = (".pyc", ".pyo")
FILE_MODE, EXEC_MODE, DIR_MODE = 0o100644, 0o100755, 0o040000
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
IDENTITY = "selfloop archive <archive@selfloop.invalid>"


def read_directory(directory: Path) -> dict[str, tuple[bytes, int]]:
    """A plugin directory as {relative posix path: (content, git mode)}, without caches."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArchiveError(f"{directory}: not a directory")
    tree: dict[str, tuple[bytes, int]] = {}
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        for name in sorted(names):
            if name.endswith(IGNORED_SUFFIXES):
                continue
            path = Path(root, name)
            info = path.lstat()
            rel = path.relative_to(directory).as_posix()
            if stat.S_ISLNK(info.st_mode):
                raise ArchiveError(f"{path}: symbolic links cannot be archived; copy the file")
            mode = EXEC_MODE if info.st_mode & stat.S_IXUSR else FILE_MODE
            tree[rel] = (path.read_bytes(), mode)
    if not tree:
        raise ArchiveError(f"{directory}: no files to archive")
    return tree


def normalize_files(files: dict[str, bytes | str]) -> dict[str, tuple[bytes, int]]:
    """Check the paths of an in-memory tree and encode its texts (a None content is left out)."""
    if not files:
        raise ArchiveError("a variant needs at least one file")
    tree = {}
    for raw_path, content in files.items():
        path = PurePosixPath(str(raw_path).replace("\\", "/"))
        parts = path.parts
        if path.is_absolute() or not parts or any(p in ("", ".", "..") for p in parts):
            raise ArchiveError(f"{raw_path!r}: file paths must be relative, without '.' or '..'")
        if parts[0] == ".git" or any(p in IGNORED_DIRS for p in parts[:-1]):
            continue
        if path.name.endswith(IGNORED_SUFFIXES) or content is None:  # None: deleted by an edit
            continue
        if isinstance(content, str):
            content = content.encode()
        if not isinstance(content, bytes):
            raise ArchiveError(f"{raw_path!r}: file content must be str or bytes, not {type(content).__name__}")
        tree[path.as_posix()] = (content, FILE_MODE)
    if not tree:
        raise ArchiveError("a variant needs at least one file (caches are not archived)")
    return tree


def author_line(proposer: Any) -> str:
    """A git identity for the proposer of a variant (names only; emails are not known)."""
    name = re.sub(r"[<>\n\r]+", " ", str(proposer or "selfloop")).strip() or "selfloop"
    return f"{name} <{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}@selfloop.invalid>"


class GitStore:
    """A bare repository holding one commit per variant."""

    def __init__(self, path: Path):
        import git
        from gitdb import GitDB

        self.path = Path(path)
        try:
            self.repo = git.Repo(self.path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ArchiveError(
                f"{self.path}: no archive here; create one with "
                f"`selfloop archive init --archive {self.path} --from DIR`"
            ) from None
        self.objects = GitDB(str(self.path / "objects"))
        self._batch: dict[bytes, tuple[bytes, bytes]] | None = None

    @classmethod
    def create(cls, path: Path) -> GitStore:
        import git

        git.Repo.init(path, bare=True, initial_branch="main")
        return cls(path)

    # --- writing objects ---------------------------------------------------------------------

    def _store(self, kind: bytes, data: bytes) -> str:
        from gitdb import IStream

        sha = hashlib.sha1(b"%s %d\0" % (kind, len(data)) + data).digest()
        if self._batch is not None:
            if sha not in self._batch and not self.objects.has_object(sha):
                self._batch[sha] = (kind, data)
        elif not self.objects.has_object(sha):
            self.objects.store(IStream(kind, len(data), BytesIO(data)))
        return sha.hex()

    @contextmanager
    def batch(self):
        """Collect new objects in memory and write them as one pack on ``flush``: thousands of
        variants cost two files instead of four loose objects each. Unflushed objects are dropped."""
        self._batch = {}
        try:
            yield
        finally:
            self._batch = None

    def flush(self) -> None:
        """Write the batch's objects as a pack (and its index) before any ref may point at them."""
        if not self._batch:
            return
        from gitdb.base import OStream
        from gitdb.pack import PackEntity

        objects = [OStream(sha, kind, len(data), BytesIO(data)) for sha, (kind, data) in self._batch.items()]
        PackEntity.create(objects, str(self.path / "objects" / "pack"), object_count=len(objects))
        self.objects.update_cache(force=True)
        self._batch = {}

    def write_tree(self, files: dict[str, tuple[bytes, int]]) -> str:
        """Write blobs and (nested) trees for a flat {path: (content, mode)} map; returns the root tree."""
        root: dict = {}
        for path, (content, mode) in files.items():
            node = root
            *dirs, name = path.split("/")
            for d in dirs:
                node = node.setdefault(d, {})
                if not isinstance(node, dict):
                    raise ArchiveError(f"{path!r}: a file and a directory share the name {d!r}")
            if isinstance(node.get(name), dict):
                raise ArchiveError(f"{path!r}: a file and a directory share this name")
            node[name] = (self._store(b"blob", content), mode)
        return self._write_node(root)

    def _write_node(self, node: dict) -> str:
        entries = []
        for name, value in node.items():
            if isinstance(value, dict):
                entries.append((name, DIR_MODE, self._write_node(value)))
            else:
                entries.append((name, value[1], value[0]))
        # git orders tree entries by name, with a directory's name compared as if it ended in "/"
        entries.sort(key=lambda e: e[0].encode() + (b"/" if e[1] == DIR_MODE else b""))
        data = b"".join(b"%o %s\0%s" % (mode, name.encode(), bytes.fromhex(sha)) for name, mode, sha in entries)
        return self._store(b"tree", data)

    def write_commit(self, tree: str, parent_sha: str | None, message: str, author: str, when: float) -> str:
        stamp = f"{int(when)} +0000"
        lines = [f"tree {tree}"]
        if parent_sha:
            lines.append(f"parent {parent_sha}")
        lines += [f"author {author} {stamp}", f"committer {IDENTITY} {stamp}", "", message]
        return self._store(b"commit", "\n".join(lines).encode())

    def publish(self, tags: list[tuple[str, str]], main: str | None) -> None:
        """Create the variants' tags, then move main.

        gitpython writes each ref in-process as git does (a ``.lock`` file renamed over the ref),
        so a writer killed here leaves each ref either absent or complete, and no child process
        behind it still writing. The caller holds the archive lock, so no tag exists yet.
        """
        from git.refs import Reference

        refs = [(f"{TAG_PREFIX}{vid}", sha, False) for vid, sha in tags]
        refs += [(MAIN_REF, main, True)] if main else []
        try:
            for ref, sha, force in refs:
                # under the archive lock, a ref's .lock file is one a killed writer left behind
                (self.path / f"{ref}.lock").unlink(missing_ok=True)
                Reference.create(self.repo, ref, sha, force=force)
        except (OSError, ValueError) as exc:
            raise ArchiveError(f"{self.path}: could not write refs: {exc}") from None

    # --- reading -----------------------------------------------------------------------------

    def variant_refs(self) -> dict[str, str]:
        """{variant id: commit sha} for every variant tag (loose or packed)."""
        out = self.repo.git.for_each_ref("--format=%(refname:lstrip=2) %(objectname)", TAG_PREFIX)
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def commit_message(self, sha: str) -> str:
        return _message(self.repo.odb.stream(bytes.fromhex(sha)).read())

    def commit_messages(self, shas: list[str]):
        """Yield (sha, message) for many commits through one `git cat-file --batch` process."""
        import tempfile

        with tempfile.TemporaryFile() as stdin:
            stdin.write("".join(f"{sha}\n" for sha in shas).encode())
            stdin.seek(0)
            proc = self.repo.git.cat_file("--batch", istream=stdin, as_process=True)
            try:
                for sha in shas:
                    header = proc.stdout.readline().split()
                    if len(header) != 3:  # "<sha> missing": a tag pointing nowhere
                        yield sha, ""
                        continue
                    data = proc.stdout.read(int(header[2]) + 1)[:-1]  # content, then a newline
                    yield sha, _message(data) if header[1] == b"commit" else ""
            finally:
                proc.stdout.close()
                proc.wait()

    def read_files(self, sha: str) -> dict[str, bytes]:
        tree = self.repo.commit(sha).tree
        return {item.path: item.data_stream.read() for item in tree.traverse() if item.type == "blob"}

    def read_modes(self, sha: str) -> dict[str, int]:
        tree = self.repo.commit(sha).tree
        return {item.path: item.mode for item in tree.traverse() if item.type == "blob"}

    def diff(self, old: str | None, new: str, old_label: str, new_label: str) -> str:
        """A unified diff (git's own) between two commits' trees; against nothing when old is None."""
        base = old or EMPTY_TREE
        return self.repo.git.diff(
            base, new, "--no-color", "--no-ext-diff", f"--src-prefix={old_label}/",
            f"--dst-prefix={new_label}/", stdout_as_string=True,
        )

    def gc_auto(self) -> None:
        """`git gc --auto`: packs loose objects past git's own threshold (safe beside writers)."""
        import git

        try:
            self.repo.git.gc("--auto", "--quiet")
        except git.GitCommandError:
            pass  # housekeeping only: the archive is complete without it

    def close(self) -> None:
        self.repo.close()


def _message(commit: bytes) -> str:
    """The message of a raw commit object (what follows the headers' blank line)."""
    text = commit.decode("utf-8", "replace")
    return text.split("\n\n", 1)[1] if "\n\n" in text else ""
