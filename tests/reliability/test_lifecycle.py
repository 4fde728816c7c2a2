"""SIGTERM: readiness fails first, then the listener closes, in-flight requests finish, exit 0."""

from __future__ import annotations

import asyncio
import signal

import pytest

from testing.faulty_upstream import FaultyUpstream, eventually
from tests.reliability.conftest import (
    ConnectionClosed,
    SpawnGateway,
    fetch,
    read_response,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

UPLOAD = 4 * 1024 * 1024
PIECE = 64 * 1024


async def readiness(admin_url: str) -> int:
    return (await fetch(admin_url + "/readyz")).status


async def accepts(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except ConnectionRefusedError:
        return False
    writer.close()
    return True


async def test_sigterm_fails_readiness_then_closes_the_listener_and_lets_an_upload_finish(
    upstream: FaultyUpstream, spawn_gateway: SpawnGateway
) -> None:
    gateway = spawn_gateway(upstream.url, server={"drain_delay": 2.0, "drain_timeout": 30.0})
    assert await readiness(gateway.admin_url) == 200
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"PUT /v2/images/0b1f/file HTTP/1.1\r\nHost: gw\r\nX-Fault: sink\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {UPLOAD}\r\n\r\n".encode()
    )
    writer.write(b"u" * PIECE)
    await writer.drain()
    assert await eventually(lambda: "body" in upstream.stages())

    gateway.signal(signal.SIGTERM)
    assert await _eventually_async(lambda: readiness(gateway.admin_url), 503)
    # Readiness failed while the listener still serves: a load balancer has time to stop sending.
    served = await fetch(gateway.url + "/v2/images")
    assert served.status == 200
    assert await _eventually_async(lambda: accepts(gateway.url), False, timeout=20)

    for _ in range(UPLOAD // PIECE - 1):
        writer.write(b"u" * PIECE)
        await writer.drain()
    response = await asyncio.wait_for(read_response(reader), 30)
    writer.close()
    assert response.status == 201
    assert response.json() == {"received": UPLOAD}
    assert await asyncio.to_thread(gateway.wait, 30) == 0
    log = gateway.log()
    assert log.index("SIGTERM: draining") < log.index("stopped")


async def test_in_flight_requests_past_the_drain_timeout_are_cut_and_the_exit_is_clean(
    upstream: FaultyUpstream, spawn_gateway: SpawnGateway
) -> None:
    gateway = spawn_gateway(upstream.url, server={"drain_timeout": 1.0})
    pending = asyncio.ensure_future(fetch(gateway.url + "/v2/images", headers={"X-Fault": "silent"}))
    assert await eventually(lambda: len(upstream.requests) == 1)
    gateway.signal(signal.SIGTERM)
    assert await asyncio.to_thread(gateway.wait, 20) == 0
    with pytest.raises(ConnectionClosed):
        await pending


async def test_a_second_sigterm_exits_at_once(upstream: FaultyUpstream, spawn_gateway: SpawnGateway) -> None:
    gateway = spawn_gateway(upstream.url, server={"drain_timeout": 600.0})
    pending = asyncio.ensure_future(fetch(gateway.url + "/v2/images", headers={"X-Fault": "silent"}))
    assert await eventually(lambda: len(upstream.requests) == 1)
    gateway.signal(signal.SIGTERM)
    assert await _eventually_async(lambda: readiness(gateway.admin_url), 503)
    gateway.signal(signal.SIGTERM)
    # Well inside the 600 s the first signal granted the in-flight request.
    assert await asyncio.to_thread(gateway.wait, 20) != 0
    assert "second SIGTERM: exiting at once" in gateway.log()
    with pytest.raises(ConnectionClosed):
        await pending


async def _eventually_async(probe: object, expected: object, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await probe() == expected:  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False
