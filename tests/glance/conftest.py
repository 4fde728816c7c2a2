"""Session fixtures: the Glance virtualenv, one running Glance API and ims-gateway in
front of it.

Composable on purpose: ``glance`` is one upstream; ``gateway`` is placed in front of
``glance.url``, and either URL can be handed to the same ImageApi and client driver.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.glance import GlanceEnv, GlanceServer, answers, ensure_env, run_glance
from testing.paths import REPO

from .cases import BASE_IMAGE
from .imageapi import ImageApi

GATEWAY_START_TIMEOUT_S = 30
GATEWAY_STOP_TIMEOUT_S = 30


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


@dataclass(frozen=True)
class GatewayProcess:
    """``python -m gateway serve`` in front of a Glance; ``url`` has no trailing slash."""

    url: str
    admin_url: str
    pid: int
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _gateway_environ() -> dict[str, str]:
    # IMS_GATEWAY_* variables are gateway settings: the gateway under test runs on its
    # defaults, but for a quick stop.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("IMS_GATEWAY_")}
    environ["IMS_GATEWAY_SERVER_DRAIN_DELAY"] = "0"
    return environ


def _wait_healthy(process: subprocess.Popen[bytes], admin_url: str, log: Path) -> None:
    deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode} while starting:\n{log.read_text()}")
        if answers(admin_url, "/healthz"):
            return
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise RuntimeError(f"the gateway did not answer /healthz in {GATEWAY_START_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def gateway(glance: GlanceServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """ims-gateway, started as users start it, in front of the session's Glance; it must
    stop cleanly (exit 0) on SIGTERM."""
    listen, admin = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    argv = [sys.executable, "-m", "gateway", "serve", "--upstream", glance.url, "--listen", listen, "--admin-listen", admin]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            argv, cwd=REPO, env=_gateway_environ(), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_healthy(process, f"http://{admin}", log)
        yield GatewayProcess(f"http://{listen}", f"http://{admin}", process.pid, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=GATEWAY_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text()[-4000:]


@pytest.fixture(scope="session")
def gateway_api(gateway: GatewayProcess) -> ImageApi:
    return ImageApi(gateway.url)
