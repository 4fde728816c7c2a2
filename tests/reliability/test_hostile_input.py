"""Request smuggling, parser confusion and hostile PATCH bodies: a clear 4xx, nothing upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from testing.faulty_upstream import FaultyUpstream
from tests.reliability.conftest import (
    GatewayProcess,
    Response,
    is_ims_error,
    read_response,
)

pytestmark = pytest.mark.e2e

TOKEN = "tok-HOSTILE-7f3a9c"
HEAD = f"Host: gw\r\nX-Auth-Token: {TOKEN}\r\n"
PATCH = f"PATCH /v2/images/0b1f HTTP/1.1\r\n{HEAD}"
NAME = b'[{"op": "replace", "path": "/name", "value": "x"}]'


@pytest.fixture(scope="module")
def gateway(faulty_upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path_factory.mktemp("hostile"), faulty_upstream.url, {})
    yield process
    process.stop()


async def exchange(url: str, data: bytes) -> tuple[Response, bytes]:
    """One response, then whatever the server sends before closing (b"" when it closes at once)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        response = await asyncio.wait_for(read_response(reader), 10)
        rest = await asyncio.wait_for(reader.read(), 10) if response.headers.get("connection") == "close" else b"?"
    finally:
        writer.close()
    return response, rest


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"


def patch_with(body: bytes, content_type: str = V21_MEDIA_TYPE) -> bytes:
    return f"{PATCH}Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


