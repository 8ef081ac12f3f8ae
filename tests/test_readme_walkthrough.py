"""README's "Your own model and task" works as written: its task file, its config and its commands,
run in order in an empty directory with the venv's bin first on PATH (as `activate` leaves it)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTION = (REPO / "README.md").read_text().split("## Your own model and task", 1)[1].split("\n## ", 1)[0]


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", SECTION, re.MULTILINE | re.DOTALL)


def commands() -> list[str]:
    """The section's indented command lines, in order (a server that never returns excepted)."""
    lines = [line[4:] for line in SECTION.splitlines() if re.match(r"^    (python|selfloop) ", line)]
    return [line for line in lines if " serve " not in line]


def test_the_section_has_what_the_walkthrough_needs():
    assert len(blocks("python")) == 1 and len(blocks("toml")) == 1
    assert [c.split()[0:2] for c in commands()] == [
        ["python", "-c"], ["python", "-m"], ["selfloop", "run"], ["selfloop", "evolve"]]


def test_walkthrough_runs_as_written(tmp_path):
    (tmp_path / "my_plugins").mkdir()
    (tmp_path / "my_plugins" / "sort_letters.py").write_text(blocks("python")[0])
    (tmp_path / "my_run.toml").write_text(blocks("toml")[0])
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "VIRTUAL_ENV": str(Path(bin_dir).parent)}
    for command in commands():
        done = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=1800)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    import json

    report = json.loads((tmp_path / "runs/mine/report.json").read_text())
    assert report["finished"] and set(report["rounds"][0]["accuracy_by_difficulty"]) == {"2", "3", "4", "5"}
    assert (tmp_path / "runs/my-archive").is_dir()
