"""The gateway as a real process, measured from /proc, and a fast raw HTTP/1.1 client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.faulty_upstream import FaultyUpstream
from testing.paths import REPO

_LISTENING = re.compile(r"listening on http://(\S+) \(admin on http://(\S+)\)")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
    path.write_text("\n".join(lines) + "\n")
    return path


class GatewayProcess:
    """``python -m gateway serve`` on free ports; its log goes to a file."""

    def __init__(self, workdir: Path, upstream_url: str, sections: dict[str, dict[str, Any]]) -> None:
        server = {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "drain_delay": 0.0, **sections.pop("server", {})}
        self.config = write_config(workdir / "gateway.toml", {"server": server, **sections})
        self.log_path = workdir / "gateway.log"
        self.upstream_url = upstream_url
        self.url = ""
        self.admin_url = ""
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config), "--upstream", upstream_url],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._wait_listening()
        # Listeners and the event loop's own pipe: what is open with no traffic at all.
        self.idle_sockets = self.sockets()

    def _wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log())
            if found:
                self.url, self.admin_url = f"http://{found[1]}", f"http://{found[2]}"
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the gateway did not start:\n{self.log()}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]

    def open_fds(self) -> list[str]:
        """What each open file descriptor of the process points to (socket:[...], pipe:[...], a path)."""
        fd_dir = Path(f"/proc/{self.pid}/fd")
        targets = []
        for fd in fd_dir.iterdir():
            try:
                targets.append(os.readlink(fd))
            except FileNotFoundError:
                pass  # closed while listing
        return targets

    def sockets(self) -> int:
        return sum(target.startswith("socket:") for target in self.open_fds())

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode


SpawnGateway = Callable[..., GatewayProcess]


@pytest.fixture
def spawn_gateway(tmp_path: Path) -> Iterator[SpawnGateway]:
    """Start gateway processes with some settings changed; all are stopped after the test."""
    started: list[GatewayProcess] = []

    def spawn(upstream_url: str, **sections: dict[str, Any]) -> GatewayProcess:
        workdir = tmp_path / f"gateway-{len(started)}"
        workdir.mkdir()
        process = GatewayProcess(workdir, upstream_url, sections)
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def faulty_upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as upstream:
        yield upstream


@pytest.fixture
def upstream(faulty_upstream: FaultyUpstream) -> FaultyUpstream:
    """The session's faulty upstream, listening, answering ok by default, with nothing recorded."""
    faulty_upstream.accept_if_refusing()
    faulty_upstream.default_fault = "ok"
    faulty_upstream.record_bodies = True
    faulty_upstream.drop_connections()
    faulty_upstream.clear()
    return faulty_upstream


# -- a raw HTTP/1.1 client: exact bytes out, one response in -------------------------------


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def build_request(method: str, target: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + (body or b"")


class ConnectionClosed(Exception):
    """The server closed the connection without (a whole) response."""


class RawConnection:
    """One keep-alive client connection; reconnects after the server closes it."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        self.connects += 1

    async def request(self, data: bytes, timeout: float = 30.0) -> Response:
        if self.writer is None or self.writer.is_closing():
            await self._connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(data)
        try:
            response = await asyncio.wait_for(read_response(self.reader, head_request=data.startswith(b"HEAD ")), timeout)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            raise ConnectionClosed(repr(exc)) from exc
        if response.headers.get("connection", "").lower() == "close":
            await self.close()
        return response

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass
            self.writer = None


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> Response:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 1"):
            break
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head_request or status in (204, 304):
        return Response(status, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append((await reader.readexactly(size + 2))[:-2])
        return Response(status, headers, b"".join(parts))
    if "content-length" in headers:
        return Response(status, headers, await reader.readexactly(int(headers["content-length"])))
    return Response(status, headers, await reader.read())


async def request_once(url: str, data: bytes, timeout: float = 30.0) -> Response:
    connection = RawConnection(url)
    try:
        return await connection.request(data, timeout)
    finally:
        await connection.close()


async def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None) -> Response:
    """One request on a fresh connection, from a path-bearing URL."""
    base, _, path = url.removeprefix("http://").partition("/")
    return await request_once(f"http://{base}", build_request(method, "/" + path, headers, body))


def is_ims_error(response: Response, status: int | None = None) -> bool:
    """An error answered by the gateway itself, in the IMS shape, with no details leaked."""
    if status is not None and response.status != status:
        return False
    try:
        document = response.json()
    except ValueError:
        return False
    error = document.get("error") if isinstance(document, dict) else None
    return (
        isinstance(error, dict)
        and str(error.get("code", "")).startswith("IMSGW.")
        and isinstance(error.get("message"), str)
        and response.headers.get("content-type", "").startswith("application/json")
    )


async def settled(read: Callable[[], int], baseline: int, timeout: float = 15.0) -> int:
    """The value of ``read`` once it is back to ``baseline`` (or its last value after ``timeout``)."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != baseline and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        value = read()
    return value


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` in a /metrics page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(key) == wanted for key, wanted in (labels or {}).items()):
            total += float(value)
    return total
