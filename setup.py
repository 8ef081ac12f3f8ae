"""Maps the top-level code folders to `selfloop.<folder>` (package list computed, see pyproject)."""
from setuptools import find_packages, setup

ROOTS = ("core", "plugins", "archive", "sandbox", "testing")

setup(
    packages=[f"selfloop.{root}" for root in ROOTS]
    + [f"selfloop.{root}.{sub}" for root in ROOTS for sub in find_packages(root)],
    package_dir={f"selfloop.{root}": root for root in ROOTS},
)
