"""The app factories: the gateway listener and the admin listener."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

from gateway.config.generation import Config
from gateway.config.schema import Settings
from gateway.edge import errors, upstream
from gateway.edge.server import HANDLER
from gateway.patch.retirement import utc_now
from gateway.proxy.dispatch import Traffic
from gateway.service import reload
from gateway.service.state import (
    LIFECYCLE,
    METRICS,
    RUNTIME,
    SETTINGS,
    TRAFFIC,
    UPSTREAM,
    UPSTREAM_URL,
    Lifecycle,
    Runtime,
)
from gateway.telemetry import metrics, report

log = logging.getLogger("ims_gateway")

async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.upstream.verify_tls:
        log.warning(
            "upstream.verify_tls is false: the upstream's TLS certificate is NOT verified; "
            "anyone on the path can read and change the traffic, X-Auth-Token included"
        )
    session = upstream.create_session(settings.upstream)
    pool = upstream.create_pool(settings.upstream, app[UPSTREAM_URL])
    app[UPSTREAM] = app[TRAFFIC].upstream = upstream.Upstream(settings.upstream, app[UPSTREAM_URL], session, pool)
    yield
    pool.close()
    await session.close()


async def _publishing(app: web.Application) -> AsyncIterator[None]:
    async for _ in app[METRICS].publishing():
        yield


def build_app(
    settings: Settings,
    *,
    upstream_url: str | None = None,
    lifecycle: Lifecycle | None = None,
    clock: Callable[[], datetime] = utc_now,
    load: Callable[[], Settings] | None = None,
    registry: CollectorRegistry | None = None,
) -> web.Application:
    """The gateway listener's app: its state and lifecycle; serve it with ``GatewayRunner``.

    Its requests are handled by ``Traffic`` (``app[HANDLER]``) through aiohttp's low-level
    server, not by the Application's router. ``upstream_url`` overrides
    settings.upstream.url (embedded emulator).

    ``clock`` is what brownout windows and the sunset are compared with; ``load`` re-reads
    the configuration sources for a reload (None: reloads are refused). The metrics go to
    ``registry`` (None: a new one, with the process collectors).
    """
    url = upstream_url or settings.upstream.url
    if not url:
        raise ValueError("build_app needs an upstream URL: settings.upstream.url or upstream_url")
    app = web.Application()
    app[SETTINGS] = settings
    app[UPSTREAM_URL] = url
    app[LIFECYCLE] = lifecycle or Lifecycle()
    app[RUNTIME] = Runtime(Config.from_settings(settings), clock=clock, load=load)
    app[METRICS] = metrics.Metrics(registry if registry is not None else metrics.process_registry(), settings)
    traffic = Traffic(app[RUNTIME], app[METRICS])
    app[TRAFFIC] = traffic
    app[HANDLER] = traffic.__call__
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_publishing)
    return app


READY_CACHE_SECONDS = 1.0


async def _check_upstream(gateway: web.Application) -> tuple[bool, str]:
    gateway_upstream = gateway[UPSTREAM]
    try:
        async with gateway_upstream.exchange("GET", "/", CIMultiDict(), None) as response:
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
    admin.router.add_get("/deprecations", report.handler(gateway[METRICS].report, before=gateway[METRICS].fold))
    admin.router.add_post("/reload", reload.endpoint(gateway))
    return admin


def runner_options(settings: Settings) -> dict[str, Any]:
    """GatewayRunner options shared by production and the test fixtures, so tests see what users see."""
    return {
        # Bodies must reach IMS exactly as sent: no decompression of gzip'd uploads.
        "auto_decompress": False,
        "max_line_size": settings.server.max_header_bytes,
        "max_field_size": settings.server.max_header_bytes,
        "keepalive_timeout": settings.server.keepalive_timeout,
        "header_timeout": settings.server.header_timeout,
        "read_bufsize": upstream.STREAM_CHUNK,
        "access_log": None,
    }


__all__ = [
    "build_admin_app",
    "build_app",
    "runner_options",
]
