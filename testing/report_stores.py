"""The migration report's stores for tests and benchmarks: a real redis-server, and the
environment that points a gateway process at each store.

    with RedisServer(tmp_dir) as redis:                      # redis-server on a free loopback port
        env = store_environment("redis", tmp_dir, redis.url)  # or "memory", "sqlite"
        # start `python -m gateway serve ...` with env added to its environment

Debian's redis-server is installed by .ci/system-packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

REDIS_SERVER = "redis-server"
STORES = ("memory", "sqlite", "redis")


def store_environment(store: str, directory: Path, redis_url: str = "") -> dict[str, str]:
    """IMS_GATEWAY_* variables for a gateway keeping its report in ``store`` (files under ``directory``)."""
    if store == "memory":
        return {"IMS_GATEWAY_REPORT_STORE": "memory"}
    if store == "sqlite":
        return {"IMS_GATEWAY_REPORT_STORE": f"sqlite://{directory.absolute() / 'report.sqlite'}"}
    if store == "redis" and redis_url:
        return {"IMS_GATEWAY_REPORT_STORE": redis_url}
    raise ValueError(f"{store!r}: one of {', '.join(STORES)} (redis needs a URL)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """redis-server on 127.0.0.1 and a free port, its files in ``directory``; saved on a clean stop."""

    def __init__(self, directory: Path, password: str = "", executable: str | None = None) -> None:
        self.directory = directory
        self.password = password
        self.executable = executable or shutil.which(REDIS_SERVER) or REDIS_SERVER
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    @property
    def url(self) -> str:
        userinfo = f":{self.password}@" if self.password else ""
        return f"redis://{userinfo}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            self.executable, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
            # A save point: a clean stop (SIGTERM) writes the data, a restart reads it back.
            "--save", "3600 1", "--appendonly", "no", "--logfile", str(self.log), "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start ({self.process.poll()}):\n{self.output()}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        """Whether the server answers PING (any answer: an auth error is an answer)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel and never answered (a hung store)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        self.resume()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()
