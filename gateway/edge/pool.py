"""Keep-alive HTTP/1.1 connections to the one upstream, for every exchange whose request body
is in memory (or absent): the request written here, the answer framed by llhttp (httptools).

aiohttp's ClientSession costs about as much CPU per request as a whole proxied exchange
(request and response objects, connector, timers, tracing); this costs a fifth of it. It
does less on purpose, and refuses what it does not do rather than guess:

- framing is llhttp's, and strict: an answer carries one Content-Length or
  ``Transfer-Encoding: chunked``, nothing else (no body delimited by closing the
  connection, no other coding, never both); 1xx interim answers are skipped, 101 is an
  error; 204, 304 and answers to HEAD have no body;
- a connection goes back to the pool only after a complete answer that both sides keep
  alive; after anything else (an error, a cancelled or abandoned exchange, a HEAD, bytes
  nobody asked for) it is closed;
- the timeouts are aiohttp's as the gateway set them: ``connect_timeout`` for a connection
  (a free pooled one included), ``read_timeout`` for silence while an answer is awaited
  or read (not while the client is slow to take it);
- failures are ``UpstreamError`` with the gateway's kinds (refused, timeout, reset, tls).

Streamed request bodies (uploads) still go through aiohttp's client (``gateway.edge.upstream``).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Final

import httptools
from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.edge.errors import UpstreamError, UpstreamFailure
from gateway.vocabulary import FailureKind

# Flow control of an answer's body: stop reading the upstream past HIGH, resume below LOW.
HIGH_WATER: Final = 1024 * 1024
LOW_WATER: Final = 256 * 1024
MAX_HEAD_BYTES: Final = 64 * 1024
# An idle connection is not reused after this long: servers close idle ones (gunicorn after 2 s).
KEEPALIVE_EXPIRY: Final = 15.0
_NO_BODY: Final = frozenset({204, 304})


def _failure(kind: FailureKind, message: str) -> UpstreamError:
    return UpstreamError(UpstreamFailure(kind, 504 if kind is FailureKind.TIMEOUT else 502, message))


CLOSED_EARLY: Final = "The upstream closed the connection before answering."
CLOSED_MID_ANSWER: Final = "The upstream closed the connection in the middle of its answer."
SILENT: Final = "The upstream did not answer in time."
BAD_ANSWER: Final = "The upstream's answer is not valid HTTP/1.1 the gateway can forward faithfully"


class Answer:
    """An upstream answer: its head at once, its body as it arrives (``chunks``)."""

    __slots__ = (
        "_buffer", "_buffered", "_connection", "_done", "_error", "_released", "_waiter",
        "content_length", "headers", "reason", "status",
    )  # fmt: skip

    def __init__(self, connection: _Connection, status: int, reason: str, headers: CIMultiDictProxy[str], length: int | None) -> None:
        self._connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length = length
        self._buffer: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    # -- fed by the connection --

    def _feed(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _finish(self, error: UpstreamError | None = None) -> None:
        if not self._done:
            self._done = True
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the gateway --

    @property
    def complete(self) -> bool:
        """The whole body has arrived (it may still be buffered here)."""
        return self._done and self._error is None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk; an UpstreamError if the upstream breaks off."""
        while True:
            if self._buffer:
                chunk = self._buffer.popleft()
                self._buffered -= len(chunk)
                if self._buffered < LOW_WATER:
                    self._connection.resume()
                yield chunk
                continue
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def read(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (a longer one is a 502)."""
        if self.content_length is not None and self.content_length > limit:
            raise _failure(FailureKind.RESET, "The upstream's answer is larger than the gateway reads whole.")
        if self._done and self._error is None and len(self._buffer) <= 1:
            return self._buffer.popleft() if self._buffer else b""  # the usual small answer, whole already
        parts, size = [], 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise _failure(FailureKind.RESET, "The upstream's answer is larger than the gateway reads whole.")
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if it can, else it is closed."""
        if not self._released:
            self._released = True
            self._connection.release(self)


class _Connection(asyncio.Protocol):
    """One connection to the upstream; one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._head_waiter: asyncio.Future[Answer] | None = None
        self._answer: Answer | None = None
        self._head_request = False
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._interim = False
        self._failed: UpstreamError | None = None
        self._paused = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._reusable = False

    # -- the exchange --

    def send(self, data: bytes, head_request: bool) -> asyncio.Future[Answer]:
        self._head_waiter = self.loop.create_future()
        self._answer = None
        self._head_request = head_request
        self._reason, self._headers, self._head_bytes, self._interim = b"", [], 0, False
        self._reusable = False
        if self.transport is None or self.closed:
            raise _failure(FailureKind.RESET, CLOSED_EARLY)
        self.transport.write(data)  # head and body in one write
        self._touch()
        return self._head_waiter

    def release(self, answer: Answer) -> None:
        if self._answer is answer:
            self._answer = None
            self._stop_timer()
        if self._reusable and answer.complete and not self.closed and self._head_waiter is None:
            self.idle_since = self.loop.time()
            self.reused = True
            self.resume()
            self.pool._give_back(self)
        else:
            self.close()
            self.pool._give_back(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop_timer()
            if self.transport is not None:
                self.transport.abort()

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self._touch()
            self.transport.resume_reading()

    def _fail(self, error: UpstreamError) -> None:
        self.close()
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self._answer is not None:
            self._answer._finish(error)

    # -- the read timeout: silence while an answer is awaited or read --

    def _touch(self) -> None:
        self._last = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_at(self._last + self.pool.read_timeout, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        if self.closed or (self._head_waiter is None and self._answer is None):
            return
        deadline = self._last + self.pool.read_timeout
        if self._paused or self.loop.time() < deadline:
            self._timer = self.loop.call_at(deadline if not self._paused else self.loop.time() + self.pool.read_timeout, self._check_silence)
            return
        self._fail(_failure(FailureKind.TIMEOUT, SILENT))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._head_waiter is None and self._answer is None:
            self._fail(_failure(FailureKind.RESET, f"{BAD_ANSWER}: bytes nobody asked for."))
            return
        self._last = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = self._failed or _failure(FailureKind.RESET, f"{BAD_ANSWER}: {exc}.")
            self._fail(cause)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self._head_waiter is not None:
            self._fail(_failure(FailureKind.RESET, CLOSED_EARLY))
        elif self._answer is not None and not self._answer._done:
            self._fail(_failure(FailureKind.RESET, CLOSED_MID_ANSWER))

    # -- httptools callbacks (an exception raised here makes feed_data raise) --

    def _refuse(self, message: str) -> None:
        self._failed = _failure(FailureKind.RESET, f"{BAD_ANSWER}: {message}.")
        raise self._failed

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse("its headers are too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                self._refuse("it switches protocols")
            self._interim = True  # 100 Continue and the like: the real answer follows
            return
        headers = CIMultiDict([(name.decode("latin-1"), value.decode("utf-8", "surrogateescape")) for name, value in self._headers])
        lengths = headers.getall(hdrs.CONTENT_LENGTH, ())
        if len(lengths) > 1:
            self._refuse("two Content-Length fields")
        length = int(lengths[0]) if lengths else None  # digits only: llhttp checked them
        codings = headers.getall(hdrs.TRANSFER_ENCODING, ())
        if codings and (len(codings) > 1 or codings[0].strip().lower() != "chunked"):
            self._refuse(f"the transfer coding {', '.join(codings)!r}")
        bodiless = status in _NO_BODY or self._head_request
        if not bodiless and length is None and not codings:
            self._refuse("its body has neither a Content-Length nor chunked framing")
        answer = self._answer = Answer(self, status, self._reason.decode("latin-1"), CIMultiDictProxy(headers), 0 if bodiless else length)
        waiter, self._head_waiter = self._head_waiter, None
        if bodiless:
            # llhttp would wait for a HEAD answer's body: done now, and never reused.
            answer._finish()
            self._reusable = status in _NO_BODY and not self._head_request and self.parser.should_keep_alive()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def on_body(self, body: bytes) -> None:
        if self._answer is not None:
            self._answer._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._reason, self._headers, self._head_bytes = b"", [], 0
            return
        self._stop_timer()
        self._reusable = self.parser.should_keep_alive() and not self._head_request
        if self._answer is not None:
            self._answer._finish()


class Pool:
    """At most ``limit`` connections to ``host:port``; idle ones reused newest first."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        limit: int = 100,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
    ) -> None:
        self.host, self.port = host, port
        self.ssl_context, self.server_hostname = ssl_context, server_hostname
        self.limit = limit
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.loop = asyncio.get_running_loop()
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def request(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None, *, retry: bool
    ) -> Answer:
        """Send one request; its answer once the head has arrived. ``retry``: an idempotent
        request is sent once more when a reused connection turns out to be closed."""
        data = encode(method, target, headers, body)
        while True:
            connection = await self._acquire()
            try:
                return await connection.send(data, method == "HEAD")
            except UpstreamError as exc:
                connection.close()
                self._give_back(connection)
                if retry and connection.reused and exc.failure.message == CLOSED_EARLY:
                    retry = False
                    continue
                raise
            except BaseException:  # cancelled: the exchange's state is unknown
                connection.close()
                self._give_back(connection)
                raise

    async def _acquire(self) -> _Connection:
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_EXPIRY:
                return connection
            connection.close()
            self._open -= 1
        if self._open >= self.limit:
            await self._wait_for_room()
            return await self._acquire()
        self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _wait_for_room(self) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiting.append(waiter)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await waiter
        except TimeoutError:
            raise _failure(
                FailureKind.TIMEOUT, "No connection to the upstream in time: it did not accept one, or the pool was busy."
            ) from None
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self), self.host, self.port,
                    ssl=self.ssl_context, server_hostname=self.server_hostname if self.ssl_context else None,
                )  # fmt: skip
        except TimeoutError:
            raise _failure(
                FailureKind.TIMEOUT, "No connection to the upstream in time: it did not accept one, or the pool was busy."
            ) from None
        except ssl.SSLCertVerificationError:
            raise _failure(FailureKind.TLS, "The upstream's TLS certificate could not be verified.") from None
        except ssl.SSLError:
            raise _failure(FailureKind.TLS, "The TLS handshake with the upstream failed.") from None
        except OSError:
            raise _failure(FailureKind.REFUSED, "The upstream refused the connection or could not be reached.") from None
        return connection

    def _give_back(self, connection: _Connection) -> None:
        if connection.closed:
            self._open -= 1
        else:
            self._idle.append(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def encode(method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None) -> bytes:
    """A request's bytes: the request line, the headers as given, Content-Length for a body.

    ValueError for a line break or NUL anywhere but between lines: no header may add another.
    """
    lines = [f"{method} {target} HTTP/1.1\r\n", *[f"{name}: {value}\r\n" for name, value in headers]]
    head = "".join(lines)
    # Each line brings one CR LF of its own; any other CR, LF or NUL came in a name or a value.
    if head.count("\n") != len(lines) or head.count("\r") != len(lines) or "\x00" in head:
        bad = next(line for line in lines if line.count("\n") != 1 or line.count("\r") != 1 or "\x00" in line)
        raise ValueError(f"the header {bad.partition(':')[0][:64]!r} has a line break or NUL")
    if body is not None and "\r\ncontent-length:" not in head.lower():
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("utf-8", "surrogateescape") + (body or b"")


__all__ = ["Answer", "Pool", "encode"]
