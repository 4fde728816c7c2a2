"""PATCH /v2/images/{image_id}: read, check, rewrite, forward. Nothing else lives here."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import hdrs, web

from gateway import conflicts, errors, patch, upstream
from gateway.context import CONTEXT, UPSTREAM, RequestContext
from gateway.policy import Violation

log = logging.getLogger("ims_gateway.patch")

_IDENTITY = ("", "identity")


def _refuse(context: RequestContext, reason: str, error: errors.GatewayError) -> errors.GatewayError:
    context.outcome = "rejected"
    context.reason = reason
    return error


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when the request has none (Glance: 'Body expected in request.').

    Never holds more than ``limit`` + one chunk in memory: past the limit the request is
    refused and the connection closed, the rest of the body unread.
    """
    if not request.body_exists:
        return None
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in _within_body_timeout(request):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _within_body_timeout(request: web.Request) -> AsyncIterator[bytes]:
    """The body's chunks; 408 when the whole body takes longer than server.body_timeout (a trickle)."""
    timeout = request[CONTEXT].config.settings.server.body_timeout
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
    )


def parse_and_check(request: web.Request, context: RequestContext, body: bytes | None) -> patch.Patch:
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    policy = context.config.policy
    try:
        parsed = patch.parse(content_type, body, glance_attribute_checks=False, reject_duplicate_members=True)
    except patch.PatchError as exc:
        # Glance stops at the first failing item; a forbidden item before it fails first.
        violations = policy.violations(exc.parsed)
        if violations:
            raise _refuse(context, "forbidden_attribute", forbidden(violations)) from None
        code = errors.UNSUPPORTED_MEDIA_TYPE if exc.status == 415 else errors.BAD_REQUEST
        raise _refuse(
            context, exc.reason, errors.GatewayError(400 if exc.status >= 500 else exc.status, code, exc.message, headers=exc.headers)
        ) from None
    context.shape = parsed.shape.value
    context.changes = parsed.changes
    violations = policy.violations(parsed.changes)
    if violations:
        raise _refuse(context, "forbidden_attribute", forbidden(violations))
    return parsed


async def _existing_attributes(request: web.Request, context: RequestContext) -> set[str] | web.StreamResponse:
    """The image's attribute names, read with the caller's own credentials.

    When the upstream will not show the image (404, 401, 403...) its answer is what the
    PATCH would have got too, so it is returned for the client instead.
    """
    gateway_upstream = request.app[UPSTREAM]
    headers = gateway_upstream.request_headers(request, context.request_id)
    for name in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING):
        headers.popall(name, None)
    headers[hdrs.ACCEPT] = "application/json"
    async with gateway_upstream.exchange("GET", request.raw_path, headers, None, context) as response:
        if response.status != 200:
            return await upstream.relay(
                request, response, {upstream.X_REQUEST_ID: context.request_id}, context
            )
        try:
            image = json.loads(await upstream.read_whole(response))
        except ValueError:
            image = None
    if not isinstance(image, dict):
        raise errors.GatewayError(
            502, errors.UPSTREAM_UNREACHABLE, "The upstream's image is not a JSON object; cannot check v2.0 'add'."
        )
    return set(image)


async def patch_image(request: web.Request) -> web.StreamResponse:
    context = request[CONTEXT]
    settings = context.config.settings
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    try:
        shape = patch.shape_of(content_type)
    except patch.PatchError as exc:
        context.shape = "unsupported"
        raise _refuse(
            context, exc.reason, errors.GatewayError(415, errors.UNSUPPORTED_MEDIA_TYPE, exc.message, headers=exc.headers)
        ) from None
    context.shape = shape.value
    if request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower() not in _IDENTITY:
        # The gateway must see exactly what the upstream will apply; it does not inflate bodies.
        raise _refuse(
            context,
            "content_encoding",
            errors.GatewayError(
                400, errors.BAD_REQUEST, "Compressed PATCH bodies (Content-Encoding) are not accepted: send plain JSON."
            ),
        )
    try:
        body = await read_body(request, settings.patch.max_body_bytes)
    except errors.GatewayError as exc:
        raise _refuse(context, "too_large", exc) from None
    parsed = parse_and_check(request, context, body)

    rewritten = parsed.shape is patch.Shape.V20
    if rewritten and settings.patch.check_add_conflicts and conflicts.needs_check(parsed.changes):
        existing = await _existing_attributes(request, context)
        if isinstance(existing, web.StreamResponse):
            context.outcome = "upstream_answer"
            return existing
        message = conflicts.first_add_conflict(parsed.changes, existing, settings.policy.allowed_system_attributes)
        if message:
            context.outcome = "conflict"
            raise errors.GatewayError(409, errors.CONFLICT, message)

    gateway_upstream = request.app[UPSTREAM]
    headers = gateway_upstream.request_headers(request, context.request_id)
    if rewritten:
        forwarded = patch.to_v21_json(parsed.changes)
        headers[hdrs.CONTENT_TYPE] = patch.V21_MEDIA_TYPE
    else:
        forwarded = body or b""
    headers[hdrs.CONTENT_LENGTH] = str(len(forwarded))
    context.outcome = "rewritten" if rewritten else "forwarded"
    async with gateway_upstream.exchange("PATCH", request.raw_path, headers, forwarded, context) as response:
        return await upstream.relay(request, response, {upstream.X_REQUEST_ID: context.request_id}, context)
