"""Metrics: traffic through the gateway, then exact values read from its registry."""

from __future__ import annotations

import asyncio
import gzip
import os
import platform
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.config.generation import Config
from gateway.context import RequestContext
from gateway.patch.parser import V20_MEDIA_TYPE as V20
from gateway.patch.parser import V21_MEDIA_TYPE as V21
from gateway.service.app import build_app
from gateway.service.state import METRICS, RUNTIME
from gateway.telemetry.families import LABEL_VALUES
from gateway.telemetry.metrics import Metrics
from gateway.vocabulary import Route
from ims_emulator.app import build_emulator_app
from testing.paths import REPO
from testing.ports import refusing_port
from tests.conftest import (
    Gateway,
    GatewayFactory,
    Recorder,
    Seen,
    breaks_mid_body,
    make_settings,
    raw_request,
)

UA = "python-glanceclient/4.1.0 keystoneauth1/5.1.2 python-requests/2.31.0 CPython/3.11.4"
RENAME_V21 = '[{"op": "replace", "path": "/name", "value": "renamed"}]'
RENAME_V20 = '[{"replace": "/name", "value": "renamed"}]'
FORBIDDEN_V21 = '[{"op": "replace", "path": "/__os_type", "value": "Windows"}]'


def registry_of(gateway: Gateway) -> CollectorRegistry:
    return gateway.app[METRICS].registry


def value(gateway: Gateway, name: str, **labels: str) -> float | None:
    return registry_of(gateway).get_sample_value(name, labels)


def total(gateway: Gateway, name: str) -> float:
    """The sum of every sample of ``name`` (all label sets)."""
    return sum(
        sample.value
        for family in registry_of(gateway).collect()
        for sample in family.samples
        if sample.name == name
    )


