""".ci/system-packages, which CI and the fixtures run: a no-op, silent, once all is installed."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.deploy.support import REPO

SCRIPT = REPO / ".ci" / "system-packages"


def test_is_executable_for_ci_run() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert ".ci/system-packages" in (REPO / ".ci" / "run").read_text()


@pytest.mark.e2e
def test_run_again_with_everything_installed_changes_nothing_and_prints_nothing(system_tools: dict[str, str]) -> None:
    result = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
