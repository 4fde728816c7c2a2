"""The client-facing HTTP/1.1 listener: aiohttp's server with the gateway's hardening.

aiohttp answers requests it cannot parse before any middleware runs, in plain text that
quotes the offending bytes (an X-Auth-Token among them) and logs them with a traceback.
It has no limit on how long a client may take to send a request's headers. This module
swaps in a protocol that answers parse errors in the IMS error shape without echoing the
request (431 for oversized headers), and closes a connection whose request head does not
arrive within ``server.header_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.context import CONTEXT
from gateway.edge import errors

log = logging.getLogger("ims_gateway.server")

# llhttp's own reasons ("Invalid header value char", "Duplicate Content-Length") are fixed
# text; whatever follows them is the client's bytes and is never repeated.
_FIXED_REASON = re.compile(r"[A-Za-z][A-Za-z `/.-]{0,79}|Duplicate '[A-Za-z-]{1,32}' header found")
_TOO_MANY_HEADERS = "Too many headers received"
_CLOSE: dict[str, str] = {"Connection": "close"}


def describe(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """(status, code, message) for a request aiohttp refused or a handler failure."""
    if isinstance(exc, LineTooLong) or (isinstance(exc, HttpProcessingError) and exc.message == _TOO_MANY_HEADERS):
        limit = exc.args[1] if isinstance(exc, LineTooLong) else None
        detail = f" (at most {limit} bytes each)" if isinstance(limit, int) else ""
        return 431, errors.HEADERS_TOO_LARGE, f"The request line or headers are too large{detail}."
    if isinstance(exc, HttpProcessingError) and 400 <= status < 500:
        reason = exc.message.split(":", 1)[0].strip().rstrip(".")
        if not _FIXED_REASON.fullmatch(reason):
            reason = "Malformed HTTP request"
        return status, errors.BAD_REQUEST, f"The request is not valid HTTP/1.1: {reason}."
    if status == 504:
        return 504, errors.UPSTREAM_TIMEOUT, "The request timed out."
    return 500, errors.INTERNAL, "The gateway failed to handle the request."


def check_framing(request: web.BaseRequest) -> None:
    """Refuse message framing the gateway cannot forward with the same meaning.

    aiohttp decodes only the chunked coding and ignores any other listed before it, so
    ``gzip, chunked`` would reach IMS as if it were plain (RFC 9112 section 6.1: 501).
    HTTP/1.0 has no Transfer-Encoding; such a message's framing is faulty (section 6.1).
    """
    coding = request.headers.get(hdrs.TRANSFER_ENCODING)
    if coding is None:
        return
    if request.version < HttpVersion11:
        raise errors.GatewayError(
            400, errors.BAD_REQUEST, "Transfer-Encoding is not allowed in an HTTP/1.0 request.", headers=_CLOSE
        )
    if [token.strip().lower() for token in coding.split(",")] != ["chunked"]:
        raise errors.GatewayError(
            501, errors.NOT_IMPLEMENTED, "The only transfer coding accepted is chunked.", headers=_CLOSE
        )


_SUPPORTED_VERSIONS = frozenset({HttpVersion10, HttpVersion11})


class UnsupportedVersionRequest(web.BaseRequest):
    """A request that named an HTTP version other than 1.0 and 1.1 (``named_version``).

    It reads as 1.1, so that the refusal's status line is one the client can read.
    """

    ATTRS = web.BaseRequest.ATTRS | frozenset(["named_version"])
    named_version: HttpVersion


def unsupported_version(request: web.BaseRequest) -> HttpVersion | None:
    return request.named_version if type(request) is UnsupportedVersionRequest else None


def _head_timeout_response(timeout: float) -> bytes:
    body = json.dumps(
        errors.error_document(
            errors.REQUEST_TIMEOUT, f"The request headers did not arrive within {timeout:g} seconds."
        )
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    ) + body


class GatewayProtocol(RequestHandler):
    """One client connection."""

    __slots__ = ("_head_count", "_head_timer", "_header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0

    def data_received(self, data: bytes) -> None:
        if (self._close or self._force_close) and self._current_request is not None and self._parser is not None:
            # Once shutdown starts aiohttp drops every byte received (aio-libs/aiohttp#2298),
            # starving an upload in flight until the drain timeout cuts it. Its body is still
            # fed; a request pipelined after it is not, as the connection closes after it.
            self._parser.feed_data(data)
            return
        super().data_received(data)
        if self._head_timer is not None and (self._messages or self._request_count != self._head_count):
            self._head_timer.cancel()
            self._head_timer = None
        if data and self._head_timer is None and self._awaiting_head():
            # The clock starts at a head's first byte: idle keep-alive is keepalive_timeout's.
            self._head_count = self._request_count
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_timed_out)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        """Between requests, with part of the next head received: no request is being handled
        and no whole head is waiting (uvloop delivers a connection's first bytes before the
        handler task has started, so its waiter is no sign)."""
        return self._current_request is None and not self._messages

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._request_count != self._head_count or not self._awaiting_head() or self.transport is None:
            return
        log.info("closed a connection from %s: its request headers took longer than %gs", self._peer(), self._header_timeout)
        self.transport.write(_head_timeout_response(self._header_timeout))
        self.force_close()

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else "?"

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        status, code, text = describe(status, exc)
        context = request.get(CONTEXT)
        request_id = context.request_id if context is not None else None
        if status >= 500:
            log.error("request %s failed in the gateway", request_id or "-", exc_info=exc)
        else:
            log.info("refused a request from %s: %d %s", request.remote, status, text)
        response = errors.error_response(status, code, text, request_id=request_id, headers=_CLOSE)
        if request_id:
            response.headers["X-Request-Id"] = request_id
        return response


class GatewayServer(web.Server):
    """aiohttp's Server, making GatewayProtocol connections."""

    def __init__(self, handler: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout = header_timeout
        loop = self._loop

        def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            # aiohttp answers in the request's version: "HTTP/2.0 505" would be unreadable.
            version = message.version
            if version in _SUPPORTED_VERSIONS:
                return web.BaseRequest(message, payload, protocol, writer, task, loop)
            request = UnsupportedVersionRequest(message._replace(version=HttpVersion11), payload, protocol, writer, task, loop)
            request.named_version = version
            return request

        self.request_factory = request_factory

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# The app's request handler: GatewayRunner serves it instead of the app's router.
HANDLER: Final[web.AppKey[Handler]] = web.AppKey("ims_gateway.handler")


class GatewayRunner(web.AppRunner):
    """Runs an app's lifecycle (startup, cleanup) and serves ``app[HANDLER]`` through GatewayProtocol.

    The handler gets every request from aiohttp's low-level server: no router, no
    middleware, no per-request Application machinery. Handlers are cancelled when their
    client disconnects (``handler_cancellation``), so an abandoned upload or download
    stops its upstream exchange at once.
    """

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        kwargs.setdefault("handler_cancellation", True)
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app: its cleanup_ctx and on_startup
        return GatewayServer(
            self.app[HANDLER],
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            header_timeout=self.header_timeout,
            # The protocol options (limits, keep-alive, logging) the app's own Server was given.
            **plain._kwargs,
        )


__all__ = ["HANDLER", "GatewayProtocol", "GatewayRunner", "GatewayServer", "Handler", "check_framing", "describe"]
