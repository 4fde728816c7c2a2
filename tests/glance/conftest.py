"""Session fixtures: the Glance virtualenv and one running Glance API.

Composable on purpose: ``glance`` is one upstream; a gateway fixture placed in front of
``glance.url`` can be handed to the same ImageApi and client driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .cases import BASE_IMAGE
from .harness import GlanceEnv, GlanceServer, ensure_env, run_glance
from .imageapi import ImageApi


ENV_KEY = pytest.StashKey[GlanceEnv]()


@pytest.fixture(scope="session")
def glance_env(pytestconfig: pytest.Config) -> GlanceEnv:
    env = ensure_env()
    pytestconfig.stash[ENV_KEY] = env
    return env


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Say which Glance and clients the run used, and whether it had to install them."""
    env = config.stash.get(ENV_KEY, None)
    if env is None:
        return
    how = "cached" if env.install_seconds is None else f"installed in {env.install_seconds:.0f} s"
    versions = ", ".join(f"{name} {version}" for name, version in env.reported_versions.items())
    terminalreporter.write_line(f"glance venv {env.root} ({how}): {versions}")


@pytest.fixture(scope="session")
def glance(glance_env: GlanceEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GlanceServer]:
    with run_glance(glance_env, tmp_path_factory.mktemp("glance")) as server:
        yield server


@pytest.fixture(scope="session")
def glance_api(glance: GlanceServer) -> ImageApi:
    return ImageApi(glance.url)


@pytest.fixture
def base_images(glance_api: ImageApi) -> Iterator[Callable[[ImageApi], dict[str, Any]]]:
    """Create images from BASE_IMAGE through any ImageApi (Glance or a gateway in
    front of it); all are deleted from Glance afterwards."""
    created: list[str] = []

    def create(api: ImageApi) -> dict[str, Any]:
        image = api.create_image(BASE_IMAGE)
        created.append(image["id"])
        return image

    yield create
    for image_id in created:
        glance_api.delete_image(image_id)
