"""Upstream faults: each gives the client a defined result, is counted, and leaks nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from testing.faulty_upstream import FaultyUpstream, eventually
from tests.reliability.conftest import (
    GatewayProcess,
    Response,
    SpawnGateway,
    build_request,
    fetch,
    metric_value,
    settled,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ERRORS = "ims_gateway_upstream_errors_total"
READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def gateway(faulty_upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    sections = {"upstream": {"read_timeout": READ_TIMEOUT, "connect_timeout": 2.0}}
    process = GatewayProcess(tmp_path_factory.mktemp("faults"), faulty_upstream.url, sections)
    yield process
    process.stop()


@dataclasses.dataclass
class Outcome:
    status: int
    declared: int | None  # the Content-Length announced, if any
    body: bytes
    complete: bool  # the whole announced body arrived and the exchange ended cleanly

    def json(self) -> object:
        return Response(self.status, {}, self.body).json()


async def attempt(url: str, data: bytes) -> Outcome:
    """One request on a fresh connection, reading whatever comes back until the end or an abort."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
        declared = int(headers["content-length"]) if "content-length" in headers else None
        body = b""
        complete = False
        try:
            while declared is None or len(body) < declared:
                chunk = await asyncio.wait_for(reader.read(65536), 30)
                if not chunk:
                    break
                body += chunk
            complete = declared is not None and len(body) == declared
        except ConnectionError:
            pass
        return Outcome(int(lines[0].split(" ", 2)[1]), declared, body, complete)
    finally:
        writer.close()


ROUTES = {
    "GET": lambda fault: build_request("GET", "/v2/images/0b1f/file", {"X-Fault": fault, "X-Auth-Token": "t"}),
    "PATCH v2.1": lambda fault: build_request(
        "PATCH", "/v2/images/0b1f", {"X-Fault": fault, "Content-Type": V21_MEDIA_TYPE},
        b'[{"op": "replace", "path": "/name", "value": "x"}]',
    ),
    # The v2.0 add check reads the image first: the fault hits that GET.
    "PATCH v2.0 add": lambda fault: build_request(
        "PATCH", "/v2/images/0b1f", {"X-Fault": fault, "Content-Type": V20_MEDIA_TYPE},
        b'[{"add": "/colour", "value": "x"}]',
    ),
}

# fault -> (status the client sees, code of the gateway's own error or None, kind, stage)
BEFORE_RESPONSE = {
    "silent": (504, "IMSGW.0504", "timeout"),
    "reset": (502, "IMSGW.0502", "reset"),
}
MID_STREAM = {
    "reset_mid:1000": "reset",
    "truncate:1000": "reset",
    # Pieces 5x read_timeout apart: a late timer cannot be saved by the next piece.
    f"trickle:{READ_TIMEOUT * 5}": "timeout",
}


async def metrics(gateway: GatewayProcess) -> str:
    return (await fetch(gateway.admin_url + "/metrics")).body.decode()


async def assert_no_leak(gateway: GatewayProcess, upstream: FaultyUpstream) -> None:
    """The gateway has ended every faulty exchange itself (only idle pooled connections remain
    upstream); once those and the client are closed, it holds only its idle sockets."""
    assert await eventually(lambda: set(upstream.stages()) <= {"idle"}), upstream.stages()
    upstream.drop_connections()
    assert await eventually(lambda: upstream.open_connections == 0)
    assert await settled(gateway.sockets, gateway.idle_sockets) == gateway.idle_sockets, gateway.open_fds()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("fault", BEFORE_RESPONSE)
async def test_no_answer_from_the_upstream_is_a_502_or_504(
    gateway: GatewayProcess, upstream: FaultyUpstream, route: str, fault: str
) -> None:
    status, code, kind = BEFORE_RESPONSE[fault]
    before = await metrics(gateway)
    outcome = await attempt(gateway.url, ROUTES[route](fault))
    assert (outcome.status, outcome.complete) == (status, True)
    assert outcome.json()["error"]["code"] == code  # type: ignore[index]
    after = await metrics(gateway)
    labels = {"kind": kind, "stage": "before_response"}
    assert metric_value(after, ERRORS, labels) - metric_value(before, ERRORS, labels) == 1
    assert metric_value(after, ERRORS) - metric_value(before, ERRORS) == 1
    await assert_no_leak(gateway, upstream)


@pytest.mark.parametrize("route", ["GET"])
@pytest.mark.parametrize("fault", MID_STREAM)
async def test_a_failure_after_the_answer_started_aborts_the_client_stream(
    gateway: GatewayProcess, upstream: FaultyUpstream, route: str, fault: str
) -> None:
    before = await metrics(gateway)
    outcome = await attempt(gateway.url, ROUTES[route](fault))
    assert outcome.status == 200
    assert outcome.declared is not None and len(outcome.body) < outcome.declared
    assert not outcome.complete
    after = await metrics(gateway)
    labels = {"kind": MID_STREAM[fault], "stage": "mid_stream"}
    assert metric_value(after, ERRORS, labels) - metric_value(before, ERRORS, labels) == 1
    await assert_no_leak(gateway, upstream)


