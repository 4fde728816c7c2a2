"""Every request: give it an id and a context, refuse what must not pass, forward the rest.

Image PATCHes go to ``gateway.proxy.images``; everything else streams through unchanged.
Every refusal, wherever it is raised, is rendered here as an IMS-shaped error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from gateway.context import CONTEXT, RequestContext
from gateway.edge import errors, upstream
from gateway.edge.headers import X_REQUEST_ID, request_id_for
from gateway.patch.target import classify, is_json_patch
from gateway.proxy import gate, images, signed
from gateway.service.state import METRICS, RUNTIME, UPSTREAM
from gateway.vocabulary import Route, Signature

access_log = logging.getLogger("ims_gateway.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def gateway_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id and a context; render every refusal as an IMS-shaped error."""
    context = RequestContext(
        request_id=request_id_for(request),
        route=classify(request.method, request.raw_path, json_patch=is_json_patch(request.headers.getall(hdrs.CONTENT_TYPE, ()))),
        config=request.app[RUNTIME].config,
    )
    request[CONTEXT] = context
    gateway_metrics = request.app[METRICS] if context.config.settings.metrics.enabled else None
    if gateway_metrics is not None:
        gateway_metrics.request_started(context)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except errors.GatewayError as exc:
        if isinstance(exc, errors.UpstreamError):
            context.upstream_failure = exc.failure
        response = errors.error_response(
            exc.status, exc.code, exc.message, request_id=context.request_id, headers=exc.headers, details=exc.details
        )
    except web.HTTPException as exc:
        # aiohttp's own refusals (e.g. 413 past client_max_size) in our error shape.
        response = errors.error_response(
            exc.status, f"IMSGW.0{exc.status}", exc.reason, request_id=context.request_id
        )
    except BaseException as exc:
        if gateway_metrics is not None:
            gateway_metrics.request_aborted(request, context, exc, time.perf_counter() - started)
        raise
    if not response.prepared:
        response.headers[X_REQUEST_ID] = context.request_id
    if hdrs.UPGRADE in request.headers:
        # aiohttp stops reading a connection that asked to switch protocols (other than
        # to websocket): close it after this answer rather than stall what follows.
        # (A streamed answer is already under way: aiohttp reads keep_alive again after it.)
        response.force_close()
    elapsed = time.perf_counter() - started
    if gateway_metrics is not None:
        gateway_metrics.observe(request, context, response, elapsed)
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %s %d %.6f %s",
            request.remote,
            request.method,
            context.route,
            response.status,
            elapsed,
            context.request_id,
        )
    return response


async def forward(request: web.Request) -> web.StreamResponse:
    """Any request the gateway does not intercept: to the upstream and back, streamed."""
    context = request[CONTEXT]
    gateway_upstream = request.app[UPSTREAM]
    headers = gateway_upstream.request_headers(request, context)
    data = context.body if context.body is not None else request.content if request.body_exists else None
    async with gateway_upstream.exchange(request.method, request.raw_path, headers, data, context) as response:
        return await upstream.relay(request, response, {X_REQUEST_ID: context.request_id}, context)


async def dispatch(request: web.Request) -> web.StreamResponse:
    context = request[CONTEXT]
    signature = signed.inspect(request, context)
    gate.admit(request, context)
    if signature is not None and signature.handling is Signature.RESIGNED:
        limit = context.config.settings.patch.max_body_bytes if context.route is Route.IMAGE_PATCH else signed.SIGNED_BODY_LIMIT
        context.body = await signed.verify(request, context, signature, limit, request.app[RUNTIME].clock())
    if context.route is Route.IMAGE_PATCH:
        return await images.patch_image(request)
    return await forward(request)
