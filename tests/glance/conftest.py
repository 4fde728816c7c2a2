"""Session fixtures: the Glance virtualenv and one running Glance API.

Composable on purpose: ``glance`` is one upstream; a gateway fixture placed in front of
``glance.url`` can be handed to the same ImageApi and client driver.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import GlanceEnv, GlanceServer, ensure_env, run_glance
from .imageapi import ImageApi


@pytest.fixture(scope="session")
def glance_env(pytestconfig: pytest.Config) -> GlanceEnv:
    env = ensure_env()
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        how = "cached" if env.install_seconds is None else f"installed in {env.install_seconds:.0f} s"
        versions = ", ".join(f"{k} {v}" for k, v in env.reported_versions.items())
        reporter.write_line(f"glance venv {env.root} ({how}): {versions}")
    return env


@pytest.fixture(scope="session")
def glance(glance_env: GlanceEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with run_glance(glance_env, tmp_path_factory.mktemp("glance")) as server:
        yield server


@pytest.fixture(scope="session")
def glance_api(glance: GlanceServer) -> ImageApi:
    return ImageApi(glance.url)