# The gateway reads the (small) answer to a PATCH and to its v2.0 add check whole before
# answering (Upstream.call): a broken one is a 502, never a truncated 200. The trickle's
# 1 GiB Content-Length is refused at once: more than a small answer may be.
@pytest.mark.parametrize("route", ["PATCH v2.1", "PATCH v2.0 add"])
@pytest.mark.parametrize("fault", MID_STREAM)
async def test_a_broken_answer_to_a_patch_or_its_add_check_is_a_502(
    gateway: GatewayProcess, upstream: FaultyUpstream, route: str, fault: str
) -> None:
    before = await metrics(gateway)
    outcome = await attempt(gateway.url, ROUTES[route](fault))
    assert (outcome.status, outcome.complete) == (502, True)
    assert outcome.json()["error"]["code"] == "IMSGW.0502"  # type: ignore[index]
    patches = [r.method for r in upstream.requests if r.method == "PATCH"]
    assert len(patches) == (1 if route == "PATCH v2.1" else 0)
    after = await metrics(gateway)
    labels = {"kind": "reset", "stage": "before_response"}
    assert metric_value(after, ERRORS, labels) - metric_value(before, ERRORS, labels) == 1
    await assert_no_leak(gateway, upstream)


@pytest.mark.parametrize("route", ROUTES)
async def test_a_refused_connection_is_a_502(gateway: GatewayProcess, upstream: FaultyUpstream, route: str) -> None:
    before = await metrics(gateway)
    upstream.refuse()
    try:
        outcome = await attempt(gateway.url, ROUTES[route]("ok"))
    finally:
        upstream.accept_if_refusing()
    assert (outcome.status, outcome.complete) == (502, True)
    assert outcome.json()["error"]["code"] == "IMSGW.0502"  # type: ignore[index]
    after = await metrics(gateway)
    labels = {"kind": "refused", "stage": "before_response"}
    assert metric_value(after, ERRORS, labels) - metric_value(before, ERRORS, labels) == 1
    await assert_no_leak(gateway, upstream)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("status", [500, 503])
async def test_an_upstream_error_answer_is_passed_through(
    gateway: GatewayProcess, upstream: FaultyUpstream, route: str, status: int
) -> None:
    before = await metrics(gateway)
    outcome = await attempt(gateway.url, ROUTES[route](f"status:{status}"))
    assert (outcome.status, outcome.complete) == (status, True)
    assert outcome.json() == {"error": {"code": f"IMG.{status}", "message": "upstream says no"}}
    assert metric_value(await metrics(gateway), ERRORS) == metric_value(before, ERRORS)
    await assert_no_leak(gateway, upstream)


@pytest.mark.parametrize("route", ROUTES)
async def test_a_slow_answer_within_the_read_timeout_arrives_whole(
    gateway: GatewayProcess, upstream: FaultyUpstream, route: str
) -> None:
    # A fifth of read_timeout: the upstream's thread shares the GIL with this test's loop.
    outcome = await attempt(gateway.url, ROUTES[route](f"slow:{READ_TIMEOUT / 5}"))
    assert (outcome.status, outcome.complete) == (200, True)


async def test_the_gateway_survives_every_fault(gateway: GatewayProcess) -> None:
    assert gateway.process.poll() is None
    assert "Traceback" not in gateway.log()


async def test_requests_waiting_for_a_busy_pool_get_a_504_not_a_hang(
    faulty_upstream: FaultyUpstream, upstream: FaultyUpstream, spawn_gateway: SpawnGateway
) -> None:
    gateway = spawn_gateway(upstream.url, upstream={"pool_size": 2, "connect_timeout": 1.0})
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    downloads = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(build_request("GET", "/v2/images/0b1f/file", {"X-Fault": "trickle:0.05"}))
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200 ")
        downloads.append(writer)
    before = await metrics(gateway)
    outcome = await attempt(gateway.url, build_request("GET", "/v2/images"))
    assert (outcome.status, outcome.complete) == (504, True)
    assert outcome.json()["error"]["code"] == "IMSGW.0504"  # type: ignore[index]
    assert "pool" in outcome.json()["error"]["message"]  # type: ignore[index]
    labels = {"kind": "timeout", "stage": "before_response"}
    assert metric_value(await metrics(gateway), ERRORS, labels) - metric_value(before, ERRORS, labels) == 1
    for writer in downloads:
        writer.close()
    assert await eventually(lambda: upstream.open_connections == 0 or set(upstream.stages()) <= {"idle"})
    assert (await attempt(gateway.url, build_request("GET", "/v2/images"))).status == 200
