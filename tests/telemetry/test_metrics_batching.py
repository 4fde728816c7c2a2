"""Counter and gauge steps are added once per event-loop turn, and no reader ever sees them late."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from gateway.config.generation import Config
from gateway.context import RequestContext
from gateway.patch.target import Route
from gateway.telemetry.metrics import Metrics, handler
from tests.conftest import make_settings

REQUESTS = "ims_gateway_requests_total"
IN_FLIGHT = "ims_gateway_requests_in_flight"
GET_IMAGES = {"method": "GET", "route": "images", "status_class": "2xx"}


def answered(metrics: Metrics, config: Config, count: int) -> None:
    request = make_mocked_request("GET", "/v2/images")
    for n in range(count):
        context = RequestContext(f"req-{n}", Route.IMAGES, config)
        metrics.request_started(context)
        metrics.observe(request, context, web.Response(body=b"{}"), 0.001)


async def test_a_registry_read_in_the_same_turn_sees_every_step() -> None:
    settings = make_settings()
    registry = CollectorRegistry()
    metrics = Metrics(registry, settings)
    answered(metrics, Config.from_settings(settings), 5)
    assert registry.get_sample_value(REQUESTS, GET_IMAGES) == 5
    assert registry.get_sample_value(IN_FLIGHT, {"route": "images"}) == 0
    assert registry.get_sample_value("ims_gateway_response_body_bytes_total", {"route": "images"}) == 10


async def test_the_steps_of_a_turn_are_added_at_its_end_without_a_reader() -> None:
    settings = make_settings()
    registry = CollectorRegistry()
    metrics = Metrics(registry, settings)
    answered(metrics, Config.from_settings(settings), 3)
    await asyncio.sleep(0)
    child = metrics.requests.labels(*GET_IMAGES.values())
    assert [sample.value for sample in child.collect()[0].samples if sample.name == REQUESTS] == [3]


async def test_metrics_exposition_flushes_first() -> None:
    settings = make_settings()
    metrics = Metrics(CollectorRegistry(), settings)
    answered(metrics, Config.from_settings(settings), 2)
    response = await handler(metrics)(make_mocked_request("GET", "/metrics"))
    assert b'ims_gateway_requests_total{method="GET",route="images",status_class="2xx"} 2.0' in response.body


def test_without_an_event_loop_steps_are_added_at_once() -> None:
    settings = make_settings()
    registry = CollectorRegistry()
    metrics = Metrics(registry, settings)
    answered(metrics, Config.from_settings(settings), 2)
    child = metrics.requests.labels(*GET_IMAGES.values())
    assert [sample.value for sample in child.collect()[0].samples if sample.name == REQUESTS] == [2]
