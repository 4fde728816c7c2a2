"""The license: LICENSE is the Apache-2.0 text pyproject.toml names, the build backend is one
that understands the license expression, and the wheel the image's build stage makes carries it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deploy.support import DEPLOY, REPO
from tests.deploy.test_dockerfile import instructions

LICENSE = REPO / "LICENSE"
# apache.org's https://www.apache.org/licenses/LICENSE-2.0.txt, byte for byte.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
# The first setuptools that reads PEP 639's `license = "<SPDX expression>"` and `license-files`.
SETUPTOOLS_WITH_PEP_639 = "77"


def pyproject() -> dict:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def test_license_is_the_apache_2_0_text_unchanged() -> None:
    text = LICENSE.read_bytes()
    assert text.split(b"\n")[1:3] == [b" " * 33 + b"Apache License", b" " * 27 + b"Version 2.0, January 2004"]
    assert hashlib.sha256(text).hexdigest() == APACHE_2_0_SHA256, "LICENSE differs from apache.org's LICENSE-2.0.txt"


def test_pyproject_declares_that_license_and_its_file() -> None:
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == [LICENSE.name]


def test_the_build_backend_understands_the_license_expression() -> None:
    [requirement] = [Requirement(text) for text in pyproject()["build-system"]["requires"]]
    assert requirement.name == "setuptools"
    older = f"{int(SETUPTOOLS_WITH_PEP_639) - 1}.99"
    assert not requirement.specifier.contains(older), f"setuptools {older} rejects license = \"Apache-2.0\""
    assert requirement.specifier.contains(f"{SETUPTOOLS_WITH_PEP_639}.0.0")


def build_stage_copies() -> list[tuple[str, str]]:
    """(source, destination) of what deploy/Dockerfile's build stage copies before `pip wheel`."""
    parsed = instructions((DEPLOY / "Dockerfile").read_text())
    stages = [index for index, instruction in enumerate(parsed) if instruction.keyword == "FROM"]
    copies = []
    for instruction in parsed[stages[0] : stages[1]]:
        if instruction.keyword == "COPY":
            *sources, destination = instruction.arguments.split()
            copies += [(name, f"{destination}{name}" if destination.endswith("/") else destination) for name in sources]
    return copies


@pytest.mark.e2e
@pytest.mark.slow
def test_the_image_build_stage_makes_a_wheel_that_carries_the_license(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name, destination in build_stage_copies():
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / destination)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "wheels"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "wheels").glob("ims_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode().partition("\n\n")[0].splitlines()
        assert "License-Expression: Apache-2.0" in headers
        assert "License-File: LICENSE" in headers
        assert archive.read(metadata.replace("METADATA", "licenses/LICENSE")) == LICENSE.read_bytes()
