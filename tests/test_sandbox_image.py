"""The offline image build: the pinned dependency closure, wheel compatibility, and a no-op rebuild."""

from __future__ import annotations

import json

import pytest
from selfloop.core.config import SandboxSettings
from selfloop.core.errors import SandboxError
from selfloop.sandbox.image import _check_wheel_platforms, runtime_requirements


def test_runtime_requirements_are_the_installed_closure():
    from importlib import metadata

    pins = runtime_requirements()
    assert "selfloop" not in pins
    for name in ("torch", "transformers", "pluggy", "click", "pydantic"):
        assert pins[name] == metadata.version(name)
    assert "pytest" not in pins  # a dev extra, not a runtime dependency
    # dependencies of dependencies are there too (pydantic needs pydantic-core)
    assert "pydantic-core" in pins


@pytest.mark.parametrize("filename", [
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    "hf_xet-1.8.0-cp38-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    "click-8.1.0-py3-none-any.whl",
])
def test_wheels_that_install_on_the_image_pass(tmp_path, filename):
    (tmp_path / filename).touch()
    name = filename.split("-")[0].replace("_", "-")
    _check_wheel_platforms(tmp_path, {name: "0"})


@pytest.mark.parametrize("filename", [
    "numpy-2.0.0-cp312-cp312-manylinux_2_28_x86_64.whl",  # another Python
    "numpy-2.0.0-cp311-cp311-manylinux_2_39_x86_64.whl",  # a newer glibc than bookworm's
    "numpy-2.0.0-cp311-cp311-macosx_14_0_arm64.whl",
])
def test_wheels_that_cannot_install_on_the_image_are_refused(tmp_path, filename):
    (tmp_path / filename).touch()
    with pytest.raises(SandboxError, match="does not install on the image"):
        _check_wheel_platforms(tmp_path, {"numpy": "2.0.0"})


@pytest.mark.docker
def test_build_of_an_up_to_date_image_is_a_no_op(run_selfloop):
    from selfloop.sandbox.docker_backend import DockerSandbox

    usable, why = DockerSandbox.availability(SandboxSettings())
    if not usable:
        pytest.skip(why)
    run_selfloop("sandbox", "build", timeout=300)  # brings it up to date if a plugin file changed
    done = run_selfloop("sandbox", "build", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    steps = {step["step"]: step for step in report["steps"]}
    assert steps["base image"]["note"] == "cached"
    assert steps["docker build"]["note"] == "up to date"
    assert report["size_bytes"] > report["base_size_bytes"] > 0
