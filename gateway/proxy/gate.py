"""Every request, before it is forwarded or inspected: nothing may change what IMS executes
behind the gateway's back.

IMS is a WSGI stack: a WSGI server that may take SCRIPT_NAME from a header, Routes that
honours ``_method`` in the query string and in form bodies, and a framing of its own. The
gate refuses every way the gateway knows to make IMS execute a method or a path other than
the one the gateway decided on, and drops (or refuses) the routing headers.
"""

from __future__ import annotations

from aiohttp import web
from multidict import istr

from gateway.context import RequestContext
from gateway.edge import errors, server
from gateway.edge.headers import connection_drops_kept_header, routing_headers
from gateway.patch import target
from gateway.vocabulary import Outcome, Reason

# Method overrides let a POST act as a PATCH on some stacks: never let one past unchecked.
METHOD_OVERRIDE_HEADERS = tuple(istr(name) for name in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"))
_CLOSE = {"Connection": "close"}


def _refuse(context: RequestContext, reason: Reason, status: int, message: str, code: str = errors.BAD_REQUEST) -> errors.GatewayError:
    context.outcome, context.reason = Outcome.REJECTED, reason
    return errors.GatewayError(status, code, message)


def admit(request: web.BaseRequest, context: RequestContext) -> None:
    """Refuse the request (GatewayError) if it could reach IMS as something it does not look like.

    Routing headers to drop are left in ``context.dropped_headers``.
    """
    if server.unsupported_version(request) is not None:
        context.outcome, context.reason = Outcome.REJECTED, Reason.HTTP_VERSION
        raise errors.GatewayError(
            505, errors.HTTP_VERSION_NOT_SUPPORTED, "Only HTTP/1.0 and HTTP/1.1 are accepted.", headers=_CLOSE
        )
    server.check_framing(request)
    raw_path = request.raw_path
    if not raw_path.startswith("/"):
        raise _refuse(context, Reason.BAD_TARGET, 400, "The request target must be a path starting with '/' (origin-form).")
    if "#" in raw_path or target.has_control_characters(raw_path):
        raise _refuse(
            context, Reason.BAD_TARGET, 400, "The request target may contain neither a fragment (#) nor control characters."
        )
    headers = request.headers
    for name in METHOD_OVERRIDE_HEADERS:
        if name in headers:
            raise _refuse(context, Reason.METHOD_OVERRIDE, 400, f"The {name} header is not accepted: send the real method instead.")
    if target.query_overrides_method(raw_path):
        raise _refuse(
            context, Reason.METHOD_OVERRIDE, 400,
            "The query parameter _method is not accepted: it overrides the method upstream; send the real method instead.",
        )  # fmt: skip
    if target.names_form(context.media_types):
        raise _refuse(
            context, Reason.METHOD_OVERRIDE, 400,
            "Form bodies are not accepted: IMS's API takes JSON, and a form's _method field overrides the method upstream.",
        )  # fmt: skip
    kept = connection_drops_kept_header(headers)
    if kept is not None:
        raise _refuse(
            context, Reason.CONNECTION_HEADER, 400, f"The Connection header may not name {kept}: it is not a hop-by-hop header."
        )
    found = routing_headers(headers)
    if found:
        # A header the client signed cannot be dropped without breaking its signature.
        if context.config.settings.server.routing_headers == "refuse" or (
            context.signed is not None and any(context.signed.covers(name) for name, _ in found)
        ):
            names = ", ".join(name for name, _ in found)
            context.refused_headers = tuple(label for _, label in found)
            raise _refuse(
                context, Reason.ROUTING_HEADER, 400,
                f"These headers are not accepted: {names}. They can change the path or the method IMS executes.",
            )  # fmt: skip
        context.dropped_headers = tuple(found)


__all__ = ["METHOD_OVERRIDE_HEADERS", "admit"]
