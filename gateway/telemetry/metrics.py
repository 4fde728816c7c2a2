"""Prometheus metrics: definitions, bounded label values, and what one request adds to them.

Every label value comes from a fixed set below, the route classes, the upstream failure
kinds, or ``clients.ClientLabels`` (capped): never an image id, a token, a path or a
User-Agent. Anything outside a set is counted as ``other``.

The middleware calls ``request_started`` and then ``observe`` (or ``request_aborted``)
once per request; label children are bound once and kept, because this runs on every
request. Counter and gauge steps are summed per event-loop turn and added once at its
end (``flush``): under load one turn answers many requests, and prometheus-client's
per-increment cost was a tenth of a PATCH's (issue 8). Whatever reads the metrics
(the registry, /metrics) flushes first, so no reader sees a count late.

With PROMETHEUS_MULTIPROC_DIR set (``serve --workers N``) every worker writes its values
there and /metrics adds up all of them; the gauges say how (``multiprocess_mode``).
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from gateway import __version__
from gateway.config.schema import MetricsSettings, ReportSettings, Settings
from gateway.patch import parser as patch
from gateway.telemetry import clients, report
from gateway.vocabulary import AttributeClass, Mode, Outcome, Reason, Route, Shape

if TYPE_CHECKING:
    from gateway.context import RequestContext

PREFIX: Final = "ims_gateway_"
OTHER: Final = "other"

# From a millisecond JSON answer to an hour-long multi-GB image transfer.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ROUTES: Final = tuple(route.value for route in Route)
ABORTED: Final = "aborted"  # no complete answer: the client went away mid-request
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", ABORTED)
UPSTREAM_ERROR_KINDS: Final = ("refused", "timeout", "reset", "tls")
# before_response: no answer from IMS (the client got a 502/504); mid_stream: IMS failed
# after the answer started and the client connection was aborted.
UPSTREAM_ERROR_STAGES: Final = ("before_response", "mid_stream")

SHAPES: Final = tuple(shape.value for shape in Shape)
OUTCOMES: Final = tuple(outcome.value for outcome in Outcome)
MODES: Final = tuple(mode.value for mode in Mode)
REJECTION_REASONS: Final = tuple(reason.value for reason in Reason)
OPS: Final = patch.OPS
ATTRIBUTE_CLASSES: Final = tuple(kind.value for kind in AttributeClass)
CONFIG_RELOAD_RESULTS: Final = ("success", "failure")

_OUTCOMES: Final = frozenset(OUTCOMES)
_MODES: Final = frozenset(MODES)
_REASONS: Final = frozenset(REJECTION_REASONS)
_STATUS_CLASS_OF: Final = {n: f"{n}xx" for n in range(1, 6)}


MULTIPROC_DIR: Final = "PROMETHEUS_MULTIPROC_DIR"


def _multiprocess() -> bool:
    # prometheus-client itself decides on this variable, once, at import.
    return bool(os.environ.get(MULTIPROC_DIR))


def process_registry() -> CollectorRegistry:
    """A new registry with the process, platform and GC collectors (memory, CPU, file descriptors).

    With several workers these would describe only the one answering the scrape: left out.
    """
    registry = CollectorRegistry()
    if not _multiprocess():
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def exposition_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What /metrics serves: ``registry``, or with several workers the sum of all of them."""
    if not _multiprocess():
        return registry
    combined = CollectorRegistry()
    MultiProcessCollector(combined)
    return combined


