"""Forwarding to IMS: streaming both ways, failures as 502/504.

The gateway is transparent: method, path and query go upstream exactly as received, every
end-to-end header goes both ways (``gateway.edge.headers``), and bodies stream with
backpressure. An exchange whose request body is in memory (or absent: PATCHes, reads,
deletes) goes through the gateway's own keep-alive pool (``gateway.edge.pool``); one whose
body streams from the client (uploads) through aiohttp's client.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NamedTuple, Protocol

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.config.schema import UpstreamSettings
from gateway.edge import signing
from gateway.edge.errors import BAD_REQUEST, GatewayError, UpstreamError, UpstreamFailure
from gateway.edge.headers import (
    SKIP_AUTO_HEADERS,
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
    X_REQUEST_ID,
    append,
    end_to_end,
)
from gateway.edge.pool import Pool
from gateway.vocabulary import FailureKind, Signature

if TYPE_CHECKING:
    from gateway.context import RequestContext, Signed

log = logging.getLogger("ims_gateway.upstream")

# Read buffer of a streamed body, each way: larger pieces, fewer loop turns per GiB.
STREAM_CHUNK = 256 * 1024


def _covers_nothing(header: str) -> bool:
    return False


def classify_failure(exc: BaseException) -> UpstreamFailure:
    if isinstance(exc, AnswerTooLarge):
        return UpstreamFailure(FailureKind.RESET, 502, "The upstream's answer is larger than the gateway reads whole.")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return UpstreamFailure(FailureKind.TLS, 502, "The upstream's TLS certificate could not be verified.")
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return UpstreamFailure(FailureKind.TLS, 502, "The TLS handshake with the upstream failed.")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure(FailureKind.REFUSED, 502, "The upstream refused the connection or could not be reached.")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamFailure(
            FailureKind.TIMEOUT, 504, "No connection to the upstream in time: it did not accept one, or the pool was busy."
        )
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamFailure(FailureKind.TIMEOUT, 504, "The upstream did not answer in time.")
    return UpstreamFailure(FailureKind.RESET, 502, "The upstream closed the connection before answering.")


# Errors an upstream exchange may raise; anything else is a bug and must surface.
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
# A small call's whole answer is held in memory: an image document is a few KiB.
MAX_ANSWER_BYTES = 1024 * 1024
# A streamed answer this small is read whole and sent in one write with its headers.
SMALL_ANSWER = 64 * 1024
_EMPTY = frozenset({204, 304})


class Upstream:
    """The one upstream: base URL, shared session, and how a request is sent there."""

    def __init__(self, settings: UpstreamSettings, base_url: str, session: aiohttp.ClientSession, pool: Pool) -> None:
        self.settings = settings
        self.base = URL(base_url)
        self.session = session
        self.pool = pool
        self._prefix = self.base.raw_path.rstrip("/")
        self._root = str(self.base.origin()) + self._prefix
        self._host = (self.base.raw_host or "") + (f":{self.base.port}" if not self.base.is_default_port() else "")

    def url_for(self, raw_path: str) -> URL:
        """Upstream URL for a raw request target, neither decoded nor normalised."""
        return URL(self._root + raw_path, encoded=True)

    def request_headers(self, request: web.BaseRequest, context: RequestContext) -> CIMultiDict[str]:
        """What goes upstream: the end-to-end headers less the routing headers the gate dropped,
        the forwarding headers and the request id; none of them where the client signed it
        (with a key the gateway does not hold: ``gateway.proxy.signed``)."""
        headers = end_to_end(request.headers)
        for name, _ in context.dropped_headers:
            headers.popall(name, None)
        signed = context.signed
        kept = signed.covers if signed is not None else _covers_nothing
        if request.remote and not kept(X_FORWARDED_FOR):
            append(headers, X_FORWARDED_FOR, request.remote)
        if not kept(X_FORWARDED_PROTO):
            append(headers, X_FORWARDED_PROTO, request.scheme)
        client_host = request.headers.get(hdrs.HOST)
        if client_host and not kept(X_FORWARDED_HOST):
            append(headers, X_FORWARDED_HOST, client_host)
        if not client_host or not (self.settings.preserve_host or kept(hdrs.HOST)):
            headers[hdrs.HOST] = self._host
        if not kept(X_REQUEST_ID):
            headers[X_REQUEST_ID] = context.request_id
        return headers

    @asynccontextmanager
    async def exchange(
        self,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        data: bytes | aiohttp.StreamReader | AsyncIterator[bytes] | None,
        context: RequestContext | None = None,
    ) -> AsyncIterator[Reply]:
        """``send``, the reply released when the block ends."""
        reply = await self.send(method, raw_path, headers, data, context)
        try:
            yield reply
        finally:
            reply.release()

    async def send(
        self,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        data: bytes | aiohttp.StreamReader | AsyncIterator[bytes] | None,
        context: RequestContext | None = None,
    ) -> Reply:
        """Send one request upstream; connection and timeout failures become GatewayError.

        The caller releases the reply. With a ``context``, the time until IMS's response
        headers is added to its ``upstream_seconds``.
        """
        signed = context.signed if context is not None else None
        if signed is not None and signed.handling is Signature.RESIGNED:
            payload: signing.Payload = data if isinstance(data, bytes) else b"" if data is None else signing.UNSIGNED
            headers = CIMultiDict(resigned(signed, method, self._host, self._prefix + raw_path, list(headers.items()), payload))
        if hdrs.HOST not in headers:
            headers[hdrs.HOST] = self._host  # HTTP/1.1 wants one (the readiness check sends no other)
        started = time.perf_counter()
        try:
            if data is None or isinstance(data, bytes):
                return await self.pool.request(
                    method, self._prefix + raw_path, headers.items(), data, retry=method in IDEMPOTENT and data is None
                )
            return Streamed(await self.session.request(
                method, self.url_for(raw_path), headers=headers, data=data,
                allow_redirects=False, skip_auto_headers=SKIP_AUTO_HEADERS, compress=None,
            ))  # fmt: skip
        except UpstreamError as exc:
            log.warning("upstream %s: %s %s: %s", exc.failure.kind, method, self.base, exc.failure.message)
            raise
        except UPSTREAM_ERRORS as exc:
            failure = classify_failure(exc)
            log.warning("upstream %s: %s %s: %s", failure.kind, method, self.base, _describe(exc))
            raise UpstreamError(failure) from exc
        finally:
            if context is not None:
                context.upstream_seconds = (context.upstream_seconds or 0.0) + time.perf_counter() - started

    async def call(
        self,
        method: str,
        raw_path: str,
        headers: CIMultiDict[str],
        body: bytes,
        context: RequestContext | None = None,
    ) -> Answer:
        """A small call: the body in memory, the whole answer read (at most MAX_ANSWER_BYTES)."""
        reply = await self.send(method, raw_path, headers, body, context)
        try:
            data = await read_whole(reply)
        finally:
            reply.release()
        return Answer(reply.status, reply.reason or "", reply.headers, data)


class Reply(Protocol):
    """An upstream answer as the gateway reads it, whichever client brought it."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    content_length: int | None

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self, limit: int) -> bytes: ...

    def release(self) -> None: ...


