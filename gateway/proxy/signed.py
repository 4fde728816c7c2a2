"""Requests signed with a Huawei Cloud access key (AK/SK): keep what the client signed, or
verify it and sign again.

Huawei Cloud's SDKs, its Terraform provider and its console sign every request
(``Authorization: SDK-HMAC-SHA256 Access=..., SignedHeaders=..., Signature=...``) and IMS's
API gateway refuses one whose signature does not match what arrives. So:

- **a key the operator did not list**: the gateway cannot sign again, so everything the
  signature covers reaches IMS exactly as received: Host when it is signed, path and
  query, every signed header, the body. The policy still decides (a forbidden change is
  refused, nothing sent); an accepted v2.0 body is forwarded as v2.0, unrewritten and not
  rerouted (IMS applies v2.0 itself, so no add check is needed);
- **a listed key** (``[signing] credentials_file``): the signature is verified as the API
  gateway would (a wrong or stale one is 401, nothing forwarded); the request is then
  handled as any other, and what the gateway sends is signed with the same key for the
  upstream's own Host (``Upstream.exchange``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from aiohttp import hdrs, web

from gateway.context import RequestContext, Signed
from gateway.edge import errors, signing
from gateway.vocabulary import Outcome, Reason, Signature

# What Authorization values of Huawei Cloud's signers start with (SDK-HMAC-SHA256,
# SDK-HMAC-SM3, SDK-ECDSA-P256-SHA256, SDK-SM2-SM3, V11-HMAC-SHA256).
SIGNER_PREFIXES: Final = ("SDK-", "V11-")
# A body the signature covers is read whole to verify it (image PATCHes: patch.max_body_bytes).
SIGNED_BODY_LIMIT: Final = 1024 * 1024
_CONTENT_HASH_HEADERS: Final = ("X-Sdk-Content-Sha256", "X-Sdk-Content-Sm3")


def inspect(request: web.BaseRequest, context: RequestContext) -> Signed | None:
    """Note the request's signature in ``context.signed`` (None: not signed)."""
    values = request.headers.getall(hdrs.AUTHORIZATION, [])
    if not any(value.lstrip().startswith(SIGNER_PREFIXES) for value in values):
        return None
    try:
        [value] = values
        authorization = signing.parse_authorization(value)
    except (ValueError, signing.MalformedAuthorization):
        # Unreadable: IMS will refuse it, but whatever it covers must not be touched.
        context.signed = Signed("unknown", "", None, Signature.PASSED_THROUGH)
        return context.signed
    listed = authorization.access_key in context.config.credentials
    context.signed = Signed(
        authorization.algorithm,
        authorization.access_key,
        frozenset(authorization.signed_headers),
        Signature.RESIGNED if listed else Signature.PASSED_THROUGH,
        authorization.scope,
    )
    return context.signed


def payload_unsigned(request: web.BaseRequest) -> bool:
    return any(request.headers.get(name, "").strip() == signing.UNSIGNED_PAYLOAD for name in _CONTENT_HASH_HEADERS)


async def verify(request: web.BaseRequest, context: RequestContext, signed: Signed, limit: int, now: datetime) -> bytes | None:
    """Verify a listed key's signature as the API gateway would; 401 when it does not hold.

    Returns the body when it had to be read to check its hash (then it is what is forwarded).
    """
    body: bytes | None = None
    payload: signing.Payload
    if not request.body_exists:
        payload = b""
    elif payload_unsigned(request):
        payload = signing.UNSIGNED
    else:
        body = payload = await _read_bounded(request, limit)
    raw_path, _, raw_query = request.raw_path.partition("?")
    verdict = signing.verify(
        request.method, raw_path, raw_query, list(request.headers.items()), payload, context.config.credentials,
        now=now,
    )  # fmt: skip
    if not verdict.ok:
        signed.handling = Signature.REFUSED
        context.outcome, context.reason = Outcome.REJECTED, Reason.SIGNATURE
        problem = verdict.reason.value if verdict.reason is not None else "invalid"
        raise errors.GatewayError(
            401, errors.UNAUTHORIZED, f"The request's AK/SK signature does not verify: {problem}. Nothing was forwarded."
        )
    signed.secret_key = verdict.secret_key
    return body


async def _read_bounded(request: web.BaseRequest, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> errors.GatewayError:
    return errors.GatewayError(
        413,
        errors.TOO_LARGE,
        f"A signed body is read whole to verify its hash, and this one is larger than {limit} bytes; "
        "sign it with X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD instead.",
        headers={hdrs.CONNECTION: "close"},
    )
