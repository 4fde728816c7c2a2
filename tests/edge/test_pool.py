"""The gateway's own upstream pool against aiohttp's client: the same exchanges, the same answers.

A canned upstream answers each request with exact bytes (``CASES``). Every case is sent
through the pool (``Upstream.exchange`` with a body in memory) and through aiohttp's
ClientSession as the gateway configures it (``upstream.create_session``); both results are
reduced to what the gateway would forward: status, end-to-end headers and body, or the
kind of failure. Where the pool is stricter on purpose, the case says so and both sides
are pinned.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.config.schema import UpstreamSettings
from gateway.edge import pool as pool_module
from gateway.edge import upstream
from gateway.edge.errors import UpstreamError
from gateway.edge.headers import end_to_end
from gateway.vocabulary import FailureKind
from testing.ports import refusing_port, unanswered_port

# The gateway serves on uvloop, and its hardening reads aiohttp internals that differ there: both loops.
pytestmark = pytest.mark.both_loops

BODY = b'{"id": "img"}'


def answer(status: str, headers: list[str], body: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode() + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


# name -> (bytes the upstream sends, then whether it closes the connection)
CASES: dict[str, tuple[bytes, bool]] = {
    "plain": (answer("200 OK", [f"Content-Length: {len(BODY)}", "Content-Type: application/json"], BODY), False),
    "chunked": (answer("200 OK", ["Transfer-Encoding: chunked"], chunked(BODY[:5], BODY[5:])), False),
    "chunked with trailers": (answer("200 OK", ["Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"), False),
    "empty": (answer("200 OK", ["Content-Length: 0"]), False),
    "no content": (answer("204 No Content", []), False),
    "not modified, length given": (answer("304 Not Modified", ["Content-Length: 13", "ETag: \"x\""]), False),
    "continue first": (answer("100 Continue", []) + answer("200 OK", ["Content-Length: 2"], b"ok"), False),
    "early hints first": (answer("103 Early Hints", ["Link: </a>; rel=preload"]) + answer("200 OK", ["Content-Length: 2"], b"ok"), False),
    "error status": (answer("503 Service Unavailable", ["Content-Length: 4", "Retry-After: 5"], b"busy"), False),
    "close after": (answer("200 OK", ["Content-Length: 2", "Connection: close"], b"ok"), True),
    "odd reason": (answer("299 Quite Fine Thanks", ["Content-Length: 2"], b"ok"), False),
    "repeated header": (answer("200 OK", ["Set-Cookie: a=1", "Set-Cookie: b=2", "Content-Length: 0"]), False),
    "hop-by-hop": (answer("200 OK", ["Keep-Alive: timeout=5", "Connection: keep-alive, X-Private", "X-Private: 1", "Content-Length: 0"]), False),
    "non-ascii value": (answer("200 OK", ["Content-Length: 0"]).replace(b"\r\n\r\n", b"\r\nX-Name: caf\xc3\xa9\r\n\r\n"), False),
    # Both refuse: the answer cannot be framed.
    "two lengths": (answer("200 OK", ["Content-Length: 2", "Content-Length: 3"], b"ok"), True),
    "length and chunked": (answer("200 OK", ["Content-Length: 2", "Transfer-Encoding: chunked"], chunked(b"ok")), True),
    "bad chunk": (answer("200 OK", ["Transfer-Encoding: chunked"], b"zz\r\nok\r\n0\r\n\r\n"), True),
    "bad status line": (b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", True),
    "not http": (b"SSH-2.0-OpenSSH_9.2\r\n", True),
    "truncated": (answer("200 OK", ["Content-Length: 100"], b"only ten b"), True),
    "reset before answering": (b"", True),
}

# The pool refuses on purpose what aiohttp's client reads leniently (module docstring of
# gateway.edge.pool): (what the pool gives, what aiohttp gives).
STRICTER: dict[str, tuple[bytes, bool]] = {
    "body until close": (answer("200 OK", ["Content-Type: text/plain"], b"all of it"), True),
    "gzip then chunked": (answer("200 OK", ["Transfer-Encoding: gzip, chunked"], chunked(b"x")), True),
    "switching protocols": (answer("101 Switching Protocols", ["Upgrade: websocket", "Connection: Upgrade"]), True),
}


@dataclasses.dataclass
class Canned:
    """An upstream that answers /case/NAME with CASES[NAME] (or STRICTER[NAME])."""

    connections: int = 0
    requests: list[tuple[str, str, bytes]] = dataclasses.field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append((method, target, body))
                name = target.removeprefix("/case/").replace("%20", " ")
                served += 1
                if name == "once":  # answered on a fresh connection; a reused one is closed unanswered
                    if served > 1:
                        break
                    name = "plain"
                if name == "silent":
                    await asyncio.sleep(30)
                if name == "half":  # an answer whose body is still coming
                    writer.write(answer("200 OK", ["Content-Length: 100"], b"ten bytes."))
                    await writer.drain()
                    await asyncio.sleep(30)
                data, close = {**CASES, **STRICTER}[name]
                if method == "HEAD" and name == "plain":
                    data = data[: -len(BODY)]
                writer.write(data)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def canned() -> AsyncIterator[Canned]:
    server = Canned()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    yield server
    listener.close()


SETTINGS = UpstreamSettings(url="http://127.0.0.1", connect_timeout=2.0, read_timeout=0.5)


@pytest.fixture
async def both(canned: Canned) -> AsyncIterator[tuple[upstream.Upstream, aiohttp.ClientSession]]:
    base = f"http://127.0.0.1:{canned.port}"
    session = upstream.create_session(SETTINGS)
    pool = upstream.create_pool(SETTINGS, base)
    yield upstream.Upstream(SETTINGS, base, session, pool), session
    pool.close()
    await session.close()


Outcome = tuple[object, ...]


async def via_pool(gateway_upstream: upstream.Upstream, method: str, path: str) -> Outcome:
    from multidict import CIMultiDict

    try:
        async with gateway_upstream.exchange(method, path, CIMultiDict({"Accept": "*/*"}), None) as reply:
            body = await upstream.read_whole(reply)
            return ("answer", reply.status, reply.reason, sorted(end_to_end(reply.headers).items()), body)
    except UpstreamError as exc:
        return ("failure", exc.failure.kind)


async def via_aiohttp(session: aiohttp.ClientSession, base: str, method: str, path: str) -> Outcome:
    try:
        async with session.request(method, base + path, headers={"Accept": "*/*"}, allow_redirects=False) as response:
            reply = upstream.Streamed(response)
            body = await reply.read(upstream.MAX_ANSWER_BYTES)
            return ("answer", reply.status, reply.reason, sorted(end_to_end(reply.headers).items()), body)
    except upstream.UPSTREAM_ERRORS as exc:
        return ("failure", upstream.classify_failure(exc).kind)


def comparable(outcome: Outcome) -> Outcome:
    """Headers aiohttp's client parser adds or reads differently are not the answer's."""
    if outcome[0] != "answer":
        return outcome
    kind, status, reason, headers, body = outcome
    # Names in any letter case are the same header (aiohttp's parser spells some its own way).
    named = sorted((k.lower(), v) for k, v in headers)
    return (kind, status, reason, [(k, v) for k, v in named if k != "content-length" or status not in (204, 304)], body)


@pytest.mark.parametrize("name", list(CASES))
async def test_the_pool_answers_as_aiohttps_client_does(
    both: tuple[upstream.Upstream, aiohttp.ClientSession], canned: Canned, name: str
) -> None:
    gateway_upstream, session = both
    path = "/case/" + name.replace(" ", "%20")
    ours = await via_pool(gateway_upstream, "GET", path)
    theirs = await via_aiohttp(session, f"http://127.0.0.1:{canned.port}", "GET", path)
    assert comparable(ours) == comparable(theirs)


@pytest.mark.parametrize(
    ("name", "pool_kind"),
    [("body until close", FailureKind.RESET), ("gzip then chunked", FailureKind.RESET), ("switching protocols", FailureKind.RESET)],
)
async def test_what_the_pool_refuses_on_purpose(
    both: tuple[upstream.Upstream, aiohttp.ClientSession], canned: Canned, name: str, pool_kind: FailureKind
) -> None:
    gateway_upstream, session = both
    path = "/case/" + name.replace(" ", "%20")
    assert await via_pool(gateway_upstream, "GET", path) == ("failure", pool_kind)
    theirs = await via_aiohttp(session, f"http://127.0.0.1:{canned.port}", "GET", path)
    assert theirs[0] == "answer"  # aiohttp's client reads it: the gateway would forward a guess


async def test_silence_is_a_timeout_on_both(both: tuple[upstream.Upstream, aiohttp.ClientSession], canned: Canned) -> None:
    gateway_upstream, session = both
    assert await via_pool(gateway_upstream, "GET", "/case/silent") == ("failure", FailureKind.TIMEOUT)
    assert await via_aiohttp(session, f"http://127.0.0.1:{canned.port}", "GET", "/case/silent") == ("failure", FailureKind.TIMEOUT)


async def test_refused_connections_are_refused_on_both() -> None:
    with refusing_port() as port:
        base = f"http://127.0.0.1:{port}"
        session = upstream.create_session(SETTINGS)
        gateway_pool = upstream.create_pool(SETTINGS, base)
        try:
            gateway_upstream = upstream.Upstream(SETTINGS, base, session, gateway_pool)
            assert await via_pool(gateway_upstream, "GET", "/") == ("failure", FailureKind.REFUSED)
            assert await via_aiohttp(session, base, "GET", "/") == ("failure", FailureKind.REFUSED)
        finally:
            gateway_pool.close()
            await session.close()


async def test_a_connection_that_is_never_accepted_is_a_timeout_on_both() -> None:
    settings = dataclasses.replace(SETTINGS, connect_timeout=0.1, read_timeout=60.0)
    with unanswered_port() as port:
        base = f"http://127.0.0.1:{port}"
        session = upstream.create_session(settings)
        gateway_pool = upstream.create_pool(settings, base)
        try:
            gateway_upstream = upstream.Upstream(settings, base, session, gateway_pool)
            assert await via_pool(gateway_upstream, "GET", "/") == ("failure", FailureKind.TIMEOUT)
            assert await via_aiohttp(session, base, "GET", "/") == ("failure", FailureKind.TIMEOUT)
        finally:
            gateway_pool.close()
            await session.close()


async def test_head_answers_have_no_body_and_are_not_reused(
    both: tuple[upstream.Upstream, aiohttp.ClientSession], canned: Canned
) -> None:
    gateway_upstream, session = both
    ours = await via_pool(gateway_upstream, "HEAD", "/case/plain")
    assert ours == await via_aiohttp(session, f"http://127.0.0.1:{canned.port}", "HEAD", "/case/plain")
    assert ours[-1] == b""
    before = canned.connections
    await via_pool(gateway_upstream, "GET", "/case/plain")
    assert canned.connections == before + 1  # after a HEAD the connection is closed


async def test_a_kept_alive_connection_is_reused_and_a_closed_one_is_not(
    both: tuple[upstream.Upstream, aiohttp.ClientSession], canned: Canned
) -> None:
    gateway_upstream, _ = both
    for _ in range(3):
        assert (await via_pool(gateway_upstream, "GET", "/case/plain"))[1] == 200
    assert canned.connections == 1
    assert (await via_pool(gateway_upstream, "GET", "/case/close%20after"))[1] == 200
    assert (await via_pool(gateway_upstream, "GET", "/case/plain"))[1] == 200
    assert canned.connections == 2


async def test_after_a_broken_answer_the_connection_is_not_reused(
    both: tuple[upstream.Upstream, aiohttp.ClientSession], canned: Canned
) -> None:
    gateway_upstream, _ = both
    assert (await via_pool(gateway_upstream, "GET", "/case/plain"))[1] == 200
    assert (await via_pool(gateway_upstream, "GET", "/case/truncated"))[0] == "failure"
    assert (await via_pool(gateway_upstream, "GET", "/case/plain"))[1] == 200
    assert canned.connections == 2


async def test_an_abandoned_answer_closes_its_connection(
    both: tuple[upstream.Upstream, aiohttp.ClientSession], canned: Canned
) -> None:
    from multidict import CIMultiDict

    gateway_upstream, _ = both
    async with gateway_upstream.exchange("GET", "/case/half", CIMultiDict(), None) as reply:
        assert reply.status == 200  # released before the body has all arrived
    assert (await via_pool(gateway_upstream, "GET", "/case/plain"))[1] == 200
    assert canned.connections == 2


async def test_a_stale_connection_is_retried_once_for_an_idempotent_request_only(
    both: tuple[upstream.Upstream, aiohttp.ClientSession], canned: Canned
) -> None:
    from multidict import CIMultiDict

    gateway_upstream, _ = both
    assert (await via_pool(gateway_upstream, "GET", "/case/once"))[1] == 200
    # The kept-alive connection is closed by the upstream as the next request arrives on it:
    # a GET is sent again on a new connection, and answered.
    assert (await via_pool(gateway_upstream, "GET", "/case/once"))[1] == 200
    assert canned.connections == 2
    # A PATCH is never sent twice: the client sees the failure.
    with pytest.raises(UpstreamError) as failed:
        async with gateway_upstream.exchange("PATCH", "/case/once", CIMultiDict(), b"[]"):
            pass
    assert failed.value.failure.kind is FailureKind.RESET
    assert [method for method, _, _ in canned.requests].count("PATCH") == 1
    assert canned.connections == 2


def test_a_header_cannot_add_a_line() -> None:
    with pytest.raises(ValueError, match="line break or NUL"):
        pool_module.encode("GET", "/", [("X-A", "1\r\nX-Injected: 2")], None)
    with pytest.raises(ValueError, match="line break or NUL"):
        pool_module.encode("GET", "/", [("X-A", "1\x00")], None)
    assert pool_module.encode("PATCH", "/x", [("Host", "h")], b"{}") == b"PATCH /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
    given = pool_module.encode("PATCH", "/x", [("content-length", "2")], b"{}")
    assert given.count(b"ength") == 1


async def test_more_waiting_than_the_pool_holds_times_out(canned: Canned) -> None:
    from multidict import CIMultiDict

    settings = dataclasses.replace(SETTINGS, pool_size=1, connect_timeout=0.3, read_timeout=5.0)
    base = f"http://127.0.0.1:{canned.port}"
    session = upstream.create_session(settings)
    gateway_pool = upstream.create_pool(settings, base)
    gateway_upstream = upstream.Upstream(settings, base, session, gateway_pool)
    try:
        async with gateway_upstream.exchange("GET", "/case/half", CIMultiDict(), None):
            assert await via_pool(gateway_upstream, "GET", "/case/plain") == ("failure", FailureKind.TIMEOUT)
        assert (await via_pool(gateway_upstream, "GET", "/case/plain"))[1] == 200
    finally:
        gateway_pool.close()
        await session.close()


@pytest.mark.parametrize("trusted", [True, False])
async def test_tls_is_verified_alike(canned: Canned, tmp_path: object, trusted: bool) -> None:
    import ssl
    from pathlib import Path

    import trustme

    ca, other = trustme.CA(), trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    listener = await asyncio.start_server(canned.handle, "127.0.0.1", 0, ssl=server_context)
    port = listener.sockets[0].getsockname()[1]
    bundle = Path(str(tmp_path)) / "ca.pem"
    (ca if trusted else other).cert_pem.write_to_path(str(bundle))
    settings = dataclasses.replace(SETTINGS, ca_file=str(bundle))
    base = f"https://127.0.0.1:{port}"
    session = upstream.create_session(settings)
    gateway_pool = upstream.create_pool(settings, base)
    try:
        ours = await via_pool(upstream.Upstream(settings, base, session, gateway_pool), "GET", "/case/plain")
        theirs = await via_aiohttp(session, base, "GET", "/case/plain")
        assert comparable(ours) == comparable(theirs)
        assert ours[:2] == (("answer", 200) if trusted else ("failure", FailureKind.TLS))
    finally:
        gateway_pool.close()
        await session.close()
        listener.close()
