"""The distribution installs under the one name `selfloop` and its CLI starts."""

import json
import subprocess
import sys

import selfloop.core


def test_top_level_folders_are_not_importable_on_their_own(tmp_path):
    for name in ("core", "plugins", "archive", "sandbox"):
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path,
                              capture_output=True, text=True)
        assert proc.returncode != 0, f"`import {name}` should fail outside the checkout"
        assert "ModuleNotFoundError" in proc.stderr


def test_selfloop_packages_import(tmp_path):
    code = "import selfloop.core, selfloop.plugins, selfloop.archive, selfloop.sandbox; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr
    assert selfloop.core.__file__


def test_version(run_selfloop):
    from importlib.metadata import version

    proc = run_selfloop("--version")
    assert proc.returncode == 0
    assert version("selfloop") in proc.stdout


def test_plugins_json_lists_builtins(run_selfloop):
    proc = run_selfloop("plugins", "--json", env={"SELFLOOP_LOAD_PLUGINS": ""})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert all({"kind", "name", "plugin", "source"} <= set(row) for row in rows)
    pairs = {(r["kind"], r["name"]) for r in rows}
    assert ("task", "reversed_addition") in pairs
    assert ("rewarder", "ground_truth") in pairs
    assert {r["source"] for r in rows} == {"builtin"}


def test_help_lists_only_commands_that_exist(run_selfloop):
    proc = run_selfloop("-h")
    assert proc.returncode == 0
    assert "plugins" in proc.stdout and "config" in proc.stdout


def test_wheel_installs_everything_under_selfloop(tmp_path):
    """A normal (non-editable) install: every file of the wheel lives under `selfloop/`."""
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(repo)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("selfloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert all(n.startswith(("selfloop/", "selfloop-")) for n in names), names
    for package in ("core", "plugins", "archive", "sandbox"):
        assert f"selfloop/{package}/__init__.py" in names
    assert "selfloop/core/default.toml" in names