def status_class(status: int) -> str:
    return _STATUS_CLASS_OF.get(status // 100, OTHER)


_Child = TypeVar("_Child", bound=MetricWrapperBase)


def _child(cache: dict[tuple[str, ...], _Child], metric: _Child, key: tuple[str, ...]) -> _Child:
    """``metric.labels(*key)``, bound once: ``labels()`` takes a lock and builds tuples each call."""
    child = cache.get(key)
    if child is None:
        child = cache[key] = metric.labels(*key)
    return child


def _shape_of(request: web.Request) -> str:
    try:
        return patch.shape_of(request.headers.get(hdrs.CONTENT_TYPE)).value
    except patch.PatchError:
        return "unsupported"


class Metrics:
    """The gateway's metrics on one registry, and the migration report they feed."""

    def __init__(
        self,
        registry: CollectorRegistry,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self._pending: dict[MetricWrapperBase, float] = {}
        # Registered before the metrics themselves: a collection flushes, then reads.
        registry.register(_FlushFirst(self))
        self.exposition = exposition_registry(registry)
        self.clock = clock
        self._metrics_settings: MetricsSettings = settings.metrics
        self._report_settings: ReportSettings = settings.report
        self.clients = clients.ClientLabels(_rules(settings.metrics), settings.metrics.client_label_cap)
        self.report = report.MigrationReport(settings.report.max_clients, clock)

        def name(text: str) -> str:
            return PREFIX + text

        # A gauge rather than an Info: an Info is not shared between workers.
        Gauge(
            name("build_info"), "The running ims-gateway: always 1.", ("version", "python"),
            registry=registry, multiprocess_mode="livemax",
        ).labels(__version__, platform.python_version()).set(1)
        self.requests = Counter(
            name("requests_total"),
            "Requests answered, by method (the usual ones, else other), route class and status class.",
            ("method", "route", "status_class"),
            registry=registry,
        )
        self.request_duration = Histogram(
            name("request_duration_seconds"),
            "Time from the request's headers to the end of the gateway's answer (the last byte, when streamed).",
            ("route",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            name("upstream_duration_seconds"),
            "Time IMS took to answer a request (from sending it, upload included, to IMS's response headers); "
            "a v2.0 add check's GET and the PATCH are summed.",
            ("route",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.request_bytes = Counter(
            name("request_body_bytes_total"), "Request body bytes received from clients.", ("route",), registry=registry
        )
        self.response_bytes = Counter(
            name("response_body_bytes_total"), "Response body bytes sent to clients.", ("route",), registry=registry
        )
        self.in_flight = Gauge(
            name("requests_in_flight"), "Requests being answered now.", ("route",),
            registry=registry, multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            name("upstream_errors_total"),
            "Requests IMS failed: no answer (before_response: the client got 502/504) or a broken answer (mid_stream).",
            ("kind", "stage"),
            registry=registry,
        )
        self.deprecated_calls = Counter(
            name("deprecated_calls_total"),
            "PATCH /v2/images/{id} calls (the whole API is deprecated), by body shape, outcome and mode.",
            ("shape", "outcome", "mode"),
            registry=registry,
        )
        self.deprecated_operations = Counter(
            name("deprecated_operations_total"),
            "Operations in parsed PATCH /v2/images/{id} bodies, refused ones included, by shape, op and attribute class.",
            ("shape", "op", "attribute_class"),
            registry=registry,
        )
        self.rejections = Counter(
            name("deprecated_rejections_total"),
            "PATCH /v2/images/{id} calls the gateway refused (observe mode: would have refused), by shape, reason and mode.",
            ("shape", "reason", "mode"),
            registry=registry,
        )
        self.client_calls = Counter(
            name("deprecated_client_calls_total"),
            "PATCH /v2/images/{id} calls by client label (from the User-Agent, capped) and shape.",
            ("client", "shape"),
            registry=registry,
        )
        self.config_reloads = Counter(
            name("config_reloads_total"), "Configuration reloads, by result.", ("result",), registry=registry
        )
        self.config_last_reload_successful = Gauge(
            name("config_last_reload_successful"),
            "1 when the last configuration reload succeeded (or none was tried), else 0 (any worker).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.config_last_reload_successful.set(1)
        self._bind()

    def _bind(self) -> None:
        """Bind the small label sets now, so that their series exist at 0 from the start
        (ratios and ``rate()`` need them); the larger ones are bound on first use."""
        self._in_flight = {route: self.in_flight.labels(route) for route in ROUTES}
        self._duration = {route: self.request_duration.labels(route) for route in ROUTES}
        self._upstream_duration = {route: self.upstream_duration.labels(route) for route in ROUTES}
        self._request_bytes = {route: self.request_bytes.labels(route) for route in ROUTES}
        self._response_bytes = {route: self.response_bytes.labels(route) for route in ROUTES}
        self._upstream_errors = {
            (kind, stage): self.upstream_errors.labels(kind, stage)
            for kind in UPSTREAM_ERROR_KINDS
            for stage in UPSTREAM_ERROR_STAGES
        }
        self._calls = {
            (shape, outcome, mode): self.deprecated_calls.labels(shape, outcome, mode)
            for shape in SHAPES
            for outcome in OUTCOMES
            for mode in MODES
        }
        self._reloads = {result: self.config_reloads.labels(result) for result in CONFIG_RELOAD_RESULTS}
        self._requests: dict[tuple[str, ...], Counter] = {}
        self._operations: dict[tuple[str, ...], Counter] = {}
        self._rejections: dict[tuple[str, ...], Counter] = {}
        self._client_calls: dict[tuple[str, ...], Counter] = {}

    # -- per request ---------------------------------------------------------------

    def _add(self, child: MetricWrapperBase, amount: float = 1) -> None:
        """Step a bound counter or gauge by ``amount`` at the end of this event-loop turn."""
        pending = self._pending
        if not pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop (a synchronous caller): at once
                child.inc(amount)  # type: ignore[attr-defined]
                return
        pending[child] = pending.get(child, 0) + amount

    def flush(self) -> None:
        """Add up the steps of this turn (a collection calls it too)."""
        pending, self._pending = self._pending, {}
        for child, amount in pending.items():
            if amount:
                child.inc(amount)  # type: ignore[attr-defined]

    def request_started(self, context: RequestContext) -> None:
        self._add(self._in_flight[context.route], 1)

    def observe(
        self, request: web.Request, context: RequestContext, response: web.StreamResponse, seconds: float
    ) -> None:
        """Count a request the gateway answered (by itself or by relaying IMS)."""
        # A prepared response was relayed (and counted as it streamed); ours has its body still.
        prepared = response.prepared
        sent = context.response_bytes if prepared else response.content_length or 0
        self._finish(request, context, status_class(response.status), response.status, seconds, sent, prepared)

    def request_aborted(
        self, request: web.Request, context: RequestContext, exc: BaseException, seconds: float
    ) -> None:
        """Count a request whose handler raised: the client went away, or a bug (aiohttp answers 500/504)."""
        gone = isinstance(exc, asyncio.CancelledError | ConnectionError)
        sent = context.response_bytes
        self._finish(request, context, ABORTED if gone else "5xx", None, seconds, sent, sent > 0)

    def _finish(
        self,
        request: web.Request,
        context: RequestContext,
        status_label: str,
        status: int | None,
        seconds: float,
        sent: int,
        prepared: bool,
    ) -> None:
        route = context.route
        self._add(self._in_flight[route], -1)
        method = request.method if request.method in METHODS else OTHER
        self._add(_child(self._requests, self.requests, (method, route, status_label)))
        self._duration[route].observe(seconds)
        if context.upstream_seconds is not None:
            self._upstream_duration[route].observe(context.upstream_seconds)
        received = request.content.total_bytes
        if received:
            self._add(self._request_bytes[route], received)
        if sent:
            self._add(self._response_bytes[route], sent)
        failure = context.upstream_failure
        if failure is not None:
            stage = "mid_stream" if prepared else "before_response"
            self._add(_child(self._upstream_errors, self.upstream_errors, (failure.kind, stage)))
        if route is Route.IMAGE_PATCH:
            self._deprecated_call(request, context, status, status_label)

    # -- PATCH /v2/images/{id} -----------------------------------------------------

    def _deprecated_call(
        self, request: web.Request, context: RequestContext, status: int | None, status_label: str
    ) -> None:
        settings = context.config.settings
        self._follow(settings)
        shape = context.shape if context.shape in SHAPES else _shape_of(request)
        mode = context.mode if context.mode in _MODES else "enforce"
        outcome = _outcome(context, status_label)
        reason = (context.reason if context.reason in _REASONS else OTHER) if outcome == "rejected" else None
        self._add(self._calls[(shape, outcome, mode)])
        if reason is not None:
            self._add(_child(self._rejections, self.rejections, (shape, reason, mode)))
        classify = context.config.policy.classify
        changes = [(change.op, classify(change).value) for change in context.changes]
        for op, kind in changes:
            self._add(_child(self._operations, self.deprecated_operations, (shape, op, kind)))
        client = self.clients.label(request.headers.get(hdrs.USER_AGENT))
        self._add(_child(self._client_calls, self.client_calls, (client, shape)))
        call = report.DeprecatedCall.of(
            request,
            request_id=context.request_id,
            client=client,
            shape=shape,
            mode=mode,
            outcome=outcome,
            reason=reason,
            status=status,
            changes=changes,
            at=self.clock(),
        )
        self.report.record(call)
        report.write_log_line(call)

    def _follow(self, settings: Settings) -> None:
        """Take up reloaded [metrics] and [report] settings (the request's own generation)."""
        if settings.metrics is not self._metrics_settings:
            self._metrics_settings = settings.metrics
            self.clients.reconfigure(_rules(settings.metrics), settings.metrics.client_label_cap)
        if settings.report is not self._report_settings:
            self._report_settings = settings.report
            self.report.resize(settings.report.max_clients)

    # -- configuration ---------------------------------------------------------------

    def config_reloaded(self, ok: bool) -> None:
        """Count a configuration reload attempt; call it from the reload code."""
        self._reloads["success" if ok else "failure"].inc()
        self.config_last_reload_successful.set(1 if ok else 0)


def _rules(settings: MetricsSettings) -> list[clients.Rule]:
    return [clients.parse_rule(text) for text in settings.client_label_map]


def _outcome(context: RequestContext, status_label: str) -> str:
    if context.upstream_failure is not None:
        return "upstream_error"
    outcome = context.outcome
    if outcome is None:
        # Refused before the PATCH pipeline started (e.g. a method-override header).
        if status_label == ABORTED:
            return ABORTED
        return "rejected" if status_label in ("4xx", "5xx") else OTHER
    return outcome if outcome in _OUTCOMES else OTHER


class _FlushFirst:
    """A collector that yields nothing: it makes a collection flush the pending steps first."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        self.metrics.flush()
        return []


def handler(metrics: Metrics) -> Handler:
    """/metrics: prometheus-client's own aiohttp exposition, this worker's steps flushed first."""
    expose = make_aiohttp_handler(registry=metrics.exposition)

    async def serve(request: web.Request) -> web.Response:
        metrics.flush()
        return await expose(request)

    return serve