FRAMING = [
    ("Content-Length and Transfer-Encoding", f"{PATCH}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked(NAME), 400),
    ("Transfer-Encoding then Content-Length", f"{PATCH}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n".encode() + chunked(NAME), 400),
    ("two different Content-Lengths", f"{PATCH}Content-Length: {len(NAME)}\r\nContent-Length: 5\r\n\r\n".encode() + NAME, 400),
    ("two equal Content-Lengths", f"{PATCH}Content-Length: {len(NAME)}\r\nContent-Length: {len(NAME)}\r\n\r\n".encode() + NAME, 400),
    ("a Content-Length list", f"{PATCH}Content-Length: {len(NAME)}, {len(NAME)}\r\n\r\n".encode() + NAME, 400),
    ("a signed Content-Length", f"{PATCH}Content-Length: +{len(NAME)}\r\n\r\n".encode() + NAME, 400),
    ("a negative Content-Length", f"{PATCH}Content-Length: -1\r\n\r\n".encode(), 400),
    ("an overflowing Content-Length", f"{PATCH}Content-Length: 99999999999999999999999\r\n\r\n".encode(), 400),
    ("a coding before chunked", f"{PATCH}Transfer-Encoding: gzip, chunked\r\n\r\n".encode() + chunked(NAME), 501),
    ("a coding before chunked, not a PATCH", f"POST /v2/images HTTP/1.1\r\n{HEAD}Transfer-Encoding: gzip, chunked\r\n\r\n".encode() + chunked(b"{}"), 501),
    ("chunked twice", f"{PATCH}Transfer-Encoding: chunked, chunked\r\n\r\n".encode() + chunked(NAME), 400),
    ("chunked not last", f"{PATCH}Transfer-Encoding: chunked, identity\r\n\r\n".encode() + chunked(NAME), 400),
    ("a misspelt chunked", f"{PATCH}Transfer-Encoding: xchunked\r\n\r\n".encode() + chunked(NAME), 400),
    ("two Transfer-Encoding fields", f"{PATCH}Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked(NAME), 400),
    ("Transfer-Encoding in HTTP/1.0", f"PATCH /v2/images/0b1f HTTP/1.0\r\n{HEAD}Transfer-Encoding: chunked\r\n\r\n".encode() + chunked(NAME), 400),
    ("a bad chunk size", f"{PATCH}Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode() + NAME, 400),
    ("an overflowing chunk size", f"{PATCH}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n".encode() + NAME, 400),
    ("obsolete line folding", f"{PATCH}X-Folded: a\r\n b\r\nContent-Length: {len(NAME)}\r\n\r\n".encode() + NAME, 400),
    ("whitespace before the colon", f"{PATCH}Content-Length : {len(NAME)}\r\n\r\n".encode() + NAME, 400),
    ("a NUL in a header value", f"{PATCH}X-Nul: a\x00b\r\n\r\n".encode(), 400),
    ("bare LF line ends", f"PATCH /v2/images/0b1f HTTP/1.1\nHost: gw\nX-Auth-Token: {TOKEN}\n\n".encode(), 400),
    ("two Host fields", f"{PATCH}Host: other\r\n\r\n".encode(), 400),
    ("a header field over the limit", f"{PATCH}X-Big: {'a' * 9000}\r\n\r\n".encode(), 431),
    ("a token over the limit", f"PATCH /v2/images/0b1f HTTP/1.1\r\nHost: gw\r\nX-Auth-Token: {TOKEN}{'a' * 9000}\r\n\r\n".encode(), 431),
    ("a request line over the limit", f"GET /v2/images?{'a' * 9000} HTTP/1.1\r\n{HEAD}\r\n".encode(), 431),
    ("too many header fields", (PATCH + "".join(f"X-{i}: 1\r\n" for i in range(200)) + "\r\n").encode(), 431),
]


@pytest.mark.parametrize(("case", "data", "status"), FRAMING, ids=[case for case, _, _ in FRAMING])
async def test_ambiguous_framing_is_refused_and_the_connection_closed(
    gateway: GatewayProcess, upstream: FaultyUpstream, case: str, data: bytes, status: int
) -> None:
    response, rest = await exchange(gateway.url, data)
    assert response.status == status, response
    assert is_ims_error(response), response
    assert response.headers["connection"] == "close"
    assert rest == b"", "a smuggled remainder must never be read as a next request"
    assert TOKEN not in response.body.decode("utf-8", "replace")
    assert upstream.requests == []


def _deep(depth: int) -> bytes:
    return b'[{"op": "replace", "path": "/name", "value": ' + b"[" * depth + b"]" * depth + b"}]"


BODIES = [
    ("invalid UTF-8", b'[{"op": "replace", "path": "/name", "value": "\xff\xfe"}]', 400),
    ("a UTF-8 BOM", b"\xef\xbb\xbf" + NAME, 400),
    ("UTF-16", NAME.decode().encode("utf-16"), 400),
    ("deeply nested JSON", _deep(20000), 400),
    ("nesting past the parser's recursion limit, shallower than the body limit", _deep(1500), 400),
    ("a number past float range", b'[{"op": "replace", "path": "/name", "value": 1e400}]', 400),
    ("an integer of 5000 digits", b'[{"op": "replace", "path": "/name", "value": ' + b"9" * 5000 + b"}]", 400),
    ("NaN", b'[{"op": "replace", "path": "/name", "value": NaN}]', 400),
    ("Infinity", b'[{"op": "replace", "path": "/name", "value": Infinity}]', 400),
    ("-Infinity", b'[{"op": "replace", "path": "/name", "value": -Infinity}]', 400),
    ("a lone surrogate in a path", b'[{"op": "replace", "path": "/\\ud800os_type", "value": "x"}]', 400),
    ("a repeated member", b'[{"op": "replace", "path": "/name", "path": "/__os_type", "value": "x"}]', 400),
    ("a NUL in a path", b'[{"op": "replace", "path": "/__os\\u0000type", "value": "x"}]', 400),
    ("a body over the limit", b'[{"op": "replace", "path": "/name", "value": "' + b"x" * 70000 + b'"}]', 413),
    ("an empty body", b"", 400),
    ("JSON null", b"null", 400),
    ("trailing garbage", NAME + b"]", 400),
]


@pytest.mark.parametrize(("case", "body", "status"), BODIES, ids=[case for case, _, _ in BODIES])
@pytest.mark.parametrize("content_type", [V20_MEDIA_TYPE, V21_MEDIA_TYPE])
@pytest.mark.parametrize("framing", ["length", "chunked"])
async def test_hostile_patch_bodies_get_a_clear_4xx_and_nothing_upstream(
    gateway: GatewayProcess, upstream: FaultyUpstream, case: str, body: bytes, status: int, content_type: str, framing: str
) -> None:
    if framing == "length":
        data = patch_with(body, content_type)
    else:
        data = f"{PATCH}Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + chunked(body)
    response, _ = await exchange(gateway.url, data)
    assert response.status == status, response
    assert is_ims_error(response), response
    assert upstream.requests == []


async def test_an_absolute_form_target_is_refused(gateway: GatewayProcess, upstream: FaultyUpstream) -> None:
    data = f"PATCH http://ims.example/v2/images/0b1f HTTP/1.1\r\n{HEAD}Content-Length: {len(NAME)}\r\n\r\n".encode() + NAME
    response, _ = await exchange(gateway.url, data)
    assert is_ims_error(response, 400)
    assert upstream.requests == []


async def test_a_request_inside_a_body_stays_body(gateway: GatewayProcess, upstream: FaultyUpstream) -> None:
    smuggled = f"GET /v2/images/smuggled HTTP/1.1\r\n{HEAD}\r\n".encode()
    data = f"POST /v2/images HTTP/1.1\r\n{HEAD}Content-Length: {len(smuggled)}\r\n\r\n".encode() + smuggled
    after = f"GET /v2/images/after HTTP/1.1\r\n{HEAD}Connection: close\r\n\r\n".encode()
    host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data + after)
        # Both answers are read: a client that hangs up early cancels what it pipelined.
        answers = [await asyncio.wait_for(read_response(reader), 10) for _ in range(2)]
    finally:
        writer.close()
    assert [answer.status for answer in answers] == [200, 200]
    assert [(r.method, r.path) for r in upstream.requests] == [("POST", "/v2/images"), ("GET", "/v2/images/after")]
    assert upstream.requests[0].body == smuggled


async def test_the_gateway_survives_every_refusal(gateway: GatewayProcess) -> None:
    assert gateway.process.poll() is None
    log = gateway.log()
    assert "Traceback" not in log, log[-3000:]
    assert TOKEN not in log

