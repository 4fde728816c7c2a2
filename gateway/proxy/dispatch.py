"""Every request: give it an id and a context, refuse what must not pass, forward the rest.

``Traffic`` is the traffic listener's one handler, served by aiohttp's low-level server
(no Application router or middleware: the gate, not a router, decides on every target).
Image PATCHes go to ``gateway.proxy.images``; everything else streams through unchanged.
Every refusal, wherever it is raised, is rendered here as an IMS-shaped error.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from gateway.context import CONTEXT, RequestContext
from gateway.edge import errors, upstream
from gateway.edge.headers import X_REQUEST_ID, request_id_for
from gateway.patch.target import classify, media_types, names_json_patch
from gateway.proxy import gate, images, signed
from gateway.telemetry.logs import AccessLog
from gateway.vocabulary import Route, Signature

if TYPE_CHECKING:
    from gateway.service.state import Runtime
    from gateway.telemetry.metrics import Metrics


_NO_MEDIA: frozenset[str] = frozenset()


class Traffic:
    """The gateway listener's handler: its configuration, metrics, access log and upstream.

    ``upstream`` is set when the app starts (the pool and the session need a running loop).
    """

    __slots__ = ("access_log", "metrics", "runtime", "upstream")

    def __init__(self, runtime: Runtime, metrics: Metrics, access_log: AccessLog | None = None) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.access_log = access_log if access_log is not None else AccessLog()
        self.upstream: upstream.Upstream | None = None

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """One request, start to finish: decided, answered, counted and logged."""
        config = self.runtime.config
        headers = request.headers
        content_types = headers.getall(hdrs.CONTENT_TYPE, ())
        media = media_types(content_types) if content_types else _NO_MEDIA
        context = RequestContext(
            request_id=request_id_for(headers),
            route=classify(request.method, request.raw_path, json_patch=names_json_patch(media)),
            config=config,
            media_types=media,
        )
        request[CONTEXT] = context  # for the server's own error answers (a bug's 500)
        metrics = self.metrics if config.settings.metrics.enabled else None
        if metrics is not None:
            metrics.request_started(context)
        started = time.perf_counter()
        try:
            response = await self._dispatch(request, context)
        except errors.GatewayError as exc:
            if isinstance(exc, errors.UpstreamError):
                context.upstream_failure = exc.failure
            response = errors.error_response(
                exc.status, exc.code, exc.message,
                request_id=context.request_id, headers=exc.headers, details=exc.details, reason=exc.reason,
            )  # fmt: skip
        except BaseException as exc:
            if metrics is not None:
                metrics.request_aborted(request, context, exc, time.perf_counter() - started)
            raise
        if not response.prepared:
            response.headers[X_REQUEST_ID] = context.request_id
        if hdrs.UPGRADE in headers:
            # aiohttp stops reading a connection that asked to switch protocols (other than
            # to websocket): close it after this answer rather than stall what follows.
            # (A streamed answer is already under way: aiohttp reads keep_alive again after it.)
            response.force_close()
        elapsed = time.perf_counter() - started
        if metrics is not None:
            metrics.observe(request, context, response, elapsed)
        self.access_log.write(request.remote, request.method, context.route, response.status, elapsed, context.request_id)
        return response

    async def _dispatch(self, request: web.BaseRequest, context: RequestContext) -> web.StreamResponse:
        gateway_upstream = self.upstream
        if gateway_upstream is None:
            raise RuntimeError("Traffic.upstream is set when the app starts")
        signature = signed.inspect(request, context)
        gate.admit(request, context)
        if signature is not None and signature.handling is Signature.RESIGNED:
            settings = context.config.settings
            limit = settings.patch.max_body_bytes if context.route is Route.IMAGE_PATCH else signed.SIGNED_BODY_LIMIT
            context.body = await signed.verify(request, context, signature, limit, self.runtime.clock())
        if context.route is Route.IMAGE_PATCH:
            return await images.patch_image(request, context, gateway_upstream, self.runtime.clock())
        return await forward(request, context, gateway_upstream)


async def forward(request: web.BaseRequest, context: RequestContext, gateway_upstream: upstream.Upstream) -> web.StreamResponse:
    """Any request the gateway does not intercept: to the upstream and back, streamed."""
    headers = gateway_upstream.request_headers(request, context)
    data = context.body if context.body is not None else request.content if request.body_exists else None
    reply = await gateway_upstream.send(request.method, request.raw_path, headers, data, context)
    try:
        return await upstream.relay(request, reply, {X_REQUEST_ID: context.request_id}, context)
    finally:
        reply.release()


__all__ = ["Traffic", "forward"]
