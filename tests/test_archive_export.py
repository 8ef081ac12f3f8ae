"""An exported variant is a real, pip-installable plugin distribution with `selfloop` entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from selfloop.archive import Archive
from selfloop.archive.export import export_package
from selfloop.core.errors import ArchiveError

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


@pytest.fixture
def evolved(tmp_path) -> Archive:
    archive = Archive.init(tmp_path / "A", PLUGINS)
    files = archive.files("v0")
    target = "tasks/reversed_addition.py"
    files[target] = files[target].replace('description="', 'description="EVOLVED ', 1)
    archive.add(parent="v0", files=files, meta={"score": 0.9, "proposer": "test"})
    return archive


def test_export_writes_a_package_with_one_entry_point_per_plugin_module(evolved, tmp_path):
    out = export_package(evolved, "v1", tmp_path / "pkg")
    project = tomllib.loads((out / "pyproject.toml").read_text())
    assert project["project"]["name"] == "selfloop-variant-v1"
    entry_points = project["project"]["entry-points"]["selfloop"]
    modules_with_hooks = sorted(
        "selfloop_variant_v1." + path[:-3].replace("/", ".")
        for path, text in evolved.files("v1").items() if path.endswith(".py") and "\ndef register_" in text)
    assert sorted(entry_points.values()) == modules_with_hooks
    record = json.loads((out / "selfloop_variant_v1" / "variant.json").read_text())
    assert record["id"] == "v1" and record["scores"] == {"score": 0.9}
    with pytest.raises(ArchiveError, match="not an empty directory"):
        export_package(evolved, "v1", out)


@pytest.mark.slow
def test_pip_installed_export_replaces_the_builtin_plugins(evolved, tmp_path, run_selfloop):
    out = export_package(evolved, "v1", tmp_path / "pkg")
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(out)], check=False, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": str(target), "SELFLOOP_LOAD_PLUGINS": "selfloop-variant-v1"}
    result = run_selfloop("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    components = json.loads(result.stdout)
    task = next(c for c in components if c["kind"] == "task" and "EVOLVED" in c["description"])
    assert task["source"] == "entrypoint" and task["plugin"].startswith("selfloop_variant_v1.")
    assert not any(c["source"] == "builtin" for c in components)  # the variant replaced them


@pytest.mark.slow
def test_export_installs_in_a_fresh_venv_only_beside_the_selfloop_it_was_made_with(evolved, tmp_path):
    import importlib.metadata
    import site
    import venv

    version = importlib.metadata.version("selfloop")
    out = export_package(evolved, "v1", tmp_path / "pkg")
    assert tomllib.loads((out / "pyproject.toml").read_text())["project"]["dependencies"] == [
        f"selfloop=={version}"]
    wheels = tmp_path / "wheels"  # built here, where setuptools is: the fresh venv has nothing
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), str(out)], check=False, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("selfloop_variant_v1-*.whl"))
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index", str(wheel)]

    # alone, it asks for its selfloop (before, it installed and then failed to import)
    alone = subprocess.run(install, check=False, capture_output=True, text=True, timeout=300)
    assert alone.returncode != 0 and f"selfloop=={version}" in alone.stderr, alone.stderr

    # beside selfloop (this environment's, seen from the fresh venv), it installs and loads
    fresh_site = next((fresh / "lib").glob("python3*/site-packages"))
    (fresh_site / "outer.pth").write_text(f"import site; site.addsitedir({site.getsitepackages()[0]!r})\n")
    beside = subprocess.run(install, check=False, capture_output=True, text=True, timeout=300)
    assert beside.returncode == 0, beside.stderr
    assert list(fresh_site.glob("selfloop_variant_v1-*.dist-info"))
    listed = subprocess.run(
        [str(python), "-c", "from selfloop.core.cli import main; main(['plugins', '--json'])"],
        check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "SELFLOOP_LOAD_PLUGINS": "selfloop-variant-v1"})
    assert listed.returncode == 0, listed.stderr
    task = next(c for c in json.loads(listed.stdout) if c["kind"] == "task" and c["name"] == "reversed_addition")
    assert "EVOLVED" in task["description"] and task["location"].startswith("selfloop-variant-v1")
