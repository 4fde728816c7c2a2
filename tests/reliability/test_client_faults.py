"""A client that goes away mid-upload, mid-download or while IMS thinks: the upstream
exchange is aborted at once, it is counted as aborted, and nothing leaks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.patch.parser import V21_MEDIA_TYPE
from testing.faulty_upstream import FaultyUpstream, eventually
from tests.reliability.conftest import (
    GatewayProcess,
    build_request,
    fetch,
    metric_value,
    settled,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIB = 1024 * 1024
REQUESTS = "ims_gateway_requests_total"


@pytest.fixture(scope="module")
def gateway(faulty_upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("clients"), faulty_upstream.url, {})
    yield process
    process.stop()


async def aborted(gateway: GatewayProcess) -> float:
    text = (await fetch(gateway.admin_url + "/metrics")).body.decode()
    return metric_value(text, REQUESTS, {"status_class": "aborted"})


async def leave(writer: asyncio.StreamWriter, how: str) -> None:
    if how == "reset":
        writer.transport.abort()
    else:
        writer.close()


async def assert_upstream_saw_the_client_leave(upstream: FaultyUpstream, gateway: GatewayProcess, fault: str, stage: str) -> None:
    assert await eventually(lambda: any(c.fault == fault and c.stage == stage for c in upstream.closed), 5), upstream.closed
    assert set(upstream.stages()) <= {"idle"}
    upstream.drop_connections()
    assert await settled(gateway.sockets, gateway.idle_sockets) == gateway.idle_sockets, gateway.open_fds()


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_client_leaving_mid_upload_aborts_the_upstream_upload(
    gateway: GatewayProcess, upstream: FaultyUpstream, how: str
) -> None:
    before = await aborted(gateway)
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(build_request("PUT", "/v2/images/0b1f/file", {"X-Fault": "sink", "Content-Length": str(64 * MIB)}))
    writer.write(b"u" * MIB)
    await writer.drain()
    assert await eventually(lambda: any(c.fault == "sink" for c in upstream.closed) or "body" in upstream.stages())
    await leave(writer, how)
    await assert_upstream_saw_the_client_leave(upstream, gateway, "sink", "body")
    assert [c.body_bytes < 64 * MIB for c in upstream.closed if c.fault == "sink"] == [True]
    assert upstream.requests == []
    assert await aborted(gateway) - before == 1


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_client_leaving_mid_download_aborts_the_upstream_download(
    gateway: GatewayProcess, upstream: FaultyUpstream, how: str
) -> None:
    before = await aborted(gateway)
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(build_request("GET", "/v2/images/0b1f/file", {"X-Fault": "trickle:0.02"}))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ")
    await asyncio.wait_for(reader.readexactly(4096), 10)
    await leave(writer, how)
    await assert_upstream_saw_the_client_leave(upstream, gateway, "trickle:0.02", "response")
    assert await aborted(gateway) - before == 1


async def test_a_client_leaving_while_the_upstream_thinks_aborts_the_upstream_request(
    gateway: GatewayProcess, upstream: FaultyUpstream
) -> None:
    before = await aborted(gateway)
    body = b'[{"op": "replace", "path": "/name", "value": "x"}]'
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(build_request("PATCH", "/v2/images/0b1f", {"X-Fault": "slow:60", "Content-Type": V21_MEDIA_TYPE}, body))
    await writer.drain()
    assert await eventually(lambda: len(upstream.requests) == 1)
    await leave(writer, "close")
    await assert_upstream_saw_the_client_leave(upstream, gateway, "slow:60", "response")
    assert await aborted(gateway) - before == 1
