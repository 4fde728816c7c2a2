"""What one request adds to the metrics, and the observers of image PATCH calls.

The dispatcher calls ``request_started`` and then ``observe`` (or ``request_aborted``)
once per request. They add to plain numbers (``counts.Counts``) and hand every image PATCH
call to the migration report and the per-call log line; prometheus-client reads the
numbers only when /metrics is scraped (``counts.Collector``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway import __version__
from gateway.config.schema import MetricsSettings, ReportSettings, Settings
from gateway.patch.parser import PatchError, shape_of
from gateway.telemetry import calls, clients, fleet
from gateway.telemetry.counts import Collector, Counts, WorkerShare
from gateway.telemetry.families import (
    ABORTED,
    BUILD_INFO,
    CLIENT_CALLS,
    CONFIG_LAST_RELOAD_SUCCESSFUL,
    CONFIG_RELOADS,
    DEPRECATED_CALLS,
    DEPRECATED_OPERATIONS,
    DEPRECATED_SIGNED_CALLS,
    IN_FLIGHT,
    METHODS,
    OTHER,
    REFUSED_REQUESTS,
    REJECTIONS,
    REQUEST_BYTES,
    REQUEST_DURATION,
    REQUESTS,
    RESPONSE_BYTES,
    ROUTING_HEADERS_SEEN,
    SIGNED_REQUESTS,
    UPSTREAM_DURATION,
    UPSTREAM_ERRORS,
)
from gateway.vocabulary import Mode, Outcome, Reason, ReloadResult, Route, Shape, Stage

if TYPE_CHECKING:
    from gateway.context import RequestContext

log = logging.getLogger("ims_gateway.metrics")

# Where the workers of `serve --workers N` leave their numbers (the name prometheus-client
# gives its own multiprocess directory; operators may set it to a directory of theirs).
SHARE_DIRECTORY: Final = "PROMETHEUS_MULTIPROC_DIR"
PUBLISH_SECONDS: Final = 1.0

_METHODS: Final = frozenset(METHODS)
_STATUS_CLASS_OF: Final = {n: f"{n}xx" for n in range(1, 6)}


def status_class(status: int) -> str:
    return _STATUS_CLASS_OF.get(status // 100, OTHER)


def worker_share() -> WorkerShare | None:
    """The shared directory of this run's workers, or None for a single process."""
    directory = os.environ.get(SHARE_DIRECTORY)
    return WorkerShare(Path(directory)) if directory else None


def process_registry() -> CollectorRegistry:
    """A new registry with the process, platform and GC collectors (memory, CPU, file descriptors).

    With several workers these would describe only the one answering the scrape: left out.
    """
    registry = CollectorRegistry()
    if worker_share() is None:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


