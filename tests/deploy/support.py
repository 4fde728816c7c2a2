"""Helpers for the deploy suites: the repository's paths, free ports, and real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from testing.paths import REPO

DEPLOY = REPO / "deploy"
SHIPPED_CONFIG = REPO / "config" / "gateway.toml"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without IMS_GATEWAY_* settings, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMS_GATEWAY_")}
    env.update(extra)
    return env


def wait_until(probe: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll ``probe`` until it returns something other than None; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """(status, body), or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()
    except OSError:
        return None


class Service:
    """A real process started for a test; its output goes to a log file shown on failure."""

    def __init__(self, argv: Sequence[str | os.PathLike[str]], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = [str(arg) for arg in argv]
        self.log = log
        self._log_handle = open(log, "wb")  # noqa: SIM115 (closed in stop(), after the process)
        self.process = subprocess.Popen(
            self.argv, stdout=self._log_handle, stderr=subprocess.STDOUT, env=env or clean_env(), cwd=REPO
        )

    def output(self) -> str:
        if not self._log_handle.closed:
            self._log_handle.flush()
        return self.log.read_text(errors="replace")

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.argv[0]} exited with {self.process.returncode}:\n{self.output()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self._log_handle.close()
        return status


def gateway_argv(listen: str, admin_listen: str, *extra: str) -> list[str]:
    """The gateway as an operator starts it; with no upstream it serves its embedded emulator."""
    return [sys.executable, "-m", "gateway", "serve", "--listen", listen, "--admin-listen", admin_listen, *extra]
