"""Slow clients (slowloris heads, trickled PATCH bodies, idle connections) are cut off by
the [server] timeouts while every other client is served."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.patch.parser import V21_MEDIA_TYPE
from testing.faulty_upstream import FaultyUpstream
from tests.reliability.conftest import (
    GatewayProcess,
    RawConnection,
    Response,
    build_request,
    is_ims_error,
    read_response,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLOW_CLIENTS = 30
HEADER_TIMEOUT = 0.5
KEEPALIVE_TIMEOUT = 4.0
BODY = b'[{"op": "replace", "path": "/name", "value": "slow"}]'


@pytest.fixture(scope="module")
def gateway(faulty_upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # Margins a loaded machine cannot blow: every wait that must end before a timeout is at
    # most a fifth of it; every wait that must outlast one only proves more when it is late.
    sections = {"server": {"header_timeout": HEADER_TIMEOUT, "body_timeout": 1.0, "keepalive_timeout": KEEPALIVE_TIMEOUT}}
    process = GatewayProcess(tmp_path_factory.mktemp("slow"), faulty_upstream.url, sections)
    yield process
    process.stop()


async def trickle(url: str, data: bytes, interval: float, upfront: int = 0) -> tuple[int, bytes]:
    """Send ``data`` a byte every ``interval`` s (after ``upfront`` bytes at once) until the
    server answers or closes; (bytes sent, the server's first bytes back)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = asyncio.ensure_future(reader.read(65536))
    sent = 0
    try:
        writer.write(data[:upfront])
        sent = upfront
        while sent < len(data) and not answer.done():
            writer.write(data[sent : sent + 1])
            sent += 1
            await asyncio.sleep(interval)
        return sent, await asyncio.wait_for(answer, 10)
    except ConnectionError:
        return sent, await asyncio.wait_for(answer, 10)
    finally:
        answer.cancel()
        writer.close()


async def keep_serving(url: str, stop: asyncio.Event) -> list[int]:
    """A well-behaved client's statuses while slow clients hold their connections."""
    connection = RawConnection(url)
    statuses = []
    try:
        while not stop.is_set():
            response = await connection.request(build_request("GET", "/v2/images", {"X-Auth-Token": "t"}))
            statuses.append(response.status)
            await asyncio.sleep(0.01)
    finally:
        await connection.close()
    return statuses


async def test_slowloris_heads_are_cut_off_while_others_are_served(gateway: GatewayProcess, upstream: FaultyUpstream) -> None:
    head = build_request("GET", "/v2/images/slowloris", {"X-Auth-Token": "t", "X-Padding": "p" * 200})
    stop = asyncio.Event()
    normal = asyncio.ensure_future(keep_serving(gateway.url, stop))
    results = await asyncio.gather(*(trickle(gateway.url, head, 0.1) for _ in range(SLOW_CLIENTS)))
    stop.set()
    statuses = await normal
    for sent, answer in results:
        assert sent < len(head), "the head must be cut off before it is complete"
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"code": "IMSGW.0408"' in answer
    assert statuses and set(statuses) == {200}
    assert not any(r.path == "/v2/images/slowloris" for r in upstream.requests)


async def test_a_trickled_patch_body_is_cut_off_while_others_are_served(gateway: GatewayProcess, upstream: FaultyUpstream) -> None:
    head = build_request("PATCH", "/v2/images/0b1f", {"Content-Type": V21_MEDIA_TYPE}, BODY)
    upfront = len(head) - len(BODY)
    stop = asyncio.Event()
    normal = asyncio.ensure_future(keep_serving(gateway.url, stop))
    # A byte every 0.2 s: the 53-byte body would take 10 s, ten times body_timeout.
    results = await asyncio.gather(*(trickle(gateway.url, head, 0.2, upfront) for _ in range(SLOW_CLIENTS)))
    stop.set()
    statuses = await normal
    for sent, answer in results:
        assert sent < len(head)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"code": "IMSGW.0408"' in answer
        assert b"Connection: close" in answer
    assert statuses and set(statuses) == {200}
    assert [r for r in upstream.requests if r.method == "PATCH"] == []


async def test_a_slow_but_timely_client_is_served(gateway: GatewayProcess, upstream: FaultyUpstream) -> None:
    data = build_request("PATCH", "/v2/images/0b1f", {"Content-Type": V21_MEDIA_TYPE}, BODY)
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # Idle for longer than header_timeout: the head's clock starts at its first byte. The
        # keep-alive clock runs from the connection's start: the head is whole by 0.85 s of 4 s.
        await asyncio.sleep(HEADER_TIMEOUT * 1.5)
        for piece in (data[:20], data[20:-10], data[-10:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(HEADER_TIMEOUT / 10)
        response = await asyncio.wait_for(read_response(reader), 10)
    finally:
        writer.close()
    assert response.status == 200
    assert upstream.requests[-1].body == BODY


async def test_an_idle_connection_is_closed_after_the_keepalive_timeout(gateway: GatewayProcess) -> None:
    connection = RawConnection(gateway.url)
    response = await connection.request(build_request("GET", "/v2/images"))
    assert response.status == 200
    assert connection.reader is not None
    assert await asyncio.wait_for(connection.reader.read(), 15) == b""
    await connection.close()


async def test_a_refused_slow_client_leaves_an_error_in_the_ims_shape(gateway: GatewayProcess) -> None:
    _, answer = await trickle(gateway.url, build_request("GET", "/", {"X-Padding": "p" * 100}), 0.1)
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    assert is_ims_error(Response(408, {k.lower(): v for k, v in headers.items()}, body), 408)
