"""Plain numbers per request, the Prometheus view made at scrape time, and the workers' share."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config.generation import Config
from gateway.context import RequestContext
from gateway.telemetry.counts import Collector, Counts, WorkerShare, clear, forget_gauges, read_counts
from gateway.telemetry.families import IN_FLIGHT, REQUEST_DURATION, REQUESTS
from gateway.telemetry.metrics import Metrics, handler
from gateway.vocabulary import Route
from tests.conftest import make_settings

GET_IMAGES = {"method": "GET", "route": "images", "status_class": "2xx"}


def answered(metrics: Metrics, count: int) -> None:
    settings = make_settings()
    request = make_mocked_request("GET", "/v2/images")
    for n in range(count):
        context = RequestContext(f"req-{n}", Route.IMAGES, Config.from_settings(settings))
        metrics.request_started(context)
        metrics.observe(request, context, web.Response(body=b"{}"), 0.001)


def test_a_request_adds_to_a_tally_and_a_scrape_folds_it_in_at_once() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, make_settings())
    answered(metrics, 5)
    assert metrics.counts.values[REQUESTS][("GET", "images", "2xx")] == 0  # still in the tally
    assert registry.get_sample_value("ims_gateway_requests_total", GET_IMAGES) == 5
    assert metrics.counts.values[REQUESTS][("GET", "images", "2xx")] == 5
    assert registry.get_sample_value("ims_gateway_requests_in_flight", {"route": "images"}) == 0
    assert registry.get_sample_value("ims_gateway_response_body_bytes_total", {"route": "images"}) == 10
    answered(metrics, 2)
    assert registry.get_sample_value("ims_gateway_requests_total", GET_IMAGES) == 7


def test_the_view_has_no_created_series_and_nothing_that_was_never_counted() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, make_settings())
    answered(metrics, 1)
    text = generate_latest(registry).decode()
    assert "_created" not in text
    assert "ims_gateway_upstream_errors_total" not in text
    assert 'route="image_patch"' not in text
    assert text.count("ims_gateway_requests_total{") == 1


async def test_metrics_exposition_serves_the_numbers() -> None:
    metrics = Metrics(CollectorRegistry(), make_settings())
    answered(metrics, 2)
    response = await handler(metrics)(make_mocked_request("GET", "/metrics"))
    assert isinstance(response, web.Response)
    assert b'ims_gateway_requests_total{method="GET",route="images",status_class="2xx"} 2.0' in response.body


def test_histogram_bounds_are_inclusive_and_cumulative() -> None:
    counts = Counts()
    for seconds in (0.005, 0.0051, 0.5, 7200.0):
        counts.histograms[REQUEST_DURATION][("images",)].observe(seconds)
    registry = CollectorRegistry()
    registry.register(Collector(counts))
    bucket = "ims_gateway_request_duration_seconds_bucket"
    assert registry.get_sample_value(bucket, {"route": "images", "le": "0.005"}) == 1
    assert registry.get_sample_value(bucket, {"route": "images", "le": "0.01"}) == 2
    assert registry.get_sample_value(bucket, {"route": "images", "le": "0.5"}) == 3
    assert registry.get_sample_value(bucket, {"route": "images", "le": "3600.0"}) == 3
    assert registry.get_sample_value(bucket, {"route": "images", "le": "+Inf"}) == 4
    assert registry.get_sample_value("ims_gateway_request_duration_seconds_count", {"route": "images"}) == 4
    assert registry.get_sample_value("ims_gateway_request_duration_seconds_sum", {"route": "images"}) == 0.005 + 0.0051 + 0.5 + 7200.0


def _worker(directory: Path, pid: int, requests: int, in_flight: int) -> Counts:
    counts = Counts()
    counts.values[REQUESTS][("GET", "images", "2xx")] = requests
    counts.values[IN_FLIGHT][("images",)] = in_flight
    counts.histograms[REQUEST_DURATION][("images",)].observe(0.02)
    WorkerShare(directory, pid).publish(counts)
    return counts


def test_a_scrape_adds_every_workers_numbers_to_its_own(tmp_path: Path) -> None:
    _worker(tmp_path, 11, requests=3, in_flight=2)
    _worker(tmp_path, 12, requests=4, in_flight=1)
    own = Counts()
    own.values[REQUESTS][("GET", "images", "2xx")] = 5
    registry = CollectorRegistry()
    registry.register(Collector(own, WorkerShare(tmp_path, pid=13)))
    assert registry.get_sample_value("ims_gateway_requests_total", GET_IMAGES) == 12
    assert registry.get_sample_value("ims_gateway_requests_in_flight", {"route": "images"}) == 3
    assert registry.get_sample_value("ims_gateway_request_duration_seconds_count", {"route": "images"}) == 2
    # Its own published file is not counted twice.
    WorkerShare(tmp_path, pid=13).publish(own)
    assert registry.get_sample_value("ims_gateway_requests_total", GET_IMAGES) == 12


def test_a_dead_workers_counts_stay_and_its_gauges_go(tmp_path: Path) -> None:
    _worker(tmp_path, 21, requests=3, in_flight=2)
    forget_gauges(tmp_path, 21)
    forget_gauges(tmp_path, 99)  # never existed: nothing to do
    registry = CollectorRegistry()
    registry.register(Collector(Counts(), WorkerShare(tmp_path, pid=22)))
    assert registry.get_sample_value("ims_gateway_requests_total", GET_IMAGES) == 3
    assert registry.get_sample_value("ims_gateway_requests_in_flight", {"route": "images"}) is None
    assert read_counts(tmp_path / "ims-gateway-counts-21.json").values[REQUESTS][("GET", "images", "2xx")] == 3


def test_clear_empties_a_reused_directory_and_unreadable_files_are_skipped(tmp_path: Path) -> None:
    _worker(tmp_path, 31, requests=3, in_flight=0)
    (tmp_path / "ims-gateway-counts-32.json").write_text("not json")
    registry = CollectorRegistry()
    registry.register(Collector(Counts(), WorkerShare(tmp_path, pid=33)))
    assert registry.get_sample_value("ims_gateway_requests_total", GET_IMAGES) == 3
    clear(tmp_path)
    assert list(tmp_path.glob("ims-gateway-*.json")) == []
    assert registry.get_sample_value("ims_gateway_requests_total", GET_IMAGES) is None


def test_a_full_tally_is_folded_without_waiting_for_a_scrape() -> None:
    from gateway.telemetry.metrics import TALLY_LIMIT

    metrics = Metrics(CollectorRegistry(), make_settings())
    context = RequestContext("req", Route.IMAGE_PATCH, Config.from_settings(make_settings()))
    for n in range(TALLY_LIMIT):  # each a distinct set of facts: the call's own project
        request = make_mocked_request("PATCH", "/v2/images/x", headers={"X-Project-Id": f"p{n}"})
        metrics.request_started(context)
        metrics.observe(request, context, web.Response(status=200), 0.001)
    assert sum(metrics.counts.values[REQUESTS].values()) == TALLY_LIMIT
    assert len(metrics.report) == 1000  # report.max_clients: the least recently seen made room


async def test_the_tally_is_folded_every_publish_period_while_the_gateway_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from gateway.telemetry import metrics as metrics_module

    # The period is PUBLISH_SECONDS (1 s); a short one here, and waiting for the fold itself
    # rather than sleeping for "a period and a half": no race with a slow machine's loop.
    monkeypatch.setattr(metrics_module, "PUBLISH_SECONDS", 0.01)
    metrics = Metrics(CollectorRegistry(), make_settings())

    def folded() -> int:
        return metrics.counts.values[REQUESTS][("GET", "images", "2xx")]

    async def until_folded(count: int) -> None:
        async with asyncio.timeout(10):
            while folded() != count:
                await asyncio.sleep(0.005)

    publishing = metrics.publishing()
    await publishing.__anext__()
    try:
        answered(metrics, 3)
        assert folded() == 0  # in the tally until the next period
        await until_folded(3)
        answered(metrics, 2)  # and again: every period, not once
        await until_folded(5)
    finally:
        await publishing.aclose()
