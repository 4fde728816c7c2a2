"""What the gateway holds: app-wide state (app keys) and what it knows about one request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.deprecation import Schedule, Signals, parse_instant, parse_windows, utc_now
from gateway.metrics import Metrics
from gateway.policy import Policy
from gateway.settings import DeprecationSettings, Settings
from gateway.upstream import Upstream, UpstreamFailure

if TYPE_CHECKING:
    from gateway.patch import Change


@dataclass(slots=True)
class Lifecycle:
    """Shared by the gateway and admin apps: readiness and draining."""

    draining: bool = False
    ready_checked_at: float = float("-inf")
    ready: bool = False
    ready_reason: str = "not checked yet"


@dataclass(frozen=True, slots=True)
class Config:
    """One generation of configuration: what a request is decided under, start to finish.

    A reload swaps the whole object; a request keeps the one it started with.
    """

    settings: Settings
    policy: Policy
    generation: int = 0
    schedule: Schedule = Schedule()

    @classmethod
    def from_settings(cls, settings: Settings, generation: int = 0) -> Config:
        return cls(
            settings=settings,
            policy=Policy(
                allowed_system_attributes=settings.policy.allowed_system_attributes,
                forbidden_attributes=settings.policy.forbidden_attributes,
                forbidden_prefixes=settings.policy.forbidden_prefixes,
            ),
            generation=generation,
            schedule=_schedule(settings.deprecation),
        )


def _instant(text: str) -> datetime | None:
    return parse_instant(text) if text else None


def _signals(section: DeprecationSettings, shape: str) -> Signals:
    return Signals(
        deprecated_at=_instant(getattr(section, f"{shape}_deprecated_at")),
        sunset_at=_instant(getattr(section, f"{shape}_sunset_at")),
        documentation=getattr(section, f"{shape}_documentation"),
        sunset_policy=getattr(section, f"{shape}_sunset_policy"),
        successor_link=getattr(section, f"{shape}_successor_link"),
    )


def _schedule(section: DeprecationSettings) -> Schedule:
    return Schedule(
        v20=_signals(section, "v20"),
        v21=_signals(section, "v21"),
        successor_base=section.successor_base.rstrip("/"),
        v20_brownouts=parse_windows(section.v20_brownouts),
        v20_refuse_after_sunset=section.v20_refuse_after_sunset,
        refusal_status=section.refusal_status,
    )


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


@dataclass(slots=True)
class RequestContext:
    request_id: str
    route: str  # a bounded label: image_patch, image_data, images, other
    config: Config
    upstream_failure: UpstreamFailure | None = None
    upstream_seconds: float | None = None  # time IMS took to answer, all exchanges summed
    response_bytes: int = 0  # body bytes relayed to the client
    # Facts about an image PATCH, for metrics and the migration report (all bounded values).
    shape: str | None = None  # v2.0, v2.1, unsupported
    outcome: str | None = None  # forwarded, rewritten, rejected, conflict, upstream_error, observed
    reason: str | None = None  # why it was rejected: a PatchError reason or forbidden_attribute, too_large, ...
    changes: tuple[Change, ...] = ()
    mode: str | None = None  # the mode that decided an image PATCH: enforce, observe
    would_outcome: str | None = None  # observe: what enforce would have done (rejected, rewritten, forwarded)
    upstream_api: str | None = None  # where an image PATCH went: images, cloudimages (successor routing)


CONTEXT = web.RequestKey("ims_gateway.context", RequestContext)