class Metrics:
    """The gateway's numbers on one registry, and the migration report they feed."""

    def __init__(
        self,
        registry: CollectorRegistry,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        share: WorkerShare | None = None,
    ) -> None:
        self.registry = registry
        self.counts = Counts()
        self.share = share if share is not None else worker_share()
        registry.register(Collector(self.counts, self.share))
        self.clock = clock
        self._metrics_settings: MetricsSettings = settings.metrics
        self._report_settings: ReportSettings = settings.report
        self.clients = clients.ClientLabels(_rules(settings.metrics), settings.metrics.client_label_cap)
        self.report = fleet.FleetReport.from_settings(settings.report, clock=clock, counts=self.counts)
        values = self.counts.values
        values[BUILD_INFO][(__version__, platform.python_version())] = 1
        values[CONFIG_LAST_RELOAD_SUCCESSFUL][()] = 1
        # The series a request touches, looked up once here rather than on every request.
        self._requests = values[REQUESTS]
        self._in_flight = values[IN_FLIGHT]
        self._request_bytes = values[REQUEST_BYTES]
        self._response_bytes = values[RESPONSE_BYTES]
        self._upstream_errors = values[UPSTREAM_ERRORS]
        self._calls = values[DEPRECATED_CALLS]
        self._operations = values[DEPRECATED_OPERATIONS]
        self._rejections = values[REJECTIONS]
        self._client_calls = values[CLIENT_CALLS]
        self._refused = values[REFUSED_REQUESTS]
        self._routing_headers = values[ROUTING_HEADERS_SEEN]
        self._signed = values[SIGNED_REQUESTS]
        self._signed_calls = values[DEPRECATED_SIGNED_CALLS]
        self._duration = self.counts.histograms[REQUEST_DURATION]
        self._upstream_duration = self.counts.histograms[UPSTREAM_DURATION]

    # -- per request ---------------------------------------------------------------

    def request_started(self, context: RequestContext) -> None:
        self._in_flight[(context.route.value,)] += 1

    def observe(
        self, request: web.BaseRequest, context: RequestContext, response: web.StreamResponse, seconds: float
    ) -> None:
        """Count a request the gateway answered (by itself or by relaying IMS)."""
        # A prepared response was relayed (and counted as it streamed); ours has its body still.
        prepared = response.prepared
        sent = context.response_bytes if prepared else response.content_length or 0
        self._finish(request, context, status_class(response.status), response.status, seconds, sent, prepared)

    def request_aborted(
        self, request: web.BaseRequest, context: RequestContext, exc: BaseException, seconds: float
    ) -> None:
        """Count a request whose handler raised: the client went away, or a bug (aiohttp answers 500/504)."""
        gone = isinstance(exc, asyncio.CancelledError | ConnectionError)
        sent = context.response_bytes
        self._finish(request, context, ABORTED if gone else "5xx", None, seconds, sent, sent > 0)

    def _finish(
        self,
        request: web.BaseRequest,
        context: RequestContext,
        status_label: str,
        status: int | None,
        seconds: float,
        sent: int,
        prepared: bool,
    ) -> None:
        route = (context.route.value,)
        self._in_flight[route] -= 1
        method = request.method if request.method in _METHODS else OTHER
        self._requests[(method, route[0], status_label)] += 1
        self._duration[route].observe(seconds)
        if context.upstream_seconds is not None:
            self._upstream_duration[route].observe(context.upstream_seconds)
        received = request.content.total_bytes
        if received:
            self._request_bytes[route] += received
        if sent:
            self._response_bytes[route] += sent
        failure = context.upstream_failure
        if failure is not None:
            stage = Stage.MID_STREAM if prepared else Stage.BEFORE_RESPONSE
            self._upstream_errors[(failure.kind.value, stage.value)] += 1
        if context.outcome is Outcome.REJECTED and context.mode is not Mode.OBSERVE and context.reason is not None:
            self._refused[(context.reason.value,)] += 1
        for _, label in context.dropped_headers:
            self._routing_headers[(label, "dropped")] += 1
        for label in context.refused_headers:
            self._routing_headers[(label, "refused")] += 1
        if context.signed is not None:
            self._signed[(context.signed.handling.value,)] += 1
        if context.route is Route.IMAGE_PATCH:
            self._deprecated_call(request, context, status, status_label)

    # -- image PATCH calls ---------------------------------------------------------

    def _deprecated_call(
        self, request: web.BaseRequest, context: RequestContext, status: int | None, status_label: str
    ) -> None:
        self._follow(context.config.settings)
        shape = (context.shape or _shape_of(request)).value
        mode = (context.mode or Mode.ENFORCE).value
        outcome = _outcome(context, status_label)
        reason = (context.reason or Reason.OTHER).value if outcome is Outcome.REJECTED else None
        self._calls[(shape, outcome.value, mode)] += 1
        if reason is not None:
            self._rejections[(shape, reason, mode)] += 1
        classify = context.config.policy.classify
        changes = [(change.op, classify(change).value) for change in context.changes]
        for op, kind in changes:
            self._operations[(shape, op, kind)] += 1
        client = self.clients.label(request.headers.get(hdrs.USER_AGENT))
        self._client_calls[(client, shape)] += 1
        signed = context.signed
        if signed is not None:
            self._signed_calls[(shape, signed.handling.value)] += 1
        call = calls.DeprecatedCall.of(
            request,
            request_id=context.request_id,
            client=client,
            shape=shape,
            mode=mode,
            outcome=outcome.value,
            reason=reason,
            status=status,
            changes=changes,
            at=self.clock(),
            signature=signed.handling.value if signed is not None else None,
            access_key=signed.shown_key if signed is not None else None,
        )
        self.report.record(call)
        calls.write_log_line(call)

    def _follow(self, settings: Settings) -> None:
        """Take up reloaded [metrics] and [report] settings (the request's own generation)."""
        if settings.metrics is not self._metrics_settings:
            self._metrics_settings = settings.metrics
            self.clients.reconfigure(_rules(settings.metrics), settings.metrics.client_label_cap)
        if settings.report is not self._report_settings:
            self._report_settings = settings.report
            self.report.reconfigure(settings.report)

    # -- configuration and lifecycle -----------------------------------------------

    def config_reloaded(self, ok: bool) -> None:
        """Count a configuration reload attempt; call it from the reload code."""
        result = ReloadResult.SUCCESS if ok else ReloadResult.FAILURE
        self.counts.values[CONFIG_RELOADS][(result.value,)] += 1
        self.counts.values[CONFIG_LAST_RELOAD_SUCCESSFUL][()] = 1 if ok else 0

    def publish(self) -> None:
        """Leave this worker's numbers where the other workers read them (no-op for one process)."""
        if self.share is not None:
            self.share.publish(self.counts)

    async def publishing(self) -> AsyncIterator[None]:
        """While the gateway runs: publish about once a second, and once more when it stops;
        the migration report meanwhile flushes to its store (``fleet.FleetReport.flushing``)."""
        async with self.report.flushing():
            async for _ in self._publishing_numbers():
                yield

    async def _publishing_numbers(self) -> AsyncIterator[None]:
        if self.share is None:
            yield
            return

        async def every_second() -> None:
            while True:
                await asyncio.sleep(PUBLISH_SECONDS)
                try:
                    self.publish()
                except OSError as exc:
                    log.warning("cannot publish this worker's metrics: %s", exc)

        task = asyncio.create_task(every_second())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.publish()


def _rules(settings: MetricsSettings) -> list[clients.Rule]:
    return [clients.parse_rule(text) for text in settings.client_label_map]


def _shape_of(request: web.BaseRequest) -> Shape:
    try:
        return shape_of(request.headers.get(hdrs.CONTENT_TYPE))
    except PatchError:
        return Shape.UNSUPPORTED


def _outcome(context: RequestContext, status_label: str) -> Outcome:
    if context.upstream_failure is not None:
        return Outcome.UPSTREAM_ERROR
    if context.outcome is not None:
        return context.outcome
    # Refused before the PATCH pipeline decided (e.g. a method-override header).
    if status_label == ABORTED:
        return Outcome.ABORTED
    return Outcome.REJECTED if status_label in ("4xx", "5xx") else Outcome.OTHER


def handler(metrics: Metrics) -> Handler:
    """/metrics: prometheus-client's own aiohttp exposition (text or OpenMetrics, gzip when asked)."""
    expose = make_aiohttp_handler(registry=metrics.registry)

    async def serve(request: web.Request) -> web.StreamResponse:
        return await expose(request)

    return serve
