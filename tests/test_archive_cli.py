"""`selfloop archive ...` through the real console script, on the project's own plugins/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def git(path: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(path), *args], check=False, capture_output=True, text=True)


@pytest.fixture
def edited_plugins(tmp_path) -> Path:
    copy = tmp_path / "mine"
    shutil.copytree(PLUGINS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = next(p for p in sorted(copy.rglob("*.py")) if "def register_task" in p.read_text())
    target.write_text(target.read_text() + "\n# a person's own fix\n")
    return copy


def test_init_two_adds_list_json_fsck_and_log(run_selfloop, tmp_path, edited_plugins):
    archive = tmp_path / "A"
    result = run_selfloop("archive", "init", "--archive", archive, "--from", PLUGINS)
    assert result.returncode == 0, result.stderr
    result = run_selfloop("archive", "add", "--archive", archive, "--parent", "v0", "--from", edited_plugins,
                          "--scores", '{"score": 0.5, "held_out": 0.4}', "--summary", "my fix")
    assert result.returncode == 0, result.stderr
    assert "added v1" in result.stdout
    result = run_selfloop("archive", "add", "--archive", archive, "--parent", "v1", "--from", edited_plugins,
                          "--scores", '{"score": 0.1}', "--rejected", "--json",
                          "--meta", '{"operator": "crossover", "changed_kinds": ["refiner", "selector"]}')
    assert json.loads(result.stdout)["id"] == "v2"

    listed = json.loads(run_selfloop("archive", "list", "--archive", archive, "--json").stdout)
    assert [(v["id"], v["parent"], v["status"]) for v in listed] == [
        ("v0", None, "admitted"), ("v1", "v0", "admitted"), ("v2", "v1", "rejected")]
    assert listed[1]["scores"] == {"score": 0.5, "held_out": 0.4}
    # which operator made each variant and which kinds its edit changed (null where nobody said)
    assert [(v["proposer"], v["operator"], v["changed_kinds"]) for v in listed] == [
        ("seed", None, None), ("human", None, None), ("human", "crossover", ["refiner", "selector"])]
    assert [v["judged_by"] for v in listed] == [None, None, None]  # older records: nobody said
    # no gains here, so clades go by score: the unscored v0 and the rejected v2 are failures, and
    # v1, whose parent has no score, has no outcome of its own
    assert [v["clade"] for v in listed] == [
        {"successes": 0.0, "failures": 2.0, "members": 3, "rate": 0.25},
        {"successes": 0.0, "failures": 1.0, "members": 2, "rate": 0.3333},
        {"successes": 0.0, "failures": 1.0, "members": 1, "rate": 0.3333}]

    fsck = git(archive, "fsck", "--strict")
    assert fsck.returncode == 0 and "error" not in fsck.stderr
    log = git(archive, "log", "--format=%s").stdout.splitlines()
    assert log == ["v1: admitted from v0 by human", "v0: admitted (root) by seed"]
    assert git(archive, "log", "--format=%s", "v2").stdout.splitlines()[0] == "v2: rejected from v1 by human"

    best = json.loads(run_selfloop("archive", "list", "--archive", archive, "--json", "--sort", "score",
                                   "--status", "admitted").stdout)
    assert [v["id"] for v in best] == ["v1", "v0"]

    table = run_selfloop("archive", "list", "--archive", archive).stdout
    assert table.splitlines()[0].split() == ["id", "parent", "status", "proposer", "score", "held_out", "created", "(UTC)"]
    assert table.splitlines()[1].split()[:6] == ["v0", "-", "admitted", "seed", "-", "-"]  # no scores: dashes
    assert table.splitlines()[3].split()[:6] == ["v2", "v1", "rejected", "human", "0.1", "-"]

    shown = json.loads(run_selfloop("archive", "show", "v1", "--archive", archive, "--json").stdout)
    assert shown["meta"]["summary"] == "my fix" and shown["children"] == ["v2"] and shown["lineage"] == ["v0", "v1"]
    assert "lineage:  v0 -> v1" in run_selfloop("archive", "show", "v1", "--archive", archive).stdout

    diff = run_selfloop("archive", "diff", "v1", "--archive", archive).stdout
    assert "+# a person's own fix" in diff and diff.startswith("diff --git v0/")
    assert run_selfloop("archive", "diff", "v0", "v2", "--archive", archive).stdout == diff.replace("v1/", "v2/")

    tree = run_selfloop("archive", "tree", "--archive", archive).stdout.splitlines()
    assert tree[0].startswith("v0") and tree[1].startswith("└── v1") and "x rejected" in tree[2]
    tree_json = json.loads(run_selfloop("archive", "tree", "--archive", archive, "--json").stdout)
    assert tree_json[0]["children"] == ["v1"]

    assert run_selfloop("archive", "gc", "--archive", archive).returncode == 0
    assert not list((archive / "objects").glob("??/*"))  # everything packed
    assert git(archive, "fsck", "--strict").returncode == 0
    assert json.loads(run_selfloop("archive", "list", "--archive", archive, "--json").stdout) == listed


def evolved_archive(path: Path):
    """A small archive as evolve writes one: operators, changed kinds, what judged each, gains.

        v0 seed ── v1 mutation +0.1 ── v3 pipeline (probe) +0.05 ── v6 (old record) rejected
           │          └─ v4 llm edit of the proposer (meta, inherits v1's scores) ── v5 +0.3
           └─ v2 crossover rejected

    By gain: v1 and v5 rise above their parents (successes); v3 (below v1), v4 (equal to v1) and
    the rejected v2 and v6 are failures. v3's score (its probe's, 0.9) beats v1's 0.6: by score it
    would be a success, so the numbers below say which metric was used."""
    from selfloop.archive import Archive

    def edit(kind, operator, kinds, judged, scores, **more):
        return {"proposer": kind, "operator": operator, "changed_kinds": kinds, "judged_by": judged,
                "scores": scores, **more}

    archive = Archive.init(path, PLUGINS, meta=edit("seed", "seed", [], "answers", {"score": 0.5, "gain": 0.0}))
    tree = {"plugin.py": "X = 1\n"}
    archive.add(parent="v0", files=tree, meta=edit("mutation", "mutation", ["refiner"], "answers",
                                                   {"score": 0.6, "gain": 0.1}))
    archive.add(parent="v0", files=tree, status="rejected",
                meta=edit("crossover", "crossover", ["selector"], "answers", {"score": 0.2}))
    archive.add(parent="v1", files=tree, meta=edit("pipeline", "pipeline", ["pipeline"], "probe", {
        "score": 0.9, "probe": 0.9, "probe_short": 0.7, "gain": 0.05,
        "probe_by_difficulty": {"1": 0.95, "2": 0.85}, "probe_short_by_difficulty": {"1": 0.8, "2": 0.6}}))
    archive.add(parent="v1", files=tree, meta=edit("llm_edit", "llm", ["proposer"], "meta", {"score": 0.6, "gain": 0.1},
                                                   stages={"meta": {"ok": True, "inherited_from": "v1"}}))
    archive.add(parent="v4", files=tree, meta=edit("mutation", "mutation", ["optimizer"], "probe",
                                                   {"score": 0.7, "probe": 0.7, "gain": 0.3}))
    archive.add(parent="v3", files=tree, status="rejected", meta={"proposer": "mutation", "scores": {"score": 0.1}})
    return archive


def test_list_json_shows_how_each_variant_was_judged_and_its_clade(run_selfloop, tmp_path):
    evolved_archive(tmp_path / "A").close()
    listed = json.loads(run_selfloop("archive", "list", "--archive", tmp_path / "A", "--json").stdout)
    assert [(v["id"], v["operator"], v["changed_kinds"], v["judged_by"]) for v in listed] == [
        ("v0", "seed", [], "answers"), ("v1", "mutation", ["refiner"], "answers"),
        ("v2", "crossover", ["selector"], "answers"), ("v3", "pipeline", ["pipeline"], "probe"),
        ("v4", "llm", ["proposer"], "meta"), ("v5", "mutation", ["optimizer"], "probe"), ("v6", None, None, None)]
    clade = {v["id"]: (v["clade"]["successes"], v["clade"]["failures"], v["clade"]["members"], v["clade"]["rate"])
             for v in listed}
    assert clade == {  # rate = (successes + 1) / (successes + failures + 2)
        "v0": (2, 4, 7, 0.375),   # its own outcome (a seed: none) and every descendant's
        "v1": (2, 3, 5, 0.4286),  # itself, v3 + v6, v4 + v5
        "v2": (0, 1, 1, 0.3333),
        "v3": (0, 2, 2, 0.25),    # by gain 0.05 < v1's 0.1: a failure (by score it would succeed)
        "v4": (1, 1, 2, 0.5),     # the meta edit: its own inherited scores are no rise; v5's is
        "v5": (1, 0, 1, 0.6667),
        "v6": (0, 1, 1, 0.3333)}
    # a filtered, sorted, limited listing keeps the whole archive's clades (rejected members too)
    best = json.loads(run_selfloop("archive", "list", "--archive", tmp_path / "A", "--json", "--status", "admitted",
                                   "--sort", "gain", "--limit", "2").stdout)
    assert [(v["id"], v["clade"]["members"], v["clade"]["failures"]) for v in best] == [("v5", 1, 0), ("v1", 5, 3)]


def test_archive_path_from_environment_and_materialize(run_selfloop, tmp_path, edited_plugins):
    env = {"SELFLOOP_ARCHIVE": str(tmp_path / "env-archive")}
    assert run_selfloop("archive", "init", "--from", PLUGINS, env=env).returncode == 0
    assert run_selfloop("archive", "add", "--parent", "v0", "--from", edited_plugins, env=env).returncode == 0
    result = run_selfloop("archive", "materialize", "v1", tmp_path / "out", env=env)
    assert result.returncode == 0, result.stderr
    assert "# a person's own fix" in "".join(p.read_text() for p in (tmp_path / "out").rglob("*.py"))
    loaded = run_selfloop("plugins", "--plugins-dir", tmp_path / "out", "--json")
    assert loaded.returncode == 0 and str(tmp_path / "out") in loaded.stdout


def test_default_archive_is_the_run_configs(run_selfloop, tmp_path):
    result = run_selfloop("archive", "init", "--from", PLUGINS, env={"SELFLOOP_ARCHIVE": None}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "archive" / "HEAD").exists()


@pytest.mark.parametrize("args, message", [
    (["list", "--archive", "{tmp}/none"], "no archive here"),
    (["show", "v9", "--archive", "{A}"], "unknown variant 'v9'"),
    (["add", "--parent", "v0", "--from", "{plugins}", "--scores", "{{oops", "--archive", "{A}"], "--scores: not valid JSON"),
    (["add", "--parent", "v0", "--from", "{plugins}", "--scores", '{{"s": "x"}}', "--archive", "{A}"], "must be a number"),
    (["add", "--parent", "v5", "--from", "{plugins}", "--archive", "{A}"], "unknown variant 'v5'"),
    (["init", "--from", "{plugins}", "--archive", "{A}"], "already exists"),
    (["export", "v0", "{plugins}", "--archive", "{A}"], "not an empty directory"),
])
def test_user_errors_are_one_line(run_selfloop, tmp_path, args, message):
    archive = tmp_path / "A"
    assert run_selfloop("archive", "init", "--archive", archive, "--from", PLUGINS).returncode == 0
    args = [a.format(tmp=tmp_path, A=archive, plugins=PLUGINS) for a in args]
    result = run_selfloop("archive", *args)
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    listed = json.loads(run_selfloop("archive", "list", "--archive", archive, "--json").stdout)
    assert [v["id"] for v in listed] == ["v0"]  # nothing lost, nothing half-added


def test_help_lists_every_verb(run_selfloop):
    out = run_selfloop("archive", "-h").stdout
    for verb in ("init", "add", "list", "show", "diff", "tree", "export", "materialize", "serve", "reindex", "gc"):
        assert verb in out


def test_show_keeps_long_score_names_apart_from_their_values(run_selfloop, tmp_path):
    archive = tmp_path / "A"
    scores = {"score": 0.5, "held_out.select_precision": 0.988, "held_out.select_kept_correct": 82}
    assert run_selfloop("archive", "init", "--archive", archive, "--from", PLUGINS,
                        "--scores", json.dumps(scores)).returncode == 0
    shown = run_selfloop("archive", "show", "v0", "--archive", archive).stdout.splitlines()
    rows = [line.split() for line in shown[shown.index("scores:") + 1:][:3]]
    assert rows == [["score", "0.5"], ["held_out.select_precision", "0.988"], ["held_out.select_kept_correct", "82"]]
    columns = {line.index(line.split()[1]) for line in shown[shown.index("scores:") + 1:][:3]}
    assert len(columns) == 1  # the values line up
