"""Small upstream calls, fully buffered, over pooled HTTP/1.1 keep-alive connections.

aiohttp's client spends more CPU on one call than the rest of an image PATCH's handling
put together (see README, Performance). For a call whose request body is already in
memory and whose answer is one small JSON document, the gateway writes the request in
one send and reads the answer itself. Everything streamed (image data, every request the
gateway does not intercept) still goes through aiohttp.

Strict about what it accepts: a status line, headers without folding or control
characters, one Content-Length or ``chunked`` (never both), or a body delimited by the
close; at most ``max_answer_bytes`` in all. Anything else is a ``BrokenAnswer`` and the
connection is closed.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from dataclasses import dataclass

from multidict import CIMultiDict

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[\t ]*(?:;[^\r\n]*)?")
_NO_BODY_STATUS = frozenset({204, 304})


class BrokenAnswer(Exception):
    """The upstream's answer is not HTTP/1.1 the gateway accepts."""


class ConnectFailed(OSError):
    """No connection to the upstream (refused, unreachable, name not found, TLS handshake)."""


class PoolBusy(TimeoutError):
    """Every connection stayed in use for the whole connect timeout."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    reason: str
    headers: CIMultiDict[str]  # as received, hop-by-hop ones included
    body: bytes


@dataclass(frozen=True, slots=True)
class Head:
    version: int  # minor version: HTTP/1.x
    status: int
    reason: str
    headers: CIMultiDict[str]


def parse_head(data: bytes) -> Head:
    """A status line and header fields, the terminating blank line excluded."""
    lines = data.split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        raise BrokenAnswer("invalid status line")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise BrokenAnswer("invalid header field (obsolete folding, no colon or a bad name)")
        value = value.strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise BrokenAnswer("a control character in a header value")
        headers.add(name.decode("ascii"), value.decode("utf-8", "surrogateescape"))
    reason = (status_line[3] or b"").decode("utf-8", "surrogateescape")
    return Head(int(status_line[1]), int(status_line[2]), reason, headers)


@dataclass(frozen=True, slots=True)
class Framing:
    """How the body of an answer ends: at ``length`` bytes, at the last chunk, or at the close."""

    length: int | None
    chunked: bool = False

    @property
    def until_close(self) -> bool:
        return self.length is None and not self.chunked


def framing(head: Head, method: str) -> Framing:
    """RFC 9112 section 6.3, refusing what a smuggling attempt would look like."""
    if method == "HEAD" or head.status in _NO_BODY_STATUS:
        return Framing(0)
    if "Transfer-Encoding" not in head.headers:
        declared = head.headers.getall("Content-Length", ())
        if len(declared) == 1 and declared[0].isdigit() and declared[0].isascii():
            return Framing(int(declared[0]))
    codings = [c.strip().lower() for v in head.headers.getall("Transfer-Encoding", ()) for c in v.split(",")]
    lengths = {v.strip() for v in head.headers.getall("Content-Length", ()) for v in v.split(",")}
    if codings:
        if lengths:
            raise BrokenAnswer("both Transfer-Encoding and Content-Length")
        if codings != ["chunked"]:
            raise BrokenAnswer("a transfer coding other than chunked")
        return Framing(None, chunked=True)
    if not lengths:
        return Framing(None)
    if len(lengths) > 1 or not all(v.isdigit() and v.isascii() for v in lengths):
        raise BrokenAnswer("an invalid or conflicting Content-Length")
    return Framing(int(lengths.pop()))


def dechunk(data: bytearray, limit: int) -> tuple[bytes, int] | None:
    """(the body, the bytes consumed) once the whole chunked body is in ``data``, else None."""
    body = bytearray()
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            if len(data) - position > 1024:
                raise BrokenAnswer("a chunk size line too long")
            return None
        size_line = _CHUNK_SIZE.fullmatch(data, position, end)
        if size_line is None:
            raise BrokenAnswer("an invalid chunk size")
        size = int(size_line[1], 16)
        if len(body) + size > limit:
            raise BrokenAnswer(f"an answer larger than {limit} bytes")
        start = end + 2
        if size == 0:
            return _after_trailers(data, start, bytes(body), limit)
        if len(data) < start + size + 2:
            return None
        if data[start + size : start + size + 2] != b"\r\n":
            raise BrokenAnswer("a chunk not followed by CRLF")
        body += data[start : start + size]
        position = start + size + 2


def _after_trailers(data: bytearray, start: int, body: bytes, limit: int) -> tuple[bytes, int] | None:
    if data.startswith(b"\r\n", start):
        return body, start + 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        if len(data) - start > limit:
            raise BrokenAnswer("trailers too large")
        return None
    return body, end + 4


class _Connection(asyncio.Protocol):
    """One keep-alive connection: the answer to the one request in flight, parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_head: int, max_body: int, read_timeout: float) -> None:
        self.loop = loop
        self.max_head = max_head
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Answer] | None = None
        self.method = ""
        self.head: Head | None = None
        self.body_framing = Framing(0)
        self.reusable = False
        self.last_data = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if exc is None and self.head is not None and self.body_framing.until_close:
                self._finish(bytes(self.buffer), keep=False)
            else:
                self._fail(exc or ConnectionResetError("the upstream closed the connection before answering"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            # Nothing was asked, or the caller gave up (cancelled) and will abandon the
            # connection: bytes out of turn mean it cannot be trusted.
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]
            return
        self.last_data = self.loop.time()
        self.buffer += data
        try:
            self._parse()
        except BrokenAnswer as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        return None

    def send(self, method: str, data: bytes) -> asyncio.Future[Answer]:
        self.method = method
        self.head = None
        self.buffer.clear()
        self.waiter = self.loop.create_future()
        self.last_data = self.loop.time()
        self.timer = self.loop.call_at(self.last_data + self.read_timeout, self._check_silence)
        self.transport.write(data)  # type: ignore[union-attr]
        return self.waiter

    def _check_silence(self) -> None:
        due = self.last_data + self.read_timeout
        if self.loop.time() < due:
            self.timer = self.loop.call_at(due, self._check_silence)
            return
        self.timer = None
        self._fail(TimeoutError(f"no data from the upstream for {self.read_timeout} s"))

    def _parse(self) -> None:
        while self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > self.max_head:
                    raise BrokenAnswer("a status line and headers too large")
                return
            head = parse_head(bytes(self.buffer[:end]))
            del self.buffer[: end + 4]
            if head.status == 101:
                raise BrokenAnswer("a protocol switch nobody asked for")
            if head.status >= 200:
                self.head = head
                self.body_framing = framing(head, self.method)
        limit = self.max_body
        if self.body_framing.chunked:
            found = dechunk(self.buffer, limit)
            if found is not None:
                body, used = found
                self._finish(body, keep=len(self.buffer) == used)
        elif self.body_framing.length is not None:
            length = self.body_framing.length
            if length > limit:
                raise BrokenAnswer(f"an answer larger than {limit} bytes")
            if len(self.buffer) >= length:
                self._finish(bytes(self.buffer[:length]), keep=len(self.buffer) == length)
        elif len(self.buffer) > limit:
            raise BrokenAnswer(f"an answer larger than {limit} bytes")

    def _finish(self, body: bytes, *, keep: bool) -> None:
        head = self.head
        assert head is not None and self.waiter is not None
        self.reusable = keep and not self.closed and _keeps_alive(head)
        self._settle()
        self.waiter.set_result(Answer(head.status, head.reason, head.headers, body))
        self.waiter = None

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        self._settle()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.waiter = None
        if self.transport is not None:
            self.transport.close()

    def abandon(self) -> None:
        """The caller stopped waiting (cancelled): the answer is unread, the connection unusable."""
        self._fail(ConnectionAbortedError("the call was abandoned"))

    def _settle(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.buffer.clear()


def _keeps_alive(head: Head) -> bool:
    tokens = {t.strip().lower() for v in head.headers.getall("Connection", ()) for t in v.split(",")}
    return head.version == 1 and "close" not in tokens


def serialize(method: str, target: str, headers: CIMultiDict[str], body: bytes) -> bytes:
    """The request as it goes on the wire; the caller has set Host and Content-Length."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    head = "\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count("\n") != breaks or head.count("\r") != breaks:
        raise ValueError("a line break inside a request line or header value")
    return (head + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


class Pool:
    """Keep-alive connections to one upstream, at most ``size`` calls in flight."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        size: int,
        connect_timeout: float,
        read_timeout: float,
        max_head_bytes: int = 65536,
        max_answer_bytes: int = 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_head_bytes = max_head_bytes
        self.max_answer_bytes = max_answer_bytes
        self.size = size
        self.slots = asyncio.Semaphore(size)
        self.idle: collections.deque[_Connection] = collections.deque()

    async def call(self, method: str, target: str, headers: CIMultiDict[str], body: bytes) -> Answer:
        """One request, its whole answer. Raises ConnectFailed, PoolBusy, TimeoutError, OSError or BrokenAnswer."""
        data = serialize(method, target, headers, body)
        if self.slots.locked():
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await self.slots.acquire()
            except TimeoutError:
                raise PoolBusy(f"all {self.size} connections stayed busy for {self.connect_timeout} s") from None
        else:
            await self.slots.acquire()
        try:
            connection = self._reuse() or await self._connect()
            try:
                answer = await connection.send(method, data)
            except BaseException:
                connection.abandon()
                raise
            if connection.reusable:
                self.idle.append(connection)
            else:
                connection.transport.close()  # type: ignore[union-attr]
            return answer
        finally:
            self.slots.release()

    def _reuse(self) -> _Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self.max_head_bytes, self.max_answer_bytes, self.read_timeout),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                )
        except TimeoutError:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(str(exc)) from exc
        return connection

    def close(self) -> None:
        while self.idle:
            connection = self.idle.pop()
            if connection.transport is not None:
                connection.transport.close()
