"""Shared fixtures: a recording stand-in upstream, a gateway factory, raw HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner
from multidict import CIMultiDict

from gateway import config
from gateway.config import Settings
from gateway.edge.server import GatewayRunner
from gateway.service.app import build_admin_app, build_app, runner_options
from testing.paths import REPO
from testing.report_stores import REDIS_SERVER, RedisServer

# Hypothesis: random locally (new examples every run, failures kept in .hypothesis/), the same
# examples every run in CI (.ci/run sets CI). Derandomized, each test's seed is a hash of the
# test function itself: it changes only when the test, Hypothesis or Python does. Settings a
# test gives itself (max_examples, deadline=None) still win over the profile's.
IN_CI = bool(os.environ.get("CI"))
hypothesis.settings.register_profile(
    "ims-ci", derandomize=True, database=None, print_blob=True, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.register_profile("ims-local", derandomize=False)
hypothesis.settings.load_profile("ims-ci" if IN_CI else "ims-local")


def pytest_report_header(config: pytest.Config) -> str:
    """Say how Hypothesis chose its examples, so a CI failure can be replayed exactly."""
    current = hypothesis.settings.default
    if current.derandomize:
        return (
            f"hypothesis: derandomized (CI={os.environ['CI']!r}), profile ims-ci: fixed seed per test = hash of the test function "
            f"under hypothesis {hypothesis.__version__}, Python {platform.python_version()}; replay with CI=1"
        )
    return "hypothesis: random seeds (profile ims-local; set CI=1 for the fixed seeds CI uses)"


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """In CI, each Hypothesis test's fixed seed: ``@hypothesis.seed(N)`` replays it anywhere."""
    if not hypothesis.settings.default.derandomize:
        return []
    from hypothesis.internal.compat import int_from_bytes
    from hypothesis.internal.reflection import function_digest

    lines = []
    for item in items:
        inner = getattr(getattr(getattr(item, "obj", None), "hypothesis", None), "inner_test", None)
        if inner is not None:
            lines.append(f"  hypothesis seed {int_from_bytes(function_digest(inner))} {item.nodeid}")
    return lines


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's own loop; uvloop too (the loop the gateway serves on) for tests marked both_loops."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    if item.get_closest_marker("both_loops") is not None:
        import uvloop

        factories["uvloop"] = uvloop.new_event_loop
    return factories


@dataclasses.dataclass
class Seen:
    """One request as the stand-in upstream received it."""

    method: str
    raw_path: str
    headers: CIMultiDict[str]
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


Responder = Callable[[web.Request, Seen], Awaitable[web.StreamResponse]]


async def echo_json(request: web.Request, seen: Seen) -> web.StreamResponse:
    return web.json_response({"method": seen.method, "path": seen.raw_path, "size": len(seen.body)})


async def breaks_mid_body(request: web.Request, seen: Seen) -> web.StreamResponse:
    """Promise 100000 bytes, send 1000, then drop the connection."""
    response = web.StreamResponse(headers={"Content-Length": "100000"})
    await response.prepare(request)
    await response.write(b"a" * 1000)
    assert request.transport is not None
    request.transport.abort()
    return response


class Recorder:
    """A stand-in upstream that records every request; tests program its answers."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.respond: Responder = echo_json
        self.read_body = True
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read() if self.read_body else b""
        seen = Seen(request.method, request.raw_path, CIMultiDict(request.headers), tuple(request.raw_headers), body)
        self.seen.append(seen)
        return await self.respond(request, seen)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@pytest.fixture
async def recorder(aiohttp_server: Any) -> Recorder:
    recording = Recorder()
    server: TestServer = await aiohttp_server(recording.app(), auto_decompress=False)
    recording.url = str(server.make_url("")).rstrip("/")
    return recording


def make_settings(**sections: dict[str, Any]) -> Settings:
    """Defaults with some keys changed, validated as a config file would be."""
    raw = {"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}}
    for name, table in sections.items():
        raw[name] = {**raw.get(name, {}), **table}
    return config.build(raw)


@dataclasses.dataclass
class Gateway:
    url: str
    admin_url: str
    app: web.Application
    server: TestServer


GatewayFactory = Callable[..., Awaitable[Gateway]]


class GatewayTestServer(TestServer):
    """A TestServer serving through GatewayRunner, the runner `serve` uses."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
async def make_gateway(aiohttp_server: Any) -> AsyncIterator[GatewayFactory]:
    """Start a gateway (and its admin listener) in front of ``upstream_url`` with some settings changed."""
    started: list[TestServer] = []

    async def start(upstream_url: str, ssl: Any = None, **sections: dict[str, Any]) -> Gateway:
        settings = make_settings(upstream={"url": upstream_url, **sections.pop("upstream", {})}, **sections)
        app = build_app(settings)
        server = GatewayTestServer(app)
        await server.start_server(ssl=ssl, **runner_options(settings))
        started.append(server)
        admin = await aiohttp_server(build_admin_app(app))
        return Gateway(str(server.make_url("")).rstrip("/"), str(admin.make_url("")).rstrip("/"), app, server)

    yield start
    while started:
        await started.pop().close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that changes nothing: no decompression, no cookies, no added headers."""
    async with aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@dataclasses.dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes


async def raw_request(url: str, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send exact bytes (no client-side normalisation) and read one response.

    The body is read by its Content-Length when there is one, otherwise until the server closes.
    """
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            if not head.startswith(b"HTTP/1.1 1"):  # skip interim responses such as 100 Continue
                break
        lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
        status = int(lines[0].split()[1])
        if "Content-Length" in headers and not request.startswith(b"HEAD "):
            body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), timeout)
        elif request.startswith(b"HEAD ") or status in (204, 304):
            body = b""
        else:
            body = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawResponse(status, headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """Debian's redis-server, installed with .ci/system-packages (the script CI runs) when missing."""
    if shutil.which(REDIS_SERVER) is None:
        result = subprocess.run([REPO / ".ci" / "system-packages"], capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.fail(f".ci/system-packages failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    found = shutil.which(REDIS_SERVER)
    if found is None:
        pytest.fail("redis-server is still missing after .ci/system-packages")
    return found


@pytest.fixture
def redis_server(tmp_path: Path, redis_executable: str) -> Iterator[RedisServer]:
    """A real redis-server of this test's own, on a free loopback port."""
    with RedisServer(tmp_path / "redis", executable=redis_executable) as server:
        yield server
