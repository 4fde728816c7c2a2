"""PATCH /v2/images/{image_id}: read, check, rewrite, forward. Nothing else lives here.

Two modes decide an image PATCH. ``enforce`` refuses what the policy forbids (and v2.0
bodies in a brownout or after the sunset) and rewrites or reroutes what passes;
``observe`` forwards every request as received and only records what enforce would do.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import NamedTuple
from urllib.parse import quote

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.context import RequestContext
from gateway.edge import errors, upstream
from gateway.edge.headers import X_REQUEST_ID
from gateway.patch import conflicts, parser, retirement, target
from gateway.patch.policy import Violation
from gateway.vocabulary import Mode, Outcome, Reason, Shape, Signature

log = logging.getLogger("ims_gateway.patch")

_IDENTITY = ("", "identity")


def _refuse(context: RequestContext, reason: Reason, error: errors.GatewayError) -> errors.GatewayError:
    context.outcome = Outcome.REJECTED
    context.reason = reason
    return error


class Body(NamedTuple):
    """What was read of a request body: ``data`` is None when the request has none
    (Glance: 'Body expected in request.'); ``complete`` is false past the limit, where
    ``data`` is only the part read so far and the rest is still in the request stream.
    """

    data: bytes | None
    complete: bool = True


async def read_body(request: web.BaseRequest, limit: int, timeout: float) -> Body:
    """Read a body of at most ``limit`` bytes; never holds more than ``limit`` + one chunk."""
    if not request.body_exists:
        return Body(None)
    declared = request.content_length
    if declared is not None and declared > limit:
        return Body(b"", complete=False)
    if declared is not None and request.content.is_eof():
        # The usual small PATCH: the whole body, no more than declared, came with the headers.
        return Body(request.content.read_nowait())
    chunks = []
    size = 0
    async for chunk in _within_body_timeout(request, timeout):
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            return Body(b"".join(chunks), complete=False)
    return Body(b"".join(chunks))


async def _read(request: web.BaseRequest, context: RequestContext) -> Body:
    if context.body is not None:  # read whole already, to verify its signature
        return Body(context.body)
    try:
        settings = context.config.settings
        return await read_body(request, settings.patch.max_body_bytes, settings.server.body_timeout)
    except errors.GatewayError as exc:  # the body did not arrive within server.body_timeout
        raise _refuse(context, Reason.BODY_TIMEOUT, exc) from None


async def _replay(body: Body, rest: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The part of a body already read, then the rest, streamed."""
    if body.data:
        yield body.data
    async for chunk in rest.iter_any():
        yield chunk


def _within_body_timeout(request: web.BaseRequest, timeout: float) -> AsyncIterator[bytes]:
    """The body's chunks; 408 when the whole body takes longer than ``timeout`` seconds (a trickle)."""
    return _chunks_until(request.content, asyncio.get_running_loop().time() + timeout, timeout)


async def _chunks_until(content: aiohttp.StreamReader, deadline: float, timeout: float) -> AsyncIterator[bytes]:
    while True:
        try:
            # Each read alone is bounded, so the deadline never fires outside this generator.
            async with asyncio.timeout_at(deadline):
                chunk = await content.readany()
        except TimeoutError:
            raise errors.GatewayError(
                408,
                errors.REQUEST_TIMEOUT,
                f"The PATCH body did not arrive within {timeout:g} seconds.",
                headers={hdrs.CONNECTION: "close"},
            ) from None
        if not chunk:
            return
        yield chunk


def _too_large(limit: int) -> errors.GatewayError:
    return errors.GatewayError(
        413,
        errors.TOO_LARGE,
        f"The PATCH body is larger than the gateway accepts ({limit} bytes).",
        headers={hdrs.CONNECTION: "close"},
    )


def forbidden(violations: list[Violation]) -> errors.GatewayError:
    listed = "; ".join(f"{v.op} {v.pointer!r}: {v.reason}" for v in violations)
    return errors.GatewayError(
        400,
        errors.FORBIDDEN_ATTRIBUTE,
        "Only the name, the description (__description) and customized attributes may be "
        f"modified through PATCH /v2/images/{{image_id}}. Refused: {listed}.",
        details=[
            {"index": v.index, "op": v.op, "path": v.pointer, "attribute": v.attribute, "reason": v.reason}
            for v in violations
        ],
        reason=Reason.FORBIDDEN_ATTRIBUTE.value,
    )


def parse_and_check(request: web.BaseRequest, context: RequestContext, body: bytes | None) -> parser.Patch:
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    policy = context.config.policy
    try:
        parsed = parser.parse(
            content_type,
            body,
            glance_attribute_checks=False,
            reject_duplicate_members=True,
            max_value_depth=context.config.settings.patch.max_value_depth,
        )
    except parser.PatchError as exc:
        # Glance stops at the first failing item; a forbidden item before it fails first.
        violations = policy.violations(exc.parsed)
        if violations:
            raise _refuse(context, Reason.FORBIDDEN_ATTRIBUTE, forbidden(violations)) from None
        code = errors.UNSUPPORTED_MEDIA_TYPE if exc.status == 415 else errors.BAD_REQUEST
        raise _refuse(
            context, exc.reason, errors.GatewayError(400 if exc.status >= 500 else exc.status, code, exc.message, headers=exc.headers)
        ) from None
    context.shape = parsed.shape
    context.changes = parsed.changes
    violations = policy.violations(parsed.changes)
    if violations:
        raise _refuse(context, Reason.FORBIDDEN_ATTRIBUTE, forbidden(violations))
    return parsed


