"""The variant archive's API on a real bare git repository: add, query, diff, files, errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from selfloop.archive import Archive
from selfloop.core.errors import ArchiveError
from selfloop.core.types import LLMCall, VariantSummary

PLUGIN = '''from selfloop.core.hookspecs import hookimpl

LIMIT = {limit}


@hookimpl
def register_selector(register):
    register("keep_short_{limit}", object, description="keeps answers up to LIMIT characters")
'''


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def seed_dir(tmp_path) -> Path:
    return write_tree(tmp_path / "seed", {
        "__init__.py": 'SURFACE = "selfloop.plugins"\n',
        "select/__init__.py": "",
        "select/short.py": PLUGIN.format(limit=10),
        "select/__pycache__/short.cpython-311.pyc": "junk",
        "notes.txt": "kept as is\n",
    })


@pytest.fixture
def archive(tmp_path, seed_dir) -> Archive:
    with Archive.init(tmp_path / "archive", seed_dir, meta={"scores": {"score": 0.25}}) as created:
        yield created


def git(archive: Archive, *args) -> str:
    return subprocess.run(["git", "-C", str(archive.path), *args], capture_output=True, text=True,
                          check=True).stdout


def edited(archive: Archive, parent: str, limit: int) -> dict[str, str]:
    files = archive.files(parent)
    files["select/short.py"] = PLUGIN.format(limit=limit)
    return files


def test_init_seeds_v0_from_a_directory_without_caches(archive):
    seed = archive.get("v0")
    assert seed.parent is None and seed.status == "admitted" and seed.scores == {"score": 0.25}
    assert seed.meta["proposer"] == "seed"
    assert sorted(archive.files("v0")) == ["__init__.py", "notes.txt", "select/__init__.py", "select/short.py"]
    assert git(archive, "rev-parse", "v0").strip() == seed.commit
    assert git(archive, "rev-parse", "HEAD").strip() == seed.commit


def test_add_records_meta_and_builds_git_lineage(archive):
    call = LLMCall(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "make it better"}],
                   response="<<<<<<< SEARCH", prompt_tokens=12, completion_tokens=5, cost_usd=None, seconds=0.5)
    v1 = archive.add(parent="v0", files=edited(archive, "v0", 20), meta={
        "proposer": "llm_edit", "model": "openai/gpt-4o-mini", "calls": [call],
        "scores": {"smoke": 1, "held_out": {"accuracy": 0.5}}, "score": 0.5,
        "decision": "admitted", "reasons": ["held_out rose"], "sandbox": {"exit_code": 0}, "seconds": 3.5,
    })
    v2 = archive.add(parent=v1, files=edited(archive, v1, 30), meta={"score": 0.75, "summary": "raise LIMIT"})
    assert (v1, v2) == ("v1", "v2")
    got = archive.get(v1)
    assert got.scores == {"smoke": 1.0, "held_out.accuracy": 0.5, "score": 0.5}
    assert got.meta["calls"][0]["prompt_tokens"] == 12 and got.meta["calls"][0]["cost_usd"] is None
    assert got.meta["reasons"] == ["held_out rose"]
    assert [v.id for v in archive.lineage(v2)] == ["v0", "v1", "v2"]
    assert [c.id for c in archive.children("v0")] == ["v1"]
    # git itself tells the same story
    assert git(archive, "log", "--format=%s", "v2").splitlines() == [
        "v2: admitted from v1", "v1: admitted from v0 by llm_edit", "v0: admitted (root) by seed"]
    assert git(archive, "rev-parse", "v2^").strip() == got.commit
    assert "LIMIT = 30" in git(archive, "show", "v2:select/short.py")
    fsck = subprocess.run(["git", "-C", str(archive.path), "fsck", "--strict"], check=False, capture_output=True, text=True)
    assert fsck.returncode == 0 and "error" not in fsck.stderr + fsck.stdout


def test_best_list_and_summaries_keep_rejected_apart(archive):
    v1 = archive.add(parent="v0", files=edited(archive, "v0", 11), meta={"score": 0.4})
    v2 = archive.add(parent="v0", files=edited(archive, "v0", 12), meta={"score": 0.9}, status="rejected")
    v3 = archive.add(parent=v1, files=edited(archive, v1, 13), meta={"score": 0.6, "scores": {"held_out": 0.1}})
    assert archive.best().id == v3  # the rejected v2 scores higher but is not a candidate
    assert archive.best(status=None).id == v2
    assert archive.best("held_out").id == v3
    assert archive.best("nonexistent") is None
    assert [v.id for v in archive.list("rejected")] == [v2]
    assert [v.id for v in archive.list(sort="score")] == [v2, v3, v1, "v0"]
    summaries = archive.summaries()
    assert all(isinstance(s, VariantSummary) for s in summaries)
    by_id = {s.id: s for s in summaries}
    assert set(by_id) == {"v0", v1, v3}
    assert by_id["v0"].children == 2  # v1 and the rejected v2: both were attempts from v0
    assert by_id[v3].score == 0.6 and by_id["v0"].score == 0.25
    assert {s.id for s in archive.summaries(status=None)} == {"v0", v1, v2, v3}
    assert archive.summaries(metric="held_out")[-1].score == 0.1


def test_diff_against_parent_and_between_any_two(archive):
    v1 = archive.add(parent="v0", files=edited(archive, "v0", 42), meta={})
    v2 = archive.add(parent=v1, files=archive.files(v1) | {"select/new.py": "X = 1\n"}, meta={})
    own = archive.diff(v1)
    assert "--- v0/select/short.py" in own and "+++ v1/select/short.py" in own
    assert "-LIMIT = 10" in own and "+LIMIT = 42" in own
    assert "+X = 1" in archive.diff(v2) and "LIMIT" not in archive.diff(v2)
    v3 = archive.add(parent=v2, files=archive.files(v2) | {"select/new.py": None}, meta={})  # None: deleted
    assert "select/new.py" not in archive.files(v3) and "deleted file mode" in archive.diff(v3)
    across = archive.diff("v0", v2)
    assert "+LIMIT = 42" in across and "+X = 1" in across
    assert "+++ v0/select/short.py" in archive.diff("v0")  # a root diffs against nothing


def test_add_from_directory_keeps_bytes_and_executable_bits(archive, tmp_path):
    work = archive.materialize("v0", tmp_path / "work")
    (work / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (work / "run.sh").chmod(0o755)
    (work / "blob.bin").write_bytes(b"\x00\xff\x10")
    vid = archive.add(parent="v0", files=work, meta={"proposer": "human"})
    out = archive.materialize(vid, tmp_path / "out")
    assert (out / "blob.bin").read_bytes() == b"\x00\xff\x10"
    assert (out / "run.sh").stat().st_mode & 0o111
    assert not (out / "select" / "__pycache__").exists()


def test_materialized_variant_is_a_plugins_dir_the_core_loads(tmp_path, run_selfloop):
    plugins = Path(__file__).resolve().parent.parent / "plugins"
    archive = Archive.init(tmp_path / "a", plugins)
    files = archive.files("v0")
    assert "__init__.py" in files
    target = next(p for p, text in sorted(files.items()) if "def register_task" in text)
    files[target] = files[target].replace('description="', 'description="EVOLVED ', 1)
    vid = archive.add(parent="v0", files=files, meta={})
    out = archive.materialize(vid, tmp_path / "variant")
    result = run_selfloop("plugins", "--plugins-dir", out, "--json")
    assert result.returncode == 0, result.stderr
    assert "EVOLVED" in result.stdout and str(out) in result.stdout


@pytest.mark.parametrize("kwargs, message", [
    ({"parent": "v7"}, "unknown variant 'v7'"),
    ({"parent": "nope"}, "unknown variant 'nope'"),
    ({"status": "maybe"}, "status must be one of"),
    ({"meta": {"scores": {"acc": "high"}}}, "score 'acc' must be a number"),
    ({"meta": {"when": object()}}, "not JSON-serialisable"),
    ({"files": {"../escape.py": "x"}}, "must be relative"),
    ({"files": {"/abs.py": "x"}}, "must be relative"),
    ({"files": {}}, "at least one file"),
    ({"files": {"a.py": 3}}, "must be str or bytes"),
    ({"files": {"a": "x", "a/b.py": "y"}}, "share the name"),
])
def test_bad_input_is_one_clear_error_and_adds_nothing(archive, kwargs, message):
    args = {"parent": "v0", "files": {"a.py": "x = 1\n"}, "meta": {}} | kwargs
    with pytest.raises(ArchiveError, match=message):
        archive.add(**args)
    assert [v.id for v in archive.list()] == ["v0"]
    assert git(archive, "tag").split() == ["v0"]


def test_init_refuses_an_existing_archive_or_a_non_empty_dir(archive, seed_dir, tmp_path):
    with pytest.raises(ArchiveError, match="already exists and is an archive"):
        Archive.init(archive.path, seed_dir)
    with pytest.raises(ArchiveError, match="not empty"):
        Archive.init(seed_dir, seed_dir)
    with pytest.raises(ArchiveError, match="no archive here"):
        Archive(tmp_path / "missing")
    with pytest.raises(ArchiveError, match="unknown variant"):
        archive.get("v99")
    with pytest.raises(ArchiveError, match="not an empty directory"):
        archive.materialize("v0", seed_dir)
    assert not (tmp_path / "never").exists()
    with pytest.raises(ArchiveError, match="not a directory"):
        Archive.init(tmp_path / "never", tmp_path / "no-such-plugins")
    assert not (tmp_path / "never").exists()  # nothing half-created


def test_meta_with_nan_and_paths_is_stored_as_plain_json(archive):
    vid = archive.add(parent="v0", files=archive.files("v0"),
                      meta={"loss": float("nan"), "where": Path("/tmp/x"), "scores": {"score": float("inf")}})
    meta = archive.get(vid).meta
    assert meta["loss"] is None and meta["where"] == "/tmp/x"
    assert archive.get(vid).scores["score"] is None


def test_add_many_writes_one_pack_that_git_reads(archive):
    ids = archive.add_many([
        {"parent": "v0", "files": edited(archive, "v0", 100 + i), "meta": {"score": i}, "status": "admitted" if i % 2 == 0 else "rejected"}
        for i in range(6)
    ])
    assert ids == [f"v{i}" for i in range(1, 7)]
    assert "LIMIT = 105" in git(archive, "show", "v6:select/short.py")
    assert [v.status for v in archive.list()][1:] == ["admitted", "rejected"] * 3
    assert archive.best().id == "v5"
    assert git(archive, "rev-parse", "main").strip() == archive.get("v5").commit  # last admitted
    packs = list((archive.path / "objects" / "pack").glob("pack-*.idx"))
    assert len(packs) == 1
    verified = subprocess.run(["git", "-C", str(archive.path), "verify-pack", str(packs[0])], check=False, capture_output=True)
    assert verified.returncode == 0, verified.stderr
    fsck = subprocess.run(["git", "-C", str(archive.path), "fsck", "--strict"], check=False, capture_output=True, text=True)
    assert fsck.returncode == 0 and "error" not in fsck.stderr