async def eventually(check: Callable[[], bool]) -> None:
    """Wait for something the server does after the client has its answer (bounded, not timed)."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()


class Stack:
    """A gateway in front of the emulator, and a client that says who it is."""

    def __init__(self, gateway: Gateway, emulator_url: str, http: aiohttp.ClientSession) -> None:
        self.gateway = gateway
        self.emulator_url = emulator_url
        self.http = http

    async def image(self, **fields: Any) -> str:
        body = {"name": "metrics", "container_format": "bare", "disk_format": "qcow2", **fields}
        async with self.http.post(self.emulator_url + "/v2/images", json=body) as response:
            assert response.status == 201
            return str((await response.json())["id"])

    async def patch(self, image_id: str, content_type: str | None, body: str | bytes, **headers: str) -> int:
        sent = {"User-Agent": UA, "X-Auth-Token": "token-1", **headers}
        if content_type is not None:
            sent["Content-Type"] = content_type
        data = body.encode() if isinstance(body, str) else body
        async with self.http.patch(f"{self.gateway.url}/v2/images/{image_id}", data=data, headers=sent) as response:
            await response.read()
            return response.status


@pytest.fixture
async def emulator_url(aiohttp_server: Any) -> str:
    emulator = await aiohttp_server(build_emulator_app())
    return str(emulator.make_url("")).rstrip("/")


@pytest.fixture
async def stack(emulator_url: str, make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> Stack:
    return Stack(await make_gateway(emulator_url), emulator_url, http)


# -- PATCH /v2/images/{id}: outcomes ---------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "content_type", "body", "status", "shape", "outcome"),
    [
        ({}, V21, RENAME_V21, 200, "v2.1", "forwarded"),
        ({}, V20, RENAME_V20, 200, "v2.0", "rewritten"),
        ({}, V21, FORBIDDEN_V21, 400, "v2.1", "rejected"),
        ({"team": "a"}, V20, '[{"add": "/team", "value": "b"}]', 409, "v2.0", "conflict"),
        (None, V20, '[{"add": "/team", "value": "b"}]', 404, "v2.0", "upstream_answer"),
    ],
)
async def test_each_outcome_is_counted_once(
    stack: Stack,
    existing: dict[str, str] | None,
    content_type: str,
    body: str,
    status: int,
    shape: str,
    outcome: str,
) -> None:
    image_id = await stack.image(**existing) if existing is not None else str(uuid.uuid4())
    assert await stack.patch(image_id, content_type, body) == status
    gateway = stack.gateway
    await eventually(lambda: total(gateway, "ims_gateway_deprecated_calls_total") == 1)
    assert value(gateway, "ims_gateway_deprecated_calls_total", shape=shape, outcome=outcome, mode="enforce") == 1
    assert value(gateway, "ims_gateway_deprecated_client_calls_total", client="python-glanceclient", shape=shape) == 1
    status_class = f"{status // 100}xx"
    assert value(gateway, "ims_gateway_requests_total", method="PATCH", route="image_patch", status_class=status_class) == 1
    assert total(gateway, "ims_gateway_requests_total") == 1
    rejected = 1 if outcome == "rejected" else 0
    assert total(gateway, "ims_gateway_deprecated_rejections_total") == rejected


async def test_an_unreachable_upstream_is_an_upstream_error(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    with refusing_port() as port:
        gateway = await make_gateway(f"http://127.0.0.1:{port}")
        async with http.patch(gateway.url + "/v2/images/abc", data=RENAME_V21, headers={"Content-Type": V21}) as response:
            assert response.status == 502
    assert value(gateway, "ims_gateway_deprecated_calls_total", shape="v2.1", outcome="upstream_error", mode="enforce") == 1
    assert value(gateway, "ims_gateway_upstream_errors_total", kind="refused", stage="before_response") == 1
    assert value(gateway, "ims_gateway_requests_total", method="PATCH", route="image_patch", status_class="5xx") == 1
    assert value(gateway, "ims_gateway_upstream_duration_seconds_count", route="image_patch") == 1


# -- rejections by reason ----------------------------------------------------------------


BODY_REASONS = [
    (V21, "not json", "malformed_json"),
    (V21, b"\xff[]", "malformed_json"),
    (V21, '"string"', "bad_body_type"),
    (V21, "{}", "bad_body_type"),
    (V21, "[1]", "bad_operation_object"),
    (V21, '[{"path": "/a", "value": 1}]', "missing_op"),
    (V21, '[{"op": "test", "path": "/a"}]', "bad_op"),
    (V20, '[{"op": "replace", "path": "/name", "value": "x"}]', "bad_op"),
    (V21, '[{"op": "replace", "value": 1}]', "missing_path"),
    (V21, '[{"op": "replace", "path": "nopath", "value": 1}]', "bad_pointer"),
    (V21, '[{"op": "replace", "path": 5, "value": 1}]', "bad_pointer"),
    (V21, '[{"op": "replace", "path": "/a/b", "value": "x"}]', "bad_depth"),
    (V21, '[{"op": "add", "path": "/a"}]', "missing_value"),
    (V21, '[{"op": "replace", "path": "/a", "path": "/name", "value": "x"}]', "duplicate_member"),
    (V21, FORBIDDEN_V21, "forbidden_attribute"),
    (V20, '[{"replace": "/visibility", "value": "public"}]', "forbidden_attribute"),
    (V21, "", "missing_body"),
    ("application/json", RENAME_V21, "unsupported_media_type"),
    (None, RENAME_V21, "unsupported_media_type"),
]


@pytest.mark.parametrize(("content_type", "body", "reason"), BODY_REASONS)
async def test_each_rejection_reason_is_counted(stack: Stack, content_type: str | None, body: str | bytes, reason: str) -> None:
    status = await stack.patch(str(uuid.uuid4()), content_type, body)
    assert status in (400, 415)
    shape = {V20: "v2.0", V21: "v2.1"}.get(content_type or "", "unsupported")
    assert value(stack.gateway, "ims_gateway_deprecated_rejections_total", shape=shape, reason=reason, mode="enforce") == 1
    assert total(stack.gateway, "ims_gateway_deprecated_rejections_total") == 1
    assert value(stack.gateway, "ims_gateway_deprecated_calls_total", shape=shape, outcome="rejected", mode="enforce") == 1


async def test_compressed_and_method_override_and_too_large_rejections(stack: Stack) -> None:
    gateway = stack.gateway
    assert await stack.patch("a", V21, RENAME_V21, **{"Content-Encoding": "gzip"}) == 400
    assert await stack.patch("b", V20, RENAME_V20, **{"X-HTTP-Method-Override": "PATCH"}) == 400
    head = f"PATCH /v2/images/c HTTP/1.1\r\nHost: gw\r\nContent-Type: {V21}\r\nContent-Length: 10000000\r\n\r\n"
    assert (await raw_request(gateway.url, head.encode() + b"[" * 100)).status == 413
    await eventually(lambda: total(gateway, "ims_gateway_deprecated_rejections_total") == 3)
    rejections = "ims_gateway_deprecated_rejections_total"
    assert value(gateway, rejections, shape="v2.1", reason="content_encoding", mode="enforce") == 1
    assert value(gateway, rejections, shape="v2.0", reason="method_override", mode="enforce") == 1
    assert value(gateway, rejections, shape="v2.1", reason="too_large", mode="enforce") == 1
    assert value(gateway, "ims_gateway_deprecated_client_calls_total", client="unknown", shape="v2.1") == 1


async def test_a_trickled_body_is_counted_as_a_body_timeout(
    emulator_url: str, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(emulator_url, server={"body_timeout": 0.3})
    answered = asyncio.Event()

    async def trickle() -> Any:
        yield b'[{"op": "replace", '
        await answered.wait()  # the rest never comes before the answer, however slow the machine
        yield b'"path": "/name", "value": "x"}]'

    try:
        async with (
            asyncio.timeout(10),  # without a body timeout the request would wait for ever
            http.patch(f"{gateway.url}/v2/images/a", data=trickle(), headers={"Content-Type": V21}) as response,
        ):
            assert response.status == 408
    finally:
        answered.set()
    await eventually(lambda: total(gateway, "ims_gateway_deprecated_rejections_total") == 1)
    rejections = "ims_gateway_deprecated_rejections_total"
    assert value(gateway, rejections, shape="v2.1", reason="body_timeout", mode="enforce") == 1


def test_every_reason_the_gateway_sets_is_a_known_label() -> None:
    reachable = {reason for _, _, reason in BODY_REASONS} | {"content_encoding", "method_override", "too_large", "body_timeout"}
    # Glance's own read-only/reserved 403s are not used: the policy refuses those names first.
    # The gate's reasons are counted in tests/proxy/test_gate.py, the schedule's in test_deprecation.py.
    gate = {"routing_header", "connection_header", "bad_target", "http_version", "too_deep", "signature"}
    assert set(LABEL_VALUES["reason"]) - reachable == {"read_only", "reserved", "brownout", "sunset", "other"} | gate


async def test_observe_mode_counts_what_enforce_would_have_done(
    emulator_url: str, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    stack = Stack(await make_gateway(emulator_url, patch={"mode": "observe"}), emulator_url, http)
    image_id = await stack.image()
    await stack.patch(image_id, V21, FORBIDDEN_V21)
    await stack.patch(image_id, V20, RENAME_V20)
    gateway = stack.gateway
    calls = "ims_gateway_deprecated_calls_total"
    assert value(gateway, calls, shape="v2.1", outcome="rejected", mode="observe") == 1
    assert value(gateway, calls, shape="v2.0", outcome="rewritten", mode="observe") == 1
    assert total(gateway, calls) == 2
    assert value(gateway, "ims_gateway_deprecated_rejections_total", shape="v2.1", reason="forbidden_attribute", mode="observe") == 1


async def test_a_brownout_refusal_is_counted_with_its_reason(
    emulator_url: str, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    window = "2000-01-01T00:00:00Z/2999-01-01T00:00:00Z"
    stack = Stack(await make_gateway(emulator_url, deprecation={"v20_brownouts": [window]}), emulator_url, http)
    assert await stack.patch(await stack.image(), V20, RENAME_V20) == 410
    assert value(stack.gateway, "ims_gateway_deprecated_rejections_total", shape="v2.0", reason="brownout", mode="enforce") == 1


# -- operations ------------------------------------------------------------------------


async def test_operations_are_counted_by_shape_op_and_attribute_class(stack: Stack) -> None:
    image_id = await stack.image(colour="red")
    body = (
        '[{"replace": "/name", "value": "n"}, {"add": "/team", "value": "t"}, {"remove": "/colour"},'
        ' {"replace": "/__description", "value": "d"}, {"add": "/team2", "value": "t"}]'
    )
    assert await stack.patch(image_id, V20, body) == 200
    assert await stack.patch(image_id, V21, '[{"op": "replace", "path": "/name", "value": "x"}, ' + FORBIDDEN_V21[1:]) == 400
    assert await stack.patch(image_id, V21, '[{"op": "add", "path": "/tags/-", "value": "x"}]') == 400
    ops = "ims_gateway_deprecated_operations_total"
    expected = {
        ("v2.0", "replace", "name"): 1,
        ("v2.0", "add", "custom"): 2,
        ("v2.0", "remove", "custom"): 1,
        ("v2.0", "replace", "description"): 1,
        ("v2.1", "replace", "name"): 1,
        ("v2.1", "replace", "system"): 1,
    }
    for (shape, op, kind), count in expected.items():
        assert value(stack.gateway, ops, shape=shape, op=op, attribute_class=kind) == count
    assert total(stack.gateway, ops) == sum(expected.values())


# -- every request -------------------------------------------------------------------


@pytest.fixture
async def proxied(recorder: Recorder, make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(recorder.url)


async def test_requests_are_counted_by_method_route_and_status_class(
    proxied: Gateway, recorder: Recorder, http: aiohttp.ClientSession
) -> None:
    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.json_response({}, status=404 if "missing" in seen.raw_path else 200)

    recorder.respond = respond
    for method, path in [
        ("GET", "/v2/images"),
        ("GET", "/v2/images?limit=1"),
        ("POST", "/v2/images"),
        ("GET", "/v2/images/abc/file"),
        ("PUT", "/v2/images/abc/file"),
        ("GET", "/v2/images/missing"),
        ("DELETE", "/v2/images/abc"),
        ("PROPFIND", "/somewhere/else"),
        ("GET", "/"),
    ]:
        async with http.request(method, proxied.url + path) as response:
            await response.read()
    requests = "ims_gateway_requests_total"
    expected = {
        ("GET", "images", "2xx"): 2,
        ("POST", "images", "2xx"): 1,
        ("GET", "image_data", "2xx"): 1,
        ("PUT", "image_data", "2xx"): 1,
        ("GET", "images", "4xx"): 1,
        ("DELETE", "images", "2xx"): 1,
        ("other", "other", "2xx"): 1,
        ("GET", "other", "2xx"): 1,
    }
    for (method, route, status_class), count in expected.items():
        assert value(proxied, requests, method=method, route=route, status_class=status_class) == count
    assert total(proxied, requests) == 9
    assert value(proxied, "ims_gateway_request_duration_seconds_count", route="images") == 5
    assert value(proxied, "ims_gateway_upstream_duration_seconds_count", route="images") == 5
    assert value(proxied, "ims_gateway_request_duration_seconds_count", route="image_data") == 2
    assert value(proxied, "ims_gateway_request_duration_seconds_count", route="other") == 2
    # Nothing counted an image PATCH: no such series at all, not one at zero.
    assert value(proxied, "ims_gateway_request_duration_seconds_count", route="image_patch") is None
    assert total(proxied, "ims_gateway_deprecated_calls_total") == 0


async def test_durations_fall_in_buckets_from_milliseconds_to_an_hour(proxied: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(proxied.url + "/v2/images") as response:
        await response.read()
    duration = "ims_gateway_request_duration_seconds_bucket"
    assert value(proxied, duration, route="images", le="3600.0") == 1
    assert value(proxied, duration, route="images", le="+Inf") == 1
    upstream = value(proxied, "ims_gateway_upstream_duration_seconds_sum", route="images")
    whole = value(proxied, "ims_gateway_request_duration_seconds_sum", route="images")
    assert upstream is not None and whole is not None
    assert 0 < upstream <= whole


async def test_the_v20_add_check_and_the_patch_are_one_upstream_observation(stack: Stack) -> None:
    image_id = await stack.image()
    assert await stack.patch(image_id, V20, '[{"add": "/team", "value": "b"}]') == 200
    assert value(stack.gateway, "ims_gateway_upstream_duration_seconds_count", route="image_patch") == 1
    assert await stack.patch(image_id, V21, FORBIDDEN_V21) == 400
    assert value(stack.gateway, "ims_gateway_upstream_duration_seconds_count", route="image_patch") == 1
    assert value(stack.gateway, "ims_gateway_request_duration_seconds_count", route="image_patch") == 2


async def test_body_bytes_both_ways_streamed_or_not(
    proxied: Gateway, recorder: Recorder, http: aiohttp.ClientSession
) -> None:
    download = b"d" * 700_000

    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        if request.method == "GET":
            response = web.StreamResponse()
            await response.prepare(request)
            for start in range(0, len(download), 100_000):
                await response.write(download[start : start + 100_000])
            return response
        return web.Response(status=204)

    recorder.respond = respond

    async def upload() -> Any:
        for _ in range(30):
            yield b"u" * 10_000

    async with http.put(proxied.url + "/v2/images/abc/file", data=upload()) as response:
        assert response.status == 204
    async with http.put(proxied.url + "/v2/images/abc/file", data=b"x" * 1234) as response:
        assert response.status == 204
    async with http.get(proxied.url + "/v2/images/abc/file") as response:
        assert await response.read() == download
    async with http.patch(proxied.url + "/v2/images/abc", data=b"[]", headers={"Content-Type": "text/plain"}) as response:
        refusal = await response.read()
        assert response.status == 415
    assert value(proxied, "ims_gateway_request_body_bytes_total", route="image_data") == 300_000 + 1234
    assert value(proxied, "ims_gateway_response_body_bytes_total", route="image_data") == 700_000
    assert value(proxied, "ims_gateway_request_body_bytes_total", route="image_patch") == 2
    assert value(proxied, "ims_gateway_response_body_bytes_total", route="image_patch") == len(refusal)


async def test_in_flight_requests(proxied: Gateway, recorder: Recorder, http: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        await release.wait()
        return web.json_response({})

    recorder.respond = respond

    async def get(path: str) -> int:
        async with http.get(proxied.url + path) as response:
            await response.read()
            return response.status

    in_flight = "ims_gateway_requests_in_flight"
    tasks = [asyncio.create_task(get(path)) for path in ("/v2/images", "/v2/images/a", "/v2/images/a/file")]
    await eventually(lambda: len(recorder.seen) == 3)
    assert value(proxied, in_flight, route="images") == 2
    assert value(proxied, in_flight, route="image_data") == 1
    release.set()
    assert await asyncio.gather(*tasks) == [200, 200, 200]
    await eventually(lambda: total(proxied, in_flight) == 0)
    assert value(proxied, in_flight, route="images") == 0


# -- upstream errors -------------------------------------------------------------------


async def test_an_upstream_timeout_is_counted(recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    gateway = await make_gateway(recorder.url, upstream={"read_timeout": 0.2})
    never = asyncio.Event()

    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        await never.wait()
        raise AssertionError("unreachable")

    recorder.respond = respond
    async with http.get(gateway.url + "/v2/images") as response:
        assert response.status == 504
    assert value(gateway, "ims_gateway_upstream_errors_total", kind="timeout", stage="before_response") == 1
    assert total(gateway, "ims_gateway_upstream_errors_total") == 1
    assert value(gateway, "ims_gateway_requests_total", method="GET", route="images", status_class="5xx") == 1


async def test_an_upstream_failing_mid_stream_is_counted(
    proxied: Gateway, recorder: Recorder, http: aiohttp.ClientSession
) -> None:
    recorder.respond = breaks_mid_body
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(proxied.url + "/v2/images/x/file") as response:
            await response.read()
    errors = "ims_gateway_upstream_errors_total"
    await eventually(lambda: total(proxied, errors) == 1)
    assert value(proxied, errors, kind="reset", stage="mid_stream") == 1
    assert value(proxied, "ims_gateway_requests_total", method="GET", route="image_data", status_class="2xx") == 1
    assert value(proxied, "ims_gateway_response_body_bytes_total", route="image_data") == 1000


async def test_a_client_leaving_mid_body_is_an_aborted_request(stack: Stack) -> None:
    gateway = stack.gateway
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"PATCH /v2/images/abc HTTP/1.1\r\nHost: gw\r\nContent-Type: {V21}\r\nContent-Length: 1000\r\n\r\n[".encode()
    )
    await writer.drain()
    await eventually(lambda: value(gateway, "ims_gateway_requests_in_flight", route="image_patch") == 1)
    writer.close()
    await writer.wait_closed()
    requests = "ims_gateway_requests_total"
    await eventually(lambda: total(gateway, requests) == 1)
    assert value(gateway, requests, method="PATCH", route="image_patch", status_class="aborted") == 1
    assert value(gateway, "ims_gateway_deprecated_calls_total", shape="v2.1", outcome="aborted", mode="enforce") == 1
    assert value(gateway, "ims_gateway_requests_in_flight", route="image_patch") == 0


def test_a_handler_bug_counts_as_a_5xx() -> None:
    registry = CollectorRegistry()
    settings = make_settings()
    metrics = Metrics(registry, settings)
    request = make_mocked_request("GET", "/v2/images")
    context = RequestContext("req-1", Route.IMAGES, Config.from_settings(settings))
    metrics.request_started(context)
    metrics.request_aborted(request, context, RuntimeError("bug"), 0.01)
    assert registry.get_sample_value("ims_gateway_requests_total", {"method": "GET", "route": "images", "status_class": "5xx"}) == 1
    assert registry.get_sample_value("ims_gateway_requests_in_flight", {"route": "images"}) == 0


# -- build info, reloads, exposition -----------------------------------------------------


async def test_build_info_and_config_reloads(proxied: Gateway) -> None:
    labels = {"version": __version__, "python": platform.python_version()}
    assert registry_of(proxied).get_sample_value("ims_gateway_build_info", labels) == 1
    metrics = proxied.app[METRICS]
    assert value(proxied, "ims_gateway_config_last_reload_successful") == 1
    metrics.config_reloaded(ok=False)
    assert value(proxied, "ims_gateway_config_last_reload_successful") == 0
    metrics.config_reloaded(ok=True)
    metrics.config_reloaded(ok=True)
    assert value(proxied, "ims_gateway_config_reloads_total", result="success") == 2
    assert value(proxied, "ims_gateway_config_reloads_total", result="failure") == 1
    assert value(proxied, "ims_gateway_config_last_reload_successful") == 1


async def test_metrics_are_served_on_the_admin_listener_in_the_text_format(
    proxied: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.patch(proxied.url + "/v2/images/abc", data=RENAME_V21, headers={"Content-Type": V21}) as response:
        assert response.status == 200
    async with http.get(proxied.admin_url + "/metrics", headers={"Accept-Encoding": "identity"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "Content-Encoding" not in response.headers
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    calls = families["ims_gateway_deprecated_calls"]
    assert calls.type == "counter"
    assert {
        (s.labels["shape"], s.labels["outcome"], s.labels["mode"]): s.value for s in calls.samples if s.name.endswith("_total")
    }[("v2.1", "forwarded", "enforce")] == 1
    assert families["ims_gateway_request_duration_seconds"].type == "histogram"
    assert "process_resident_memory_bytes" in families
    async with http.get(proxied.url + "/metrics") as response:
        assert "ims_gateway_" not in await response.text()


async def test_openmetrics_is_served_when_asked_for(proxied: Gateway, http: aiohttp.ClientSession) -> None:
    accept = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}
    async with http.get(proxied.admin_url + "/metrics", headers=accept) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await response.read()).decode().rstrip().endswith("# EOF")


WORKER = """
import sys
from prometheus_client import generate_latest
from gateway.telemetry.metrics import Metrics, process_registry
from gateway.config import Settings