def check_media_type(request: web.BaseRequest, context: RequestContext) -> Shape:
    try:
        shape = parser.shape_of(request.headers.get(hdrs.CONTENT_TYPE))
    except parser.PatchError as exc:
        context.shape = Shape.UNSUPPORTED
        raise _refuse(
            context, exc.reason, errors.GatewayError(415, errors.UNSUPPORTED_MEDIA_TYPE, exc.message, headers=exc.headers)
        ) from None
    context.shape = shape
    return shape


def check_target(request: web.BaseRequest, context: RequestContext) -> str:
    """The image the PATCH names: a json-patch body goes with PATCH /v2/images/{image_id} only."""
    if request.method != "PATCH":
        raise _refuse(
            context,
            Reason.METHOD_OVERRIDE,
            errors.GatewayError(
                400, errors.BAD_REQUEST,
                f"A json-patch body is accepted only by PATCH /v2/images/{{image_id}}, not by {request.method}.",
            ),
        )  # fmt: skip
    image = target.image_id(request.raw_path)
    if image is None:
        raise _refuse(
            context,
            Reason.BAD_TARGET,
            errors.GatewayError(
                400, errors.BAD_REQUEST, "An image PATCH must name one image: PATCH /v2/images/{image_id}."
            ),
        )
    return image


def check_encoding(request: web.BaseRequest, context: RequestContext) -> None:
    if hdrs.CONTENT_ENCODING not in request.headers:
        return
    codings = (token.strip().lower() for value in request.headers.getall(hdrs.CONTENT_ENCODING, ()) for token in value.split(","))
    if any(coding not in _IDENTITY for coding in codings):
        # The gateway must see exactly what the upstream will apply; it does not inflate bodies.
        raise _refuse(
            context,
            Reason.CONTENT_ENCODING,
            errors.GatewayError(
                400, errors.BAD_REQUEST, "Compressed PATCH bodies (Content-Encoding) are not accepted: send plain JSON."
            ),
        )


def check_retirement(request: web.BaseRequest, context: RequestContext, now: datetime) -> None:
    """Refuse a v2.0 body in a brownout window or after the sunset."""
    schedule = context.config.schedule
    retired = schedule.retirement(now) if context.shape is Shape.V20 else None
    if retired is not None:
        message, details = schedule.refusal(retired, request.raw_path)
        raise _refuse(
            context, retired.kind, errors.GatewayError(schedule.refusal_status, errors.GONE, message, details=details)
        )


def check_size(context: RequestContext, body: Body) -> None:
    if not body.complete:
        raise _refuse(context, Reason.TOO_LARGE, _too_large(context.config.settings.patch.max_body_bytes))


def check_request(request: web.BaseRequest, context: RequestContext, now: datetime) -> str:
    """The checks made before the body is read (a retired shape is refused without reading it); the image id."""
    check_media_type(request, context)
    image = check_target(request, context)
    check_encoding(request, context)
    check_retirement(request, context, now)
    return image


def check_body(request: web.BaseRequest, context: RequestContext, body: Body) -> parser.Patch:
    check_size(context, body)
    return parse_and_check(request, context, body.data)


def signal_headers(
    request: web.BaseRequest,
    context: RequestContext,
    upstream_headers: CIMultiDictProxy[str] | CIMultiDict[str] | None = None,
) -> dict[str, str]:
    """X-Request-Id and the Deprecation/Sunset/Link headers configured for the body's shape.

    Link values the upstream sent are kept ahead of ours.
    """
    headers: dict[str, str] = {X_REQUEST_ID: context.request_id}
    signals = context.config.schedule.headers(context.shape, request.raw_path)
    if "Link" in signals and upstream_headers is not None:
        theirs = upstream_headers.getall(hdrs.LINK, [])
        signals["Link"] = ", ".join([*theirs, signals["Link"]])
    headers.update(signals)
    return headers


async def _send(
    request: web.BaseRequest,
    context: RequestContext,
    gateway_upstream: upstream.Upstream,
    path: str,
    headers: CIMultiDict[str],
    data: bytes | AsyncIterator[bytes] | None,
) -> web.StreamResponse:
    if isinstance(data, bytes):
        answer = await gateway_upstream.call("PATCH", path, headers, data, context)
        return upstream.answer_response(answer, signal_headers(request, context, answer.headers))
    # aiohttp streams an async iterator as it streams a StreamReader.
    async with gateway_upstream.exchange("PATCH", path, headers, data, context) as response:
        return await upstream.relay(request, response, signal_headers(request, context, response.headers), context)


