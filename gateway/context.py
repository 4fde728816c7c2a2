"""What the gateway knows about one request: the facts its handlers, metrics and report share.

A leaf: it imports only the vocabulary, the pure PATCH domain, the configuration and the
error types, never the modules that use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.config.generation import Config
from gateway.edge.errors import UpstreamFailure
from gateway.patch.parser import Change
from gateway.vocabulary import Mode, Outcome, Reason, Route, Shape


@dataclass(slots=True)
class RequestContext:
    request_id: str
    route: Route
    config: Config  # the generation the request is decided under, start to finish
    upstream_failure: UpstreamFailure | None = None
    upstream_seconds: float | None = None  # time IMS took to answer, all exchanges summed
    response_bytes: int = 0  # body bytes relayed to the client
    # Facts about an image PATCH, for the metrics and the migration report.
    shape: Shape | None = None
    mode: Mode | None = None
    # In observe mode: what enforce would have done (the request itself was forwarded as received).
    outcome: Outcome | None = None
    reason: Reason | None = None  # why it was (or would have been) refused
    changes: tuple[Change, ...] = ()
    # Routing headers (name, metrics label) the gate dropped, or the labels of those it refused.
    dropped_headers: tuple[tuple[str, str], ...] = ()
    refused_headers: tuple[str, ...] = ()


CONTEXT = web.RequestKey("ims_gateway.context", RequestContext)
