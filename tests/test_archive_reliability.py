"""The archive survives what real runs do to it: lost or damaged indexes, crashes, several writers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from selfloop.archive import Archive
from selfloop.archive.archive import INDEX_FILE


@pytest.fixture
def archive(tmp_path) -> Archive:
    seed = tmp_path / "seed"
    (seed / "tasks").mkdir(parents=True)
    (seed / "__init__.py").write_text("")
    (seed / "tasks" / "toy.py").write_text("VALUE = 0\n")
    with Archive.init(tmp_path / "archive", seed) as created:
        yield created


def add_some(archive: Archive, count: int) -> list[str]:
    ids = []
    for i in range(count):
        ids.append(archive.add(parent=ids[-1] if ids else "v0", files={"__init__.py": "", "tasks/toy.py": f"VALUE = {i + 1}\n"},
                               meta={"score": i / 10, "proposer": "test"}))
    return ids


def snapshot(archive: Archive):
    return [(v.id, v.parent, v.status, v.commit, v.scores, v.meta) for v in archive.list()]


def tags(path: Path) -> list[str]:
    out = subprocess.run(["git", "-C", str(path), "tag"], capture_output=True, text=True, check=True).stdout
    return sorted(out.split(), key=lambda tag: (len(tag), tag))  # v2 before v10


def fsck_clean(path: Path) -> bool:
    result = subprocess.run(["git", "-C", str(path), "fsck", "--strict"], check=False, capture_output=True, text=True)
    return result.returncode == 0 and not any(
        word in result.stdout + result.stderr for word in ("error", "missing", "broken", "corrupt"))


def test_deleted_index_is_rebuilt_from_git_alone(archive):
    add_some(archive, 4)
    before = snapshot(archive)
    archive.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{archive.path / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    reopened = Archive(archive.path)
    assert snapshot(reopened) == before
    assert reopened.best().id == "v4"


def test_corrupt_index_is_rebuilt(archive):
    add_some(archive, 3)
    before = snapshot(archive)
    archive.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{archive.path / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    (archive.path / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    reopened = Archive(archive.path)
    assert snapshot(reopened) == before
    assert reopened.add(parent="v3", files=reopened.files("v3"), meta={}) == "v4"


def test_index_behind_git_catches_up(archive):
    """The state a writer killed between its ref update and its index write leaves behind."""
    add_some(archive, 2)
    archive.close()
    index = archive.path / INDEX_FILE
    saved = index.read_bytes()
    writer = Archive(archive.path)
    new = writer.add(parent="v2", files=writer.files("v2"), meta={"score": 5.0})
    writer.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    index.write_bytes(saved)  # the index as it was before that add committed
    reader = Archive(archive.path)
    assert [v.id for v in reader.list()] == ["v0", "v1", "v2", new]
    assert reader.best().id == new
    assert reader.add(parent=new, files=reader.files(new), meta={}) == "v4"  # no id is reused


def test_tags_removed_or_packed_behind_its_back_are_noticed(archive):
    add_some(archive, 3)
    subprocess.run(["git", "-C", str(archive.path), "pack-refs", "--all"], check=True)
    assert [v.id for v in archive.list()] == ["v0", "v1", "v2", "v3"]
    subprocess.run(["git", "-C", str(archive.path), "tag", "-d", "v3"], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(archive.path), "tag", "release-1", "v1"], check=True)  # not a variant
    assert [v.id for v in archive.list()] == ["v0", "v1", "v2"]
    assert archive.reindex() == 3


WRITER = textwrap.dedent("""
    import sys
    from selfloop.archive import Archive
    archive = Archive(sys.argv[1])
    worker, count = sys.argv[2], int(sys.argv[3])
    for i in range(count):
        files = archive.files("v0") | {"tasks/toy.py": f"VALUE = '{worker}-{i}'\\n" + "# padding\\n" * 2000}
        vid = archive.add(parent="v0", files=files, meta={"worker": worker, "i": i, "blob": "x" * 20000})
        print(vid, flush=True)
""")


@pytest.mark.slow
def test_concurrent_writers_lose_nothing(archive, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    workers = [subprocess.Popen([sys.executable, str(script), str(archive.path), f"w{n}", "12"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(4)]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err for _, err in outputs]
    reported = [line for out, _ in outputs for line in out.split()]
    assert len(reported) == len(set(reported)) == 48
    fresh = Archive(archive.path)
    stored = {(v.meta["worker"], v.meta["i"]) for v in fresh.list() if v.id != "v0"}
    assert stored == {(f"w{n}", i) for n in range(4) for i in range(12)}
    assert set(tags(archive.path)) == {"v0", *reported}
    for vid in reported:
        worker, i = fresh.get(vid).meta["worker"], fresh.get(vid).meta["i"]
        assert fresh.files(vid)["tasks/toy.py"].startswith(f"VALUE = '{worker}-{i}'")
    assert fsck_clean(archive.path)


@pytest.mark.slow
def test_kill_9_mid_add_leaves_no_half_variant(archive, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for delay in (0.0, 0.013, 0.029, 0.041, 0.067, 0.11):  # spread over the phases of an add
        proc = subprocess.Popen([sys.executable, str(script), str(archive.path), f"k{delay}", "1000"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        proc.stdout.readline()  # its first add is done: from here on it is always mid-add
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # every visible variant is complete: its record, its files and its git tag all agree
        fresh = Archive(archive.path)
        listed = [v.id for v in fresh.list()]
        assert listed == tags(archive.path)
        for vid in listed[1:]:
            v = fresh.get(vid)
            assert v.meta["blob"] == "x" * 20000
            assert fresh.files(vid)["tasks/toy.py"].startswith(f"VALUE = '{v.meta['worker']}-{v.meta['i']}'")
        fresh.close()
    assert len(listed) >= 7  # at least each writer's first variant
    assert fsck_clean(archive.path)
    # and the archive keeps working after the crashes
    again = Archive(archive.path)
    assert again.add(parent="v0", files=again.files("v0"), meta={}) == f"v{len(listed)}"


def test_git_history_is_plain_git(archive, tmp_path):
    add_some(archive, 2)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(archive.path), str(clone)], check=True)
    assert (clone / "tasks" / "toy.py").read_text() == "VALUE = 2\n"  # main = latest admitted
    assert shutil.which("git")


def test_reindex_keeps_other_open_handles_working(archive):
    add_some(archive, 2)
    other = Archive(archive.path)  # e.g. a server that has the index open
    assert len(other) == 3
    assert archive.reindex() == 3
    archive.add(parent="v2", files=archive.files("v2"), meta={})
    assert [v.id for v in other.list()] == ["v0", "v1", "v2", "v3"]
    other.close()


