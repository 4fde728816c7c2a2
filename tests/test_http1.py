"""The buffered HTTP/1.1 client for small upstream calls: parsing, framing, the pool."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from multidict import CIMultiDict

from gateway import http1

# ---------------------------------------------------------------- the status line and headers


@pytest.mark.parametrize(
    ("head", "version", "status", "reason", "headers"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2", 1, 200, "OK", [("Content-Length", "2")]),
        (b"HTTP/1.0 404 Not Found", 0, 404, "Not Found", []),
        (b"HTTP/1.1 204", 1, 204, "", []),
        (b"HTTP/1.1 200 \r\nX-A:  spaced \t", 1, 200, "", [("X-A", "spaced")]),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2", 1, 200, "OK", [("X-A", "1"), ("x-a", "2")]),
        (b"HTTP/1.1 200 OK\r\nX-Empty:", 1, 200, "OK", [("X-Empty", "")]),
        ("HTTP/1.1 200 OK\r\nX-Name: caf\u00e9".encode(), 1, 200, "OK", [("X-Name", "caf\u00e9")]),
    ],
)
def test_a_valid_head_is_read_as_sent(head: bytes, version: int, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
    parsed = http1.parse_head(head)
    assert (parsed.version, parsed.status, parsed.reason, list(parsed.headers.items())) == (version, status, reason, headers)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 099 Low",
        b"HTTP/1.1 200 OK\x00",
        b"ICY 200 OK",
        b"HTTP/1.1 200 OK\r\n folded: value",
        b"HTTP/1.1 200 OK\r\nNo colon here",
        b"HTTP/1.1 200 OK\r\nBad Name: x",
        b"HTTP/1.1 200 OK\r\n: no name",
        b"HTTP/1.1 200 OK\r\nX-A: a\x01b",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb",
        b"HTTP/1.1 200 OK\r\nX-A: a\nb",
    ],
)
def test_a_broken_head_is_refused(head: bytes) -> None:
    with pytest.raises(http1.BrokenAnswer):
        http1.parse_head(head)


# ---------------------------------------------------------------- how the body ends


def _head(status: int = 200, *headers: tuple[str, str]) -> http1.Head:
    return http1.Head(1, status, "", CIMultiDict(headers))


@pytest.mark.parametrize(
    ("head", "method", "expected"),
    [
        (_head(200, ("Content-Length", "12")), "PATCH", http1.Framing(12)),
        (_head(200, ("Content-Length", "12"), ("Content-Length", "12")), "PATCH", http1.Framing(12)),
        (_head(200, ("Content-Length", "12, 12")), "PATCH", http1.Framing(12)),
        (_head(200, ("Transfer-Encoding", "Chunked")), "PATCH", http1.Framing(None, chunked=True)),
        (_head(200), "PATCH", http1.Framing(None)),
        (_head(204, ("Content-Length", "12")), "PATCH", http1.Framing(0)),
        (_head(304), "GET", http1.Framing(0)),
        (_head(200, ("Content-Length", "12")), "HEAD", http1.Framing(0)),
    ],
)
def test_the_body_framing_follows_rfc_9112(head: http1.Head, method: str, expected: http1.Framing) -> None:
    assert http1.framing(head, method) == expected


@pytest.mark.parametrize(
    "headers",
    [
        (("Content-Length", "12"), ("Transfer-Encoding", "chunked")),
        (("Transfer-Encoding", "gzip, chunked"),),
        (("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")),
        (("Content-Length", "12"), ("Content-Length", "13")),
        (("Content-Length", "-1"),),
        (("Content-Length", "+12"),),
        (("Content-Length", "1_2"),),
        (("Content-Length", "\u0661"),),
    ],
)
def test_an_ambiguous_framing_is_refused(headers: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(http1.BrokenAnswer):
        http1.framing(_head(200, *headers), "GET")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"0\r\n\r\n", (b"", 5)),
        (b"3\r\nabc\r\n0\r\n\r\n", (b"abc", 13)),
        (b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n", (b"abc0123456789", 34)),
        (b"3\r\nabc\r\n0\r\nTrailer: x\r\n\r\nextra", (b"abc", 25)),
        (b"3\r\nabc\r\n0\r\n", None),
        (b"3\r\nab", None),
        (b"3\r\nabc\r\n", None),
        (b"", None),
    ],
)
def test_a_chunked_body_is_decoded_once_whole(data: bytes, expected: tuple[bytes, int] | None) -> None:
    assert http1.dechunk(bytearray(data), 100) == expected


@pytest.mark.parametrize(
    "data",
    [b"x\r\n", b"3\r\nabcd\r\n", b"-1\r\n", b"65\r\n", b"1" * 2000, b"0\r\n" + b"T: x\r\n" * 40],
)
def test_a_broken_or_oversized_chunked_body_is_refused(data: bytes) -> None:
    with pytest.raises(http1.BrokenAnswer):
        http1.dechunk(bytearray(data), 100)


# ---------------------------------------------------------------- the request on the wire


def test_the_request_is_one_buffer_with_the_headers_as_given() -> None:
    headers = CIMultiDict([("Host", "ims:8443"), ("X-A", "1"), ("x-a", "2"), ("Content-Length", "2")])
    assert http1.serialize("PATCH", "/v2/images/x?y=%20", headers, b"[]") == (
        b"PATCH /v2/images/x?y=%20 HTTP/1.1\r\nHost: ims:8443\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 2\r\n\r\n[]"
    )


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb"])
def test_a_line_break_in_a_header_value_is_never_sent(value: str) -> None:
    with pytest.raises(ValueError):
        http1.serialize("GET", "/", CIMultiDict([("X-A", value)]), b"")


# ---------------------------------------------------------------- the pool against scripted servers

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A raw TCP server that answers each connection with a script; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[Scripted]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> Scripted:
        server = Scripted(script)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(listening)
        server.port = listening.sockets[0].getsockname()[1]
        return server

    yield start
    for listening in servers:
        listening.close()
        await listening.wait_closed()


def pool_for(port: int, **options: object) -> http1.Pool:
    settings: dict[str, object] = {"tls": None, "size": 4, "connect_timeout": 2.0, "read_timeout": 2.0, **options}
    return http1.Pool("127.0.0.1", port, **settings)  # type: ignore[arg-type]


def _headers(body: bytes = b"") -> CIMultiDict[str]:
    return CIMultiDict([("Host", "ims"), ("Content-Length", str(len(body)))])


def answering(*answers: bytes) -> Callable[[Scripted], Script]:
    """A script answering each request on a connection with the next answer, then closing."""

    def script_for(server: Scripted) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in answers:
                await server.read_request(reader)
                writer.write(answer)
                await writer.drain()
            await reader.read()

        return script

    return script_for


async def start_answering(scripted, *answers: bytes) -> Scripted:  # type: ignore[no-untyped-def]
    holder: list[Scripted] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answering(*answers)(holder[0])(reader, writer)

    server = await scripted(script)
    holder.append(server)
    return server


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, b"{}"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n", 200, b"{}"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 201, b""),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    ],
)
async def test_an_answer_is_read_whole_and_the_connection_kept(scripted, answer: bytes, status: int, body: bytes) -> None:  # type: ignore[no-untyped-def]
    server = await start_answering(scripted, answer, answer)
    pool = pool_for(server.port)
    for _ in range(2):
        got = await pool.call("PATCH", "/v2/images/x", _headers(b"[]"), b"[]")
        assert (got.status, got.body) == (status, body)
    assert server.connections == 1
    assert server.requests[0] == b"PATCH /v2/images/x HTTP/1.1\r\nHost: ims\r\nContent-Length: 2\r\n\r\n[]"
    pool.close()


async def test_an_answer_split_into_single_bytes_is_read(scripted) -> None:  # type: ignore[no-untyped-def]
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for byte in answer:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()

    server = await scripted(script)
    pool = pool_for(server.port)
    got = await pool.call("GET", "/", _headers(), b"")
    assert (got.status, got.body) == (200, b"{}")
    pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}surplus",
    ],
)
async def test_a_connection_the_answer_does_not_keep_alive_is_not_reused(scripted, answer: bytes) -> None:  # type: ignore[no-untyped-def]
    server = await start_answering(scripted, answer)
    pool = pool_for(server.port)
    for _ in range(2):
        got = await pool.call("GET", "/", _headers(), b"")
        assert got.body == b"{}"
    assert server.connections == 2
    pool.close()


async def test_a_body_delimited_by_the_close_is_read_to_the_end(scripted) -> None:  # type: ignore[no-untyped-def]
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n{\"a\":")
        await writer.drain()
        writer.write(b" 1}")
        await writer.drain()

    server = await scripted(script)
    pool = pool_for(server.port)
    got = await pool.call("GET", "/", _headers(), b"")
    assert got.body == b'{"a": 1}'
    pool.close()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}", ConnectionResetError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", http1.BrokenAnswer),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n", http1.BrokenAnswer),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", http1.BrokenAnswer),
        (b"garbage\r\n\r\n", http1.BrokenAnswer),
        (b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 3000, http1.BrokenAnswer),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"z" * 1500, http1.BrokenAnswer),
        (b"", ConnectionResetError),
    ],
)
async def test_a_broken_answer_fails_the_call_and_closes_the_connection(scripted, answer: bytes, error: type[Exception]) -> None:  # type: ignore[no-untyped-def]
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()

    server = await scripted(script)
    pool = pool_for(server.port, max_head_bytes=1024, max_answer_bytes=1000)
    with pytest.raises(error):
        await pool.call("GET", "/", _headers(), b"")
    assert not pool.idle
    pool.close()


async def test_silence_longer_than_the_read_timeout_fails_the_call(scripted) -> None:  # type: ignore[no-untyped-def]
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
        await writer.drain()
        await reader.read()

    server = await scripted(script)
    pool = pool_for(server.port, read_timeout=0.3)
    with pytest.raises(TimeoutError):
        await pool.call("GET", "/", _headers(), b"")
    pool.close()


async def test_a_slow_answer_that_keeps_sending_is_not_timed_out(scripted) -> None:  # type: ignore[no-untyped-def]
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        for byte in b"abcd":
            await asyncio.sleep(0.15)
            writer.write(bytes([byte]))
            await writer.drain()
        await reader.read()

    server = await scripted(script)
    pool = pool_for(server.port, read_timeout=0.4)
    got = await pool.call("GET", "/", _headers(), b"")
    assert got.body == b"abcd"
    pool.close()


async def test_a_refused_connection_is_a_connect_failure() -> None:
    listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()
    pool = pool_for(port)
    with pytest.raises(http1.ConnectFailed) as caught:
        await pool.call("GET", "/", _headers(), b"")
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_an_idle_connection_the_upstream_closed_is_not_reused(scripted) -> None:  # type: ignore[no-untyped-def]
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    server = await scripted(script)
    pool = pool_for(server.port)
    await pool.call("GET", "/", _headers(), b"")
    await asyncio.sleep(0.1)  # the upstream's close arrives while the connection is idle
    got = await pool.call("GET", "/", _headers(), b"")
    assert got.body == b"{}"
    assert server.connections == 2
    pool.close()


async def test_a_cancelled_call_leaves_no_connection_behind(scripted) -> None:  # type: ignore[no-untyped-def]
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await scripted(script)
    pool = pool_for(server.port)
    call = asyncio.create_task(pool.call("GET", "/", _headers(), b""))
    await asyncio.sleep(0.1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not pool.idle


async def test_at_most_size_calls_are_in_flight(scripted) -> None:  # type: ignore[no-untyped-def]
    in_flight = 0
    most = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal in_flight, most
        while True:
            await reader.readuntil(b"\r\n\r\n")
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    server = await scripted(script)
    pool = pool_for(server.port, size=3)
    await asyncio.gather(*(pool.call("GET", "/", _headers(), b"") for _ in range(12)))
    assert most == 3
    assert server.connections == 3
    pool.close()


async def test_tls_to_the_upstream_is_verified(scripted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = listening.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    try:
        got = await pool_for(port, tls=trusting).call("GET", "/", _headers(), b"")
        assert got.body == b"{}"
        with pytest.raises(http1.ConnectFailed) as caught:
            await pool_for(port, tls=ssl.create_default_context()).call("GET", "/", _headers(), b"")
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        listening.close()
        await listening.wait_closed()


async def test_a_call_waiting_longer_than_the_connect_timeout_for_a_busy_pool_fails(scripted) -> None:  # type: ignore[no-untyped-def]
    release = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await scripted(script)
    pool = pool_for(server.port, size=1, connect_timeout=0.3)
    first = asyncio.create_task(pool.call("GET", "/", _headers(), b""))
    await asyncio.sleep(0.05)
    with pytest.raises(http1.PoolBusy):
        await pool.call("GET", "/", _headers(), b"")
    release.set()
    assert (await first).status == 200
    pool.close()


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


async def test_an_answer_arriving_after_the_caller_gave_up_is_dropped_with_the_connection() -> None:
    connection = http1._Connection(asyncio.get_running_loop(), 1024, 1024, 5.0)
    transport = FakeTransport()
    connection.connection_made(transport)
    waiter = connection.send("GET", b"GET / HTTP/1.1\r\n\r\n")
    waiter.cancel()  # what cancelling the awaiting task does at once; the task runs later
    connection.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert transport.closing and connection.closed and not connection.reusable
    connection.abandon()
