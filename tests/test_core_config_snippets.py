"""Every run-config snippet a user is shown (README.md's TOML blocks, examples/configs/) loads and
passes the same check `selfloop config show`, `run` and `evolve` make: names and option keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from selfloop.core.config import load_config
from selfloop.core.registry import load_registry

REPO = Path(__file__).resolve().parent.parent
# The walkthrough's config names its own task plugin: test_readme_walkthrough runs it with that.
README_TOML = re.findall(r"^```toml\n(.*?)^```", (REPO / "README.md").read_text().split("## Your own model and task")[0],
                         re.MULTILINE | re.DOTALL)
EXAMPLES = sorted((REPO / "examples").rglob("*.toml"))
CONFIGS = [p for p in EXAMPLES if p.name != "pyproject.toml"]


@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)


def test_there_are_snippets_to_check():
    assert README_TOML and len(CONFIGS) >= 4


@pytest.mark.parametrize("index", range(len(README_TOML)))
def test_readme_toml_block_is_a_valid_config(index, tmp_path, registry):
    path = tmp_path / f"readme-{index}.toml"
    path.write_text(README_TOML[index])
    load_config(path).check_names(registry)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_example_config_is_valid(path, registry):
    load_config(path).check_names(registry)


def test_readme_plugin_example_loads_and_takes_its_options(tmp_path):
    python = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), re.MULTILINE | re.DOTALL)[0]
    (tmp_path / "plurality.py").write_text(python)
    registry = load_registry([tmp_path], entry_points=False)
    config = tmp_path / "run.toml"
    config.write_text('[refiner]\nname = "plurality"\noptions = { k = 3 }\n')
    load_config(config).check_names(registry)
    assert registry.create("refiner", "plurality", {"k": 3}).k == 3


def test_plugins_columns_are_the_ones_the_readme_names(run_selfloop):
    header = run_selfloop("plugins").stdout.splitlines()[0].split()
    assert header == ["kind", "name", "source", "plugin", "description"]
    assert "kind, name, source (builtin/entrypoint/directory), plugin, description" in (REPO / "README.md").read_text()
