"""What the gateway holds: app-wide state (app keys) and what it knows about one request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.policy import Policy
from gateway.settings import Settings

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


SETTINGS = web.AppKey("settings", Settings)
POLICY = web.AppKey("policy", Policy)
UPSTREAM = web.AppKey("upstream", Upstream)
UPSTREAM_URL = web.AppKey("upstream_url", str)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


@dataclass(slots=True)
class RequestContext:
    request_id: str
    route: str  # a bounded label: image_patch, image_data, images, other
    upstream_failure: UpstreamFailure | None = None
    # Facts about an image PATCH, for metrics and the migration report (all bounded values).
    shape: str | None = None  # v2.0, v2.1, unsupported
    outcome: str | None = None  # forwarded, rewritten, rejected, conflict, upstream_error
    reason: str | None = None  # why it was rejected: a PatchError reason or forbidden_attribute, too_large, ...
    changes: tuple[Change, ...] = ()


CONTEXT = web.RequestKey("ims_gateway.context", RequestContext)
