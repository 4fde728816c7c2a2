"""What the gateway holds app-wide: its app keys, readiness and the current configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from gateway.config.generation import Config
from gateway.config.schema import Settings
from gateway.edge.upstream import Upstream
from gateway.patch.retirement import utc_now
from gateway.proxy.dispatch import Traffic
from gateway.telemetry.metrics import Metrics


@dataclass(slots=True)
class Lifecycle:
    """Shared by the gateway and admin apps: readiness and draining."""

    draining: bool = False
    ready_checked_at: float = float("-inf")
    ready: bool = False
    ready_reason: str = "not checked yet"


@dataclass(slots=True)
class Runtime:
    """The current configuration generation, swapped whole on reload; the clock; how to reload."""

    config: Config
    clock: Callable[[], datetime] = utc_now
    # Re-reads the sources the gateway started from (file, environment, flags); None: no reload.
    load: Callable[[], Settings] | None = None


# Settings the app was started with: listeners, upstream session. Not reloadable.
SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
UPSTREAM = web.AppKey("upstream", Upstream)
UPSTREAM_URL = web.AppKey("upstream_url", str)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
METRICS = web.AppKey("metrics", Metrics)
TRAFFIC = web.AppKey("traffic", Traffic)