def image_path(image: str) -> str:
    """The canonical URL of an image, built from its id alone: no client path, query or version."""
    return f"/v2/images/{quote(image, safe='')}"


async def _existing_attributes(
    request: web.BaseRequest, context: RequestContext, gateway_upstream: upstream.Upstream, image: str
) -> set[str] | web.StreamResponse:
    """The image's attribute names, read with the caller's own credentials.

    The read is ``GET /v2/images/{image_id}`` and nothing else: the client's path and query
    could make IMS's stack run another method on another resource (``?_method=DELETE``).
    When the upstream will not show the image (404, 401, 403...) its answer is what the
    PATCH would have got too, so it is returned for the client instead.
    """
    headers = gateway_upstream.request_headers(request, context)
    for name in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING):
        headers.popall(name, None)
    headers[hdrs.ACCEPT] = "application/json"
    answer = await gateway_upstream.call("GET", image_path(image), headers, b"", context)
    if answer.status != 200:
        return upstream.answer_response(answer, signal_headers(request, context, answer.headers))
    try:
        document = json.loads(answer.body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise errors.GatewayError(
            502, errors.UPSTREAM_UNREACHABLE, "The upstream's image is not a JSON object; cannot check v2.0 'add'."
        )
    return set(document)


async def patch_image(
    request: web.BaseRequest, context: RequestContext, gateway_upstream: upstream.Upstream, now: datetime
) -> web.StreamResponse:
    """An image PATCH (or any json-patch body), decided at ``now``."""
    context.mode = context.config.mode
    decide: Callable[[web.BaseRequest, RequestContext, upstream.Upstream, datetime], Awaitable[web.StreamResponse]]
    decide = observe if context.mode is Mode.OBSERVE else enforce
    try:
        return await decide(request, context, gateway_upstream, now)
    except errors.GatewayError as exc:
        # The gateway's own answers tell the client about the API's retirement too.
        exc.headers.update(context.config.schedule.headers(context.shape, request.raw_path))
        raise


async def enforce(
    request: web.BaseRequest, context: RequestContext, gateway_upstream: upstream.Upstream, now: datetime
) -> web.StreamResponse:
    settings = context.config.settings
    image = check_request(request, context, now)
    body = await _read(request, context)
    parsed = check_body(request, context, body)

    # What a client signed with a key the gateway does not hold must reach IMS as signed.
    keeps_signature = context.signed is not None and context.signed.handling is Signature.PASSED_THROUGH
    rerouting = settings.patch.successor_routing and not keeps_signature
    successor = retirement.successor_target(request.raw_path) if rerouting else None
    is_v20 = parsed.shape is Shape.V20
    translated = successor is not None or (is_v20 and settings.patch.rewrite and not keeps_signature)
    if is_v20 and translated and settings.patch.check_add_conflicts and conflicts.needs_check(parsed.changes):
        existing = await _existing_attributes(request, context, gateway_upstream, image)
        if isinstance(existing, web.StreamResponse):
            context.outcome = Outcome.UPSTREAM_ANSWER
            return existing
        message = conflicts.first_add_conflict(parsed.changes, existing)
        if message:
            context.outcome = Outcome.CONFLICT
            raise errors.GatewayError(409, errors.CONFLICT, message)

    headers = gateway_upstream.request_headers(request, context)
    if successor is not None:
        forwarded = parser.to_v21_json(parsed.changes)
        headers[hdrs.CONTENT_TYPE] = retirement.SUCCESSOR_MEDIA_TYPE
    elif translated:
        forwarded = parser.to_v21_json(parsed.changes)
        headers[hdrs.CONTENT_TYPE] = parser.V21_MEDIA_TYPE
    else:
        forwarded = body.data or b""
    headers[hdrs.CONTENT_LENGTH] = str(len(forwarded))
    context.outcome = Outcome.REWRITTEN if is_v20 and translated else Outcome.FORWARDED
    return await _send(request, context, gateway_upstream, successor or request.raw_path, headers, forwarded)


async def observe(
    request: web.BaseRequest, context: RequestContext, gateway_upstream: upstream.Upstream, now: datetime
) -> web.StreamResponse:
    """Forward the request as received; record what enforce would have done with it."""
    settings = context.config.settings
    body = await _read(request, context)
    try:
        check_request(request, context, now)
        parsed = check_body(request, context, body)
    except errors.GatewayError:
        context.outcome = Outcome.REJECTED
    else:
        rewrite = parsed.shape is Shape.V20 and settings.patch.rewrite
        context.outcome = Outcome.REWRITTEN if rewrite else Outcome.FORWARDED
    if context.outcome is not Outcome.FORWARDED:
        log.info(
            "observe mode: %s %s body would have been %s%s",
            context.request_id,
            context.shape,
            context.outcome,
            f" ({context.reason})" if context.reason else "",
        )
    headers = gateway_upstream.request_headers(request, context)
    data = body.data if body.complete else _replay(body, request.content)
    return await _send(request, context, gateway_upstream, request.raw_path, headers, data)
