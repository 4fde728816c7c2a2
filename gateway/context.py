"""What the gateway knows about one request: the facts its handlers, metrics and report share.

A leaf: it imports only the vocabulary, the pure PATCH domain, the configuration and the
error types, never the modules that use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from gateway.config.generation import Config
from gateway.edge.errors import UpstreamFailure
from gateway.patch.parser import Change
from gateway.vocabulary import Mode, Outcome, Reason, Route, Shape, Signature


@dataclass(slots=True)
class Signed:
    """A request's AK/SK signature: what it covers and what the gateway does with it."""

    algorithm: str
    access_key: str
    # The lower-case header names it covers; None: unreadable, so every header counts as signed.
    signed_headers: frozenset[str] | None
    handling: Signature
    scope: str | None = None  # V11: "YYYYMMDD/region/service"
    secret_key: str | None = field(default=None, repr=False)

    def covers(self, header: str) -> bool:
        """Whether the client signed ``header``: then the gateway may not change it."""
        return self.handling is Signature.PASSED_THROUGH and (self.signed_headers is None or header.lower() in self.signed_headers)

    @property
    def shown_key(self) -> str:
        """The access key as the report shows it: enough for an operator to tell it, not all of it."""
        key = self.access_key
        return f"{key[:4]}...{key[-4:]}" if len(key) >= 12 else "..."


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
    signed: Signed | None = None  # the request's AK/SK signature, if it has one
    media_types: set[str] | frozenset[str] = frozenset()  # every media type Content-Type could be read as
    body: bytes | None = None  # a body already read whole (to verify its signature)


CONTEXT = web.RequestKey("ims_gateway.context", RequestContext)
