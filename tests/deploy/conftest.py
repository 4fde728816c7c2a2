"""Fixtures of the deploy suites: Debian's prometheus/promtool/nginx, installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.deploy.support import REPO

# tool -> the Debian package that ships it
TOOLS = {"prometheus": "prometheus", "promtool": "prometheus", "nginx": "nginx", "redis-server": "redis-server"}
# nginx lives in /usr/sbin, which a non-login PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
INSTALL_TIMEOUT = 900


def _missing() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool, path=SEARCH_PATH) is None]


@pytest.fixture(scope="session")
def system_tools() -> dict[str, str]:
    """Paths of the real tools, installed with .ci/system-packages (the script CI runs) when missing."""
    if _missing():
        result = subprocess.run(
            [REPO / ".ci" / "system-packages"], capture_output=True, text=True, timeout=INSTALL_TIMEOUT
        )
        if result.returncode != 0:
            pytest.fail(f".ci/system-packages failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    if missing := _missing():
        pytest.fail(f"still missing after .ci/system-packages: {', '.join(missing)}")
    return {tool: str(shutil.which(tool, path=SEARCH_PATH)) for tool in TOOLS}