metrics = Metrics(process_registry(), Settings())
for _ in range(int(sys.argv[1])):
    metrics.config_reloaded(ok=True)
metrics.publish()
if sys.argv[2] == "scrape":
    sys.stdout.write(generate_latest(metrics.registry).decode())
"""


def test_with_several_workers_metrics_add_up_across_processes(tmp_path: Path) -> None:
    environ = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    root = REPO

    def worker(reloads: int, then: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", WORKER, str(reloads), then], env=environ, cwd=root, capture_output=True, text=True, check=True
        )
        return run.stdout

    worker(2, "exit")
    worker(3, "exit")
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(worker(0, "scrape"))
        for sample in family.samples
    }
    assert scraped[("ims_gateway_config_reloads_total", (("result", "success"),))] == 5
    build = (("python", platform.python_version()), ("version", __version__))
    assert scraped[("ims_gateway_build_info", build)] == 1
    assert not any(name.startswith("process_") for name, _ in scraped)


def test_build_app_uses_the_registry_it_is_given() -> None:
    registry = CollectorRegistry()
    app = build_app(make_settings(upstream={"url": "http://127.0.0.1:1"}), registry=registry)
    assert app[METRICS].registry is registry
    assert registry.get_sample_value("ims_gateway_config_last_reload_successful") == 1
    other = build_app(make_settings(upstream={"url": "http://127.0.0.1:1"}))
    assert other[METRICS].registry is not registry


# -- cardinality -----------------------------------------------------------------------

# The label values the README documents, written out here: the gateway's own sets are
# checked against them, not taken from them.
KNOWN_LABEL_VALUES = {
    "method": {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"},
    "route": {"image_patch", "image_data", "images", "other"},
    "status_class": {"1xx", "2xx", "3xx", "4xx", "5xx", "aborted"},
    "kind": {"refused", "timeout", "reset", "tls"},
    "stage": {"before_response", "mid_stream"},
    "shape": {"v2.0", "v2.1", "unsupported"},
    "outcome": {"forwarded", "rewritten", "rejected", "conflict", "upstream_answer", "upstream_error", "aborted", "other"},
    "mode": {"enforce", "observe"},
    "reason": {
        "unsupported_media_type", "missing_body", "malformed_json", "bad_body_type", "bad_operation_object",
        "missing_op", "bad_op", "missing_path", "bad_pointer", "bad_depth", "missing_value", "read_only",
        "reserved", "duplicate_member", "forbidden_attribute", "too_large", "body_timeout", "content_encoding",
        "method_override", "brownout", "sunset", "other", "too_deep", "routing_header", "connection_header",
        "bad_target", "http_version", "signature",
    },
    "op": {"add", "remove", "replace"},
    "attribute_class": {"name", "description", "custom", "system"},
    "result": {"success", "failure"},
    "header": {
        "script_name", "path_info", "request_method", "query_string", "request_uri", "remote_user",
        "x_forwarded_prefix", "x_script_name", "x_original_url", "x_original_uri", "x_rewrite_url",
        "x_forwarded_uri", "x_forwarded_path", "x_envoy_original_path", "x_original_method", "underscore",
    },
    "action": {"dropped", "refused"},
    "handling": {"passed_through", "resigned", "refused"},
    "version": {__version__},
    "python": {platform.python_version()},
}


def test_the_label_sets_are_the_documented_ones() -> None:
    assert {name: set(values) for name, values in LABEL_VALUES.items()} == {
        name: values for name, values in KNOWN_LABEL_VALUES.items() if name not in ("version", "python")
    }


def series_and_clients(gateway: Gateway) -> tuple[int, set[str]]:
    """How many ims_gateway_ samples the registry holds, and the client labels among them;
    every other label value must come from its known set."""
    clients: set[str] = set()
    series = 0
    for family in registry_of(gateway).collect():
        if not family.name.startswith("ims_gateway_"):
            continue
        for sample in family.samples:
            series += 1
            for name, label in sample.labels.items():
                if name == "client":
                    clients.add(label)
                elif name != "le":
                    assert label in KNOWN_LABEL_VALUES[name], (family.name, name, label)
    return series, clients


async def test_label_sets_stay_bounded_under_adversarial_traffic(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    cap = 10
    gateway = await make_gateway(recorder.url, metrics={"client_label_cap": cap})
    image_ids = [str(uuid.uuid4()) for _ in range(3000)]

    async def one(n: int) -> None:
        image_id = image_ids[n]
        # Distinct product tokens, and User-Agents that carry the image id or a token.
        user_agent = (f"c{n}/1.{n} (token tok-{image_id})", f"{image_id}/1", f"tok-{image_id} x")[n % 3]
        headers = {"User-Agent": user_agent, "X-Auth-Token": f"tok-{image_id}", "Content-Type": (V20, V21, f"x/{n}")[n % 3]}
        body = (RENAME_V20, RENAME_V21, "[]")[n % 3].replace("/name", f"/attr_{image_id}")
        method = ("PATCH", "GET", f"M{n}", "PATCH")[n % 4]
        path = (f"/v2/images/{image_id}", f"/v2/images/{image_id}/file", f"/{image_id}?q={n}")[n % 5 % 3]
        async with http.request(method, gateway.url + path, data=body, headers=headers) as response:
            await response.read()

    async def batch(numbers: range) -> None:
        for start in range(numbers.start, numbers.stop, 100):
            await asyncio.gather(*(one(n) for n in range(start, min(start + 100, numbers.stop))))

    await batch(range(1500))
    series, clients = series_and_clients(gateway)
    assert "other" in clients
    admitted = clients - {"other"}
    assert len(admitted) == cap
    assert all(re.fullmatch(r"c\d+", label) for label in admitted)
    await batch(range(1500, 3000))
    assert series_and_clients(gateway) == (series, clients)
    # An image PATCH call: a PATCH of an image path, or any request with a json-patch body
    # (llhttp refuses the made-up methods M<n> before anything is counted).
    image_patches = sum(
        1 for n in range(3000) if n % 4 != 2 and ((n % 4 in (0, 3) and n % 5 != 2) or n % 3 in (0, 1))
    )
    assert total(gateway, "ims_gateway_deprecated_calls_total") == image_patches
    async with http.get(gateway.admin_url + "/metrics", headers={"Accept-Encoding": "identity"}) as response:
        text = await response.text()
    assert not any(image_id in text for image_id in image_ids)
    assert "tok-" not in text
    assert "attr_" not in text


async def test_reloaded_label_rules_and_report_bound_apply_to_the_next_patch(
    proxied: Gateway, http: aiohttp.ClientSession
) -> None:
    async def patch(user_agent: str, project: str) -> None:
        headers = {"Content-Type": V21, "User-Agent": user_agent, "X-Project-Id": project}
        async with http.patch(proxied.url + "/v2/images/abc", data=RENAME_V21, headers=headers) as response:
            assert response.status == 200

    for project in ("p1", "p2", "p3"):
        await patch("HashiCorp Terraform/1.5.7 terraform-provider-huaweicloud/1.60", project)
    runtime = proxied.app[RUNTIME]
    reloaded = make_settings(
        upstream={"url": "http://unused.example"},
        metrics={"client_label_map": ["terraform-provider-huaweicloud=terraform"]},
        report={"max_clients": 2},
    )
    runtime.config = Config.from_settings(reloaded, generation=1)
    await patch("HashiCorp Terraform/1.5.7 terraform-provider-huaweicloud/1.60", "p4")
    client_calls = "ims_gateway_deprecated_client_calls_total"
    assert value(proxied, client_calls, client="hashicorp", shape="v2.1") == 3
    assert value(proxied, client_calls, client="terraform", shape="v2.1") == 1
    report = proxied.app[METRICS].report
    assert [(e.client, e.project_id) for e in report.entries()] == [("terraform", "p4"), ("hashicorp", "p3")]
    assert report.evicted == 2