class Streamed:
    """aiohttp's ClientResponse as a Reply."""

    __slots__ = ("_response", "content_length", "headers", "reason", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.reason = response.reason or ""
        self.headers = response.headers
        self.content_length = response.content_length

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def read(self, limit: int) -> bytes:
        if self.content_length is not None and self.content_length > limit:
            raise AnswerTooLarge(f"Content-Length {self.content_length} > {limit}")
        parts, size = [], 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise AnswerTooLarge(f"more than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        self._response.release()


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _describe(exc: BaseException) -> str:
    """A failure for the log: its type and what it says, never a long repr of internals."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Answer(NamedTuple):
    """A small upstream answer, read whole."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes


class AnswerTooLarge(aiohttp.ClientError):
    """An answer the gateway reads whole turned out larger than MAX_ANSWER_BYTES."""


def answer_response(answer: Answer, extra_headers: Mapping[str, str]) -> web.Response:
    """A small call's answer for the client: its end-to-end headers and whole body, sent in one write."""
    headers = end_to_end(answer.headers)
    headers.update(extra_headers)
    return web.Response(status=answer.status, reason=answer.reason, headers=headers, body=answer.body)


async def read_whole(reply: Reply, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """A whole (small) upstream body, for the gateway itself to read; a failure is an UpstreamError.

    Never holds more than ``limit`` + one chunk: a larger answer is a 502.
    """
    try:
        return await reply.read(limit)
    except UpstreamError as exc:
        log.warning("upstream %s while reading an answer: %s", exc.failure.kind, exc.failure.message)
        raise
    except UPSTREAM_ERRORS as exc:
        failure = classify_failure(exc)
        log.warning("upstream %s while reading an answer: %s", failure.kind, _describe(exc))
        raise UpstreamError(failure) from exc


def client_ssl(settings: UpstreamSettings) -> ssl.SSLContext | bool:
    if not settings.verify_tls:
        return False
    context = ssl.create_default_context(cafile=settings.ca_file or None)
    if settings.client_cert:
        context.load_cert_chain(settings.client_cert, settings.client_key or None)
    return context


def create_pool(settings: UpstreamSettings, base_url: str) -> Pool:
    """The gateway's own keep-alive pool to the upstream (inside a running event loop)."""
    url = URL(base_url)
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        verified = client_ssl(settings)
        if isinstance(verified, ssl.SSLContext):
            context = verified
        else:  # upstream.verify_tls = false: encrypted, not authenticated (logged at start)
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return Pool(
        url.raw_host or "", url.port or (443 if url.scheme == "https" else 80),
        ssl_context=context, server_hostname=url.raw_host,
        limit=settings.pool_size, connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
    )  # fmt: skip


def create_session(settings: UpstreamSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=settings.pool_size, limit_per_host=0, ssl=client_ssl(settings))
    timeout = aiohttp.ClientTimeout(
        # connect bounds the wait for a free pooled connection too: with every one busy
        # (slow downloads), a request gets a 504 instead of waiting for ever.
        total=None, connect=settings.connect_timeout, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=SKIP_AUTO_HEADERS,
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
        read_bufsize=STREAM_CHUNK,
    )


async def relay(
    request: web.BaseRequest,
    upstream: Reply,
    extra_headers: Mapping[str, str],
    context: RequestContext,
) -> web.StreamResponse:
    """Stream an upstream response to the client, byte for byte.

    Once the status line is sent a failure cannot become an error response: the client
    connection is aborted instead, so that a truncated body is never mistaken for a whole one.
    A small body of known length is read whole first and sent with the headers in one write.
    """
    headers = end_to_end(upstream.headers)
    headers.update(extra_headers)
    length = upstream.content_length
    if length is not None and length <= SMALL_ANSWER and upstream.status not in _EMPTY and request.method != "HEAD":
        return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=await read_whole(upstream))
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    await response.prepare(request)
    try:
        async for chunk in upstream.chunks():
            await response.write(chunk)
            context.response_bytes += len(chunk)
    except (UpstreamError, *UPSTREAM_ERRORS) as exc:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise  # the client went away: aiohttp counts it as a disconnect
        context.upstream_failure = exc.failure if isinstance(exc, UpstreamError) else classify_failure(exc)
        log.warning(
            "upstream %s after the response started; aborting the client connection: %s",
            context.upstream_failure.kind,
            exc.failure.message if isinstance(exc, UpstreamError) else _describe(exc),
        )
        transport.abort()
    return response


# The headers a new signature replaces.
_RESIGNED_HEADERS = frozenset({"authorization", "x-sdk-date", "x-sdk-content-sha256", "x-sdk-content-sm3", "host"})


def resigned(
    signed: Signed, method: str, host: str, raw_path: str, headers: list[tuple[str, str]], body: signing.Payload
) -> list[tuple[str, str]]:
    """What the gateway sends, signed with the client's own key for the upstream's ``host``."""
    if signed.secret_key is None:
        raise RuntimeError("resigned() needs a verified signature")
    kept = [(name, value) for name, value in headers if name.lower() not in _RESIGNED_HEADERS]
    if body is signing.UNSIGNED:
        kept.append(("X-Sdk-Content-Sm3" if signed.algorithm == signing.HMAC_SM3 else "X-Sdk-Content-Sha256", signing.UNSIGNED_PAYLOAD))
    region = service = None
    if signed.scope is not None:
        _, region, service = signed.scope.split("/")
    path, _, query = raw_path.partition("?")
    try:
        result = signing.sign(
            method, host, path, query, kept, body, signed.access_key, signed.secret_key,
            algorithm=signed.algorithm, region=region, service=service,
        )  # fmt: skip
    except (signing.SigningError, ValueError) as exc:
        raise GatewayError(400, BAD_REQUEST, f"The request cannot be signed again: {exc}.") from None
    return result.headers
