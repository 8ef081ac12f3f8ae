"""Shared fixtures. Area-specific fixtures live in the area's own test files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def selfloop_executable() -> str:
    """The `selfloop` console script of the environment running the tests."""
    beside = Path(sys.executable).parent / "selfloop"
    return str(beside) if beside.exists() else (shutil.which("selfloop") or "selfloop")


@pytest.fixture
def run_selfloop(tmp_path):
    """Run the real `selfloop` command in a subprocess (outside the checkout) and return it."""

    def run(*args, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
        full_env = {**os.environ, **(env or {})}
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
        return subprocess.run(
            [selfloop_executable(), *map(str, args)], capture_output=True, text=True,
            env=full_env, cwd=cwd or tmp_path, timeout=timeout,
        )

    return run
