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
from typing import TYPE_CHECKING, Any, Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler

from gateway import __version__
from gateway.config.schema import MetricsSettings, ReportSettings, Settings
from gateway.edge.headers import X_FORWARDED_FOR
from gateway.patch.parser import PatchError, shape_of
from gateway.patch.retirement import parse_instant
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
    SUNSET,
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

# Distinct sets of facts a tally holds before it is folded at once.
TALLY_LIMIT: Final = 1024
# What one request is counted by (``Metrics._finish``): method, route, status class,
# (failure kind, stage) or None, outcome, mode, reason, dropped routing-header labels,
# refused ones, signature handling, and an image PATCH's ``calls.CallFacts`` (or None).
Facts = tuple[Any, ...]

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
        registry.register(Collector(self.counts, self.share, before=self.fold))
        self.clock = clock
        self._metrics_settings: MetricsSettings = settings.metrics
        self._report_settings: ReportSettings = settings.report
        self._tally: dict[Facts, list[Any]] = {}
        self.clients = clients.ClientLabels(_rules(settings.metrics), settings.metrics.client_label_cap)
        self.report = fleet.FleetReport.from_settings(settings.report, clock=clock, counts=self.counts)
        self.report.before_flush = self.fold
        values = self.counts.values
        values[BUILD_INFO][(__version__, platform.python_version())] = 1
        values[CONFIG_LAST_RELOAD_SUCCESSFUL][()] = 1
        self.configured(settings)
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
    #
    # A request adds its facts to a tally (one dict entry per distinct set of facts)
    # and its duration and sizes to their numbers. ``fold`` turns the tally into the
    # families, the migration report and the client labels' counts: before every
    # scrape, every /deprecations read and publication, about once a second, and when
    # the tally has TALLY_LIMIT distinct entries. The per-call log line is handed to
    # the log thread with the facts it is made of (``calls.write_log_line``).

    def request_started(self, context: RequestContext) -> None:
        self._in_flight[(context.route,)] += 1

    def observe(self, request: web.BaseRequest, context: RequestContext, response: web.StreamResponse, seconds: float) -> None:
        """Count a request the gateway answered (by itself or by relaying IMS)."""
        # A prepared response was relayed (and counted as it streamed); ours has its body still.
        prepared = response.prepared
        sent = context.response_bytes if prepared else response.content_length or 0
        status = response.status
        self._finish(request, context, _STATUS_CLASS_OF.get(status // 100, OTHER), status, seconds, sent, prepared)

    def request_aborted(self, request: web.BaseRequest, context: RequestContext, exc: BaseException, seconds: float) -> None:
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
        route = context.route
        key = (route,)
        self._in_flight[key] -= 1
        self._duration[key].observe(seconds)
        if context.upstream_seconds is not None:
            self._upstream_duration[key].observe(context.upstream_seconds)
        received = request.content.total_bytes
        if received:
            self._request_bytes[key] += received
        if sent:
            self._response_bytes[key] += sent
        failure = context.upstream_failure
        method = request.method
        signed = context.signed
        facts: Facts = (
            method if method in _METHODS else OTHER,
            route,
            status_label,
            None if failure is None else (failure.kind, Stage.MID_STREAM if prepared else Stage.BEFORE_RESPONSE),
            context.outcome,
            context.mode,
            context.reason,
            tuple([label for _, label in context.dropped_headers]) if context.dropped_headers else (),
            context.refused_headers,
            None if signed is None else signed.handling,
            None if route is not Route.IMAGE_PATCH else self._call_facts(request, context, status_label, status),
        )
        tally = self._tally
        seen = tally.get(facts)
        now = self.clock()
        if seen is None:
            tally[facts] = [1, now, now]  # how many, first and last seen
            if len(tally) >= TALLY_LIMIT:
                self.fold()
        else:
            seen[0] += 1
            seen[2] = now

    def _call_facts(self, request: web.BaseRequest, context: RequestContext, status_label: str, status: int | None) -> calls.CallFacts:
        """What an image PATCH adds to the report and its log line, beyond the request's own facts."""
        self._follow(context.config.settings)
        headers = request.headers
        user_agent = headers.get(hdrs.USER_AGENT)
        classify = context.config.policy.classify
        signed = context.signed
        outcome = _outcome(context, status_label)
        facts = calls.CallFacts(
            self.clients.label(user_agent),
            user_agent,
            request.remote or "",
            headers.get(X_FORWARDED_FOR),
            headers.get(calls.X_PROJECT_ID),
            context.shape or _shape_of(request),
            context.mode or Mode.ENFORCE,
            outcome,
            (context.reason or Reason.OTHER) if outcome is Outcome.REJECTED else None,
            status,
            tuple([(change.op, classify(change)) for change in context.changes]),
            None if signed is None else signed.handling,
            None if signed is None else signed.shown_key,
        )
        calls.write_log_line(context.request_id, facts)
        return facts

    def fold(self) -> None:
        """Add the tally to the families, the report and the client counts; start a new tally."""
        tally, self._tally = self._tally, {}
        if not tally:
            return
        requests, refused, routing, signed_requests = self._requests, self._refused, self._routing_headers, self._signed
        for facts, (times, first_at, last_at) in tally.items():
            method, route, status_label, failure, outcome, mode, reason, dropped, refused_labels, signed, call = facts
            requests[(method, route, status_label)] += times
            if failure is not None:
                self._upstream_errors[failure] += times
            if outcome is Outcome.REJECTED and mode is not Mode.OBSERVE and reason is not None:
                refused[(reason,)] += times
            for label in dropped:
                routing[(label, "dropped")] += times
            for label in refused_labels:
                routing[(label, "refused")] += times
            if signed is not None:
                signed_requests[(signed,)] += times
            if call is not None:
                self._fold_call(call, times, first_at, last_at)

    def _fold_call(self, call: calls.CallFacts, times: int, first_at: float, last_at: float) -> None:
        shape, mode = call.shape, call.mode
        self._calls[(shape, call.outcome, mode)] += times
        if call.reason is not None:
            self._rejections[(shape, call.reason, mode)] += times
        for op, kind in call.changes:
            self._operations[(shape, op, kind)] += times
        self._client_calls[(call.client, shape)] += times
        if call.signature is not None:
            self._signed_calls[(shape, call.signature)] += times
        self.report.record(call.deprecated_call(last_at), times, first_seen=first_at)

    def _follow(self, settings: Settings) -> None:
        """Take up reloaded [metrics] and [report] settings (of the last request counted)."""
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

    def configured(self, settings: Settings) -> None:
        """Export what the running configuration schedules, the sunsets: at start, and after every applied reload."""
        sunsets = self.counts.values[SUNSET]
        sunsets.clear()
        for shape in (Shape.V20, Shape.V21):
            moment = settings.deprecation.announcement(shape).sunset_at
            if moment:
                sunsets[(shape.value,)] = parse_instant(moment).timestamp()

    def publish(self) -> None:
        """Leave this worker's numbers where the other workers read them (no-op for one process)."""
        self.fold()
        if self.share is not None:
            self.share.publish(self.counts)

    async def publishing(self) -> AsyncIterator[None]:
        """While the gateway runs: fold the tally and publish about once a second, and once more
        when it stops; the migration report meanwhile flushes to its store (``fleet.FleetReport.flushing``)."""
        async with self.report.flushing():
            async for _ in self._publishing_numbers():
                yield

    async def _publishing_numbers(self) -> AsyncIterator[None]:

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
