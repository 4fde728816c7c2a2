"""The app factories: the gateway listener and the admin listener."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway import errors, images, metrics, reload, report, server, upstream
from gateway.context import (
    CONTEXT,
    LIFECYCLE,
    METRICS,
    RUNTIME,
    SETTINGS,
    UPSTREAM,
    UPSTREAM_URL,
    Config,
    Lifecycle,
    RequestContext,
    Runtime,
)
from gateway.deprecation import utc_now
from gateway.routes import Route, classify
from gateway.settings import Settings

log = logging.getLogger("ims_gateway")
access_log = logging.getLogger("ims_gateway.access")

REQUEST_ID_HEADERS = (upstream.X_REQUEST_ID, "X-Openstack-Request-Id")
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
# Method overrides let a POST act as a PATCH on some stacks: never let one past unchecked.
METHOD_OVERRIDE_HEADERS = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_for(request: web.Request) -> str:
    """The client's request id when it is a sane token, otherwise a fresh OpenStack-style one."""
    for name in REQUEST_ID_HEADERS:
        offered = request.headers.get(name)
        if offered and _SAFE_REQUEST_ID.fullmatch(offered):
            return offered
    return fresh_request_id()


def fresh_request_id() -> str:
    """req-<a version 4 UUID>: a correlation id, not a secret, so no system entropy per request."""
    digits = f"{random.getrandbits(128):032x}"
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"req-{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


@web.middleware
async def gateway_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every request an id and a context; render every refusal as an IMS-shaped error."""
    context = RequestContext(
        request_id=request_id_for(request),
        route=classify(request.method, request.raw_path),
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
        if isinstance(exc, upstream.UpstreamError):
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
        response.headers[upstream.X_REQUEST_ID] = context.request_id
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
    headers = gateway_upstream.request_headers(request, context.request_id)
    data = request.content if request.body_exists else None
    async with gateway_upstream.exchange(request.method, request.raw_path, headers, data, context) as response:
        return await upstream.relay(
            request, response, {upstream.X_REQUEST_ID: context.request_id}, context
        )


async def dispatch(request: web.Request) -> web.StreamResponse:
    server.check_framing(request)
    if not request.raw_path.startswith("/"):
        raise errors.GatewayError(
            400, errors.BAD_REQUEST, "The request target must be a path starting with '/' (origin-form)."
        )
    for name in METHOD_OVERRIDE_HEADERS:
        if name in request.headers:
            request[CONTEXT].outcome, request[CONTEXT].reason = "rejected", "method_override"
            raise errors.GatewayError(
                400, errors.BAD_REQUEST, f"The {name} header is not accepted: send the real method instead."
            )
    if request[CONTEXT].route is Route.IMAGE_PATCH:
        return await images.patch_image(request)
    return await forward(request)


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.upstream.verify_tls:
        log.warning(
            "upstream.verify_tls is false: the upstream's TLS certificate is NOT verified; "
            "anyone on the path can read and change the traffic, X-Auth-Token included"
        )
    session = upstream.create_session(settings.upstream)
    app[UPSTREAM] = upstream.Upstream(settings.upstream, app[UPSTREAM_URL], session)
    yield
    await session.close()


def build_app(
    settings: Settings,
    *,
    upstream_url: str | None = None,
    lifecycle: Lifecycle | None = None,
    clock: Callable[[], datetime] = utc_now,
    load: Callable[[], Settings] | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The gateway listener's app. ``upstream_url`` overrides settings.upstream.url (embedded emulator).

    ``clock`` is what brownout windows and the sunset are compared with; ``load`` re-reads
    the configuration sources for a reload (None: reloads are refused). The metrics go to
    ``registry`` (None: a new one, with the process collectors).
    """
    url = upstream_url or settings.upstream.url
    if not url:
        raise ValueError("build_app needs an upstream URL: settings.upstream.url or upstream_url")
    app = web.Application(middlewares=[gateway_errors], client_max_size=settings.patch.max_body_bytes)
    app[SETTINGS] = settings
    app[UPSTREAM_URL] = url
    app[LIFECYCLE] = lifecycle or Lifecycle()
    app[RUNTIME] = Runtime(Config.from_settings(settings), clock=clock, load=load)
    app[METRICS] = metrics.Metrics(registry if registry is not None else metrics.process_registry(), settings)
    app.cleanup_ctx.append(_upstream_session)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


READY_CACHE_SECONDS = 1.0


async def _check_upstream(gateway: web.Application) -> tuple[bool, str]:
    gateway_upstream = gateway[UPSTREAM]
    try:
        async with gateway_upstream.exchange("GET", "/", {}, None) as response:
            return True, f"upstream answered {response.status}"
    except errors.GatewayError as exc:
        return False, exc.message


def build_admin_app(gateway: web.Application) -> web.Application:
    """The admin listener: liveness, readiness, metrics, the migration report, reload."""
    lifecycle = gateway[LIFECYCLE]

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if lifecycle.draining:
            return web.json_response({"status": "draining"}, status=503)
        now = time.monotonic()
        if now - lifecycle.ready_checked_at >= READY_CACHE_SECONDS:
            lifecycle.ready, lifecycle.ready_reason = await _check_upstream(gateway)
            lifecycle.ready_checked_at = time.monotonic()
        status = 200 if lifecycle.ready else 503
        return web.json_response(
            {"status": "ready" if lifecycle.ready else "upstream unreachable", "upstream": lifecycle.ready_reason},
            status=status,
        )

    admin = web.Application()
    admin.router.add_get("/healthz", healthz)
    admin.router.add_get("/readyz", readyz)
    admin.router.add_get("/metrics", metrics.handler(gateway[METRICS]))
    admin.router.add_get("/deprecations", report.handler(gateway[METRICS].report))
    admin.router.add_post("/reload", reload.endpoint(gateway))
    return admin


def runner_options(settings: Settings) -> dict[str, object]:
    """AppRunner options shared by production and the test fixtures, so tests see what users see."""
    return {
        # Bodies must reach IMS exactly as sent: no decompression of gzip'd uploads.
        "auto_decompress": False,
        "max_line_size": settings.server.max_header_bytes,
        "max_field_size": settings.server.max_header_bytes,
        "keepalive_timeout": settings.server.keepalive_timeout,
        "read_bufsize": upstream.STREAM_CHUNK,
        "access_log": None,
    }


__all__ = [
    "build_admin_app",
    "build_app",
    "runner_options",
]
