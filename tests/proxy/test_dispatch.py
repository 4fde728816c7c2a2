"""The transparent streaming proxy: everything that is not an image PATCH."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import re
import socket
import ssl
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from testing.ports import refusing_port, unanswered_port
from tests.conftest import (
    Gateway,
    GatewayFactory,
    Recorder,
    Seen,
    breaks_mid_body,
    raw_request,
)

# The gateway serves on uvloop, and its hardening reads aiohttp internals that differ there: both loops.
pytestmark = pytest.mark.both_loops

REQUEST_ID = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
async def gateway(recorder: Recorder, make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(recorder.url)


@pytest.mark.parametrize(
    "target",
    [
        "/v2/images?limit=2&marker=abc&sort_key=name&sort_dir=asc",
        "/v2/images/%7Bid%7D/../x//y/./z?a=%20&a=2&b",
        "/v2/IMAGES/abc;param?x",
        "/v2/images?name=%E4%B8%AD%E6%96%87&q=a+b",
        "/",
    ],
)
async def test_method_path_and_query_reach_the_upstream_exactly_as_sent(
    gateway: Gateway, recorder: Recorder, target: str
) -> None:
    response = await raw_request(
        gateway.url, f"GET {target} HTTP/1.1\r\nHost: ims.example\r\nConnection: close\r\n\r\n".encode()
    )
    assert response.status == 200
    assert [(s.method, s.raw_path) for s in recorder.seen] == [("GET", target)]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PROPFIND"])
async def test_every_method_is_forwarded(gateway: Gateway, recorder: Recorder, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, gateway.url + "/v2/images/x/members", data=b"{}" if method in ("POST", "PUT") else None) as response:
        assert response.status == 200
    assert recorder.seen[0].method == method


async def test_end_to_end_headers_go_both_ways(gateway: Gateway, recorder: Recorder) -> None:
    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.Response(status=206, body=b"partial", content_type="application/octet-stream")
        response.headers["X-Openstack-Request-Id"] = "req-upstream-1"
        response.headers["Content-Range"] = "bytes 0-6/100"
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        return response

    recorder.respond = respond
    sent = (
        "GET /v2/images/x/file HTTP/1.1\r\nHost: gw.example:8080\r\nX-Auth-Token: secret-token\r\n"
        "X-Project-Id: p1\r\nAccept: application/octet-stream\r\nRange: bytes=0-6\r\n"
        "User-Agent: python-glanceclient\r\nX-Custom: one\r\nX-Custom: two\r\nConnection: close\r\n\r\n"
    )
    response = await raw_request(gateway.url, sent.encode())
    seen = recorder.seen[0].headers
    assert seen["X-Auth-Token"] == "secret-token"
    assert seen["X-Project-Id"] == "p1"
    assert seen["Accept"] == "application/octet-stream"
    assert seen["Range"] == "bytes=0-6"
    assert seen["User-Agent"] == "python-glanceclient"
    assert seen.getall("X-Custom") == ["one", "two"]
    assert response.status == 206
    assert response.body == b"partial"
    assert response.headers["Content-Range"] == "bytes 0-6/100"
    assert response.headers["X-Openstack-Request-Id"] == "req-upstream-1"
    assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]


async def test_nothing_is_added_by_the_http_client_library(gateway: Gateway, recorder: Recorder) -> None:
    await raw_request(gateway.url, b"POST /v2/images HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    seen = recorder.seen[0]
    names = {name.lower() for name in seen.headers}
    assert names == {"host", "content-length", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
    assert seen.body == b"{}"


async def test_hop_by_hop_headers_are_removed_both_ways(gateway: Gateway, recorder: Recorder) -> None:
    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.headers["Connection"] = "X-Upstream-Private"
        response.headers["X-Upstream-Private"] = "1"
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Proxy-Authenticate"] = "Basic"
        response.headers["Upgrade"] = "h2c"
        response.headers["X-Kept"] = "yes"
        return response

    recorder.respond = respond
    sent = (
        "GET /v2/images HTTP/1.1\r\nHost: gw\r\nConnection: close, X-Client-Private\r\nX-Client-Private: 1\r\n"
        "Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
        "Trailer: X-T\r\nUpgrade: websocket\r\nExpect: 100-continue\r\nX-Kept: yes\r\n\r\n"
    )
    response = await raw_request(gateway.url, sent.encode())
    seen = recorder.seen[0].headers
    for name in ("X-Client-Private", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer", "Upgrade", "Expect"):
        assert name not in seen, name
    assert seen["X-Kept"] == "yes"
    for name in ("X-Upstream-Private", "Keep-Alive", "Proxy-Authenticate", "Upgrade"):
        assert name not in response.headers, name
    assert response.headers.get("X-Kept") == "yes", response.headers


@pytest.mark.parametrize(
    "request_line",
    [
        "GET /v2/images HTTP/1.1",
        # A PATCH's answer is read whole (Upstream.call) and sent back in one write.
        "PATCH /v2/images/1bea47ed HTTP/1.1\r\ncontent-type: application/openstack-images-v2.1-json-patch\r\ncontent-length: 2",
    ],
)
async def test_hop_by_hop_headers_are_removed_whatever_their_letter_case(
    gateway: Gateway, recorder: Recorder, request_line: str
) -> None:
    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.Response(text="[]")
        response.headers["connection"] = "x-upstream-private"
        response.headers["X-UPSTREAM-PRIVATE"] = "1"
        response.headers["keep-alive"] = "timeout=5"
        response.headers["proxy-authenticate"] = "Basic"
        response.headers["upgrade"] = "h2c"
        response.headers["x-kept"] = "yes"
        return response

    recorder.respond = respond
    body = "[]" if request_line.startswith("PATCH") else ""
    sent = (
        f"{request_line}\r\nhost: gw\r\nconnection: close, x-client-private\r\nX-CLIENT-PRIVATE: 1\r\n"
        "keep-alive: timeout=5\r\nproxy-authorization: Basic eA==\r\nte: trailers\r\ntrailer: x-t\r\n"
        f"upgrade: websocket\r\nx-kept: yes\r\n\r\n{body}"
    )
    response = await raw_request(gateway.url, sent.encode())
    assert response.status == 200
    seen = recorder.seen[0].headers
    for name in ("X-Client-Private", "Keep-Alive", "Proxy-Authorization", "TE", "Trailer", "Upgrade"):
        assert name not in seen, name
    assert seen["X-Kept"] == "yes"
    for name in ("X-Upstream-Private", "Keep-Alive", "Proxy-Authenticate", "Upgrade"):
        assert name not in response.headers, name
    assert response.headers.get("X-Kept") == "yes", response.headers


async def test_x_forwarded_headers_are_appended(gateway: Gateway, recorder: Recorder) -> None:
    sent = (
        "GET /v2/images HTTP/1.1\r\nHost: gw.example:8443\r\nX-Forwarded-For: 203.0.113.7\r\n"
        "X-Forwarded-Proto: https\r\nX-Forwarded-Host: edge.example\r\nConnection: close\r\n\r\n"
    )
    await raw_request(gateway.url, sent.encode())
    seen = recorder.seen[0].headers
    assert seen["X-Forwarded-For"] == "203.0.113.7, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "https, http"
    assert seen["X-Forwarded-Host"] == "edge.example, gw.example:8443"


async def test_upstream_host_is_sent_by_default(gateway: Gateway, recorder: Recorder) -> None:
    await raw_request(gateway.url, b"GET / HTTP/1.1\r\nHost: client.example\r\nConnection: close\r\n\r\n")
    assert recorder.seen[0].headers["Host"] == recorder.url.removeprefix("http://")


async def test_client_host_is_kept_when_configured(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(recorder.url, upstream={"preserve_host": True})
    await raw_request(gateway.url, b"GET / HTTP/1.1\r\nHost: client.example\r\nConnection: close\r\n\r\n")
    assert recorder.seen[0].headers["Host"] == "client.example"


async def test_a_request_id_is_generated_forwarded_and_echoed(gateway: Gateway, recorder: Recorder, http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.url + "/v2/images") as response:
        echoed = response.headers["X-Request-Id"]
    assert REQUEST_ID.fullmatch(echoed)
    assert recorder.seen[0].headers["X-Request-Id"] == echoed


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ({"X-Request-Id": "abc-123"}, "abc-123"),
        ({"X-Openstack-Request-Id": "req-7"}, "req-7"),
        ({"X-Request-Id": "bad id\twith spaces"}, None),
        ({"X-Request-Id": "x" * 129}, None),
    ],
)
async def test_a_client_request_id_is_propagated_when_sane(
    gateway: Gateway, recorder: Recorder, http: aiohttp.ClientSession, sent: dict[str, str], expected: str | None
) -> None:
    async with http.get(gateway.url + "/v2/images", headers=sent) as response:
        echoed = response.headers["X-Request-Id"]
    assert recorder.seen[0].headers["X-Request-Id"] == echoed
    if expected is None:
        assert REQUEST_ID.fullmatch(echoed)
    else:
        assert echoed == expected


async def test_compressed_bodies_pass_untouched_both_ways(gateway: Gateway, recorder: Recorder, http: aiohttp.ClientSession) -> None:
    compressed = gzip.compress(b'{"images": []}' * 100)

    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.Response(body=compressed, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    recorder.respond = respond
    async with http.put(
        gateway.url + "/v2/images/x/file", data=compressed, headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
    ) as response:
        body = await response.read()
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(compressed))
    assert body == compressed
    assert recorder.seen[0].body == compressed
    assert recorder.seen[0].headers["Content-Encoding"] == "gzip"


async def test_content_length_is_preserved_and_chunked_stays_chunked(gateway: Gateway, recorder: Recorder, http: aiohttp.ClientSession) -> None:
    async def chunks() -> Any:
        for _ in range(3):
            yield b"x" * 1000

    async with http.put(gateway.url + "/a", data=b"y" * 3000) as response:
        assert response.status == 200
    async with http.put(gateway.url + "/b", data=chunks()) as response:
        assert response.status == 200
    with_length, chunked = recorder.seen
    assert with_length.headers["Content-Length"] == "3000"
    assert "Transfer-Encoding" not in with_length.headers
    assert chunked.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in chunked.headers
    assert chunked.body == b"x" * 3000


async def test_chunked_upstream_response_reaches_the_client_chunked(gateway: Gateway, recorder: Recorder) -> None:
    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        return response

    recorder.respond = respond
    response = await raw_request(gateway.url, b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.body == b"one,two,three"


async def test_head_keeps_the_content_length(gateway: Gateway, recorder: Recorder) -> None:
    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.Response(body=b"z" * 1234)

    recorder.respond = respond
    response = await raw_request(gateway.url, b"HEAD /v2/images/x/file HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert response.status == 200
    assert response.headers["Content-Length"] == "1234"
    assert response.body == b""


async def test_bodies_larger_than_client_max_size_stream_both_ways(
    gateway: Gateway, recorder: Recorder, http: aiohttp.ClientSession
) -> None:
    size = 8 * 1024 * 1024  # the gateway's client_max_size is the PATCH limit, 64 KiB
    payload = bytes(range(256)) * (size // 256)
    recorder.read_body = False

    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        if request.method == "PUT":
            digest = hashlib.sha256()
            async for chunk in request.content.iter_any():
                digest.update(chunk)
            return web.json_response({"sha256": digest.hexdigest()})
        return web.Response(body=payload, content_type="application/octet-stream")

    recorder.respond = respond
    async with http.put(gateway.url + "/v2/images/x/file", data=io.BytesIO(payload)) as response:
        assert response.status == 200
        assert (await response.json())["sha256"] == hashlib.sha256(payload).hexdigest()
    async with http.get(gateway.url + "/v2/images/x/file") as response:
        assert response.headers["Content-Length"] == str(size)
        assert hashlib.sha256(await response.read()).digest() == hashlib.sha256(payload).digest()


async def test_refused_upstream_is_a_502_in_the_ims_error_shape(make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    with refusing_port() as port:
        gateway = await make_gateway(f"http://127.0.0.1:{port}")
        async with http.get(gateway.url + "/v2/images", headers={"X-Request-Id": "r-502"}) as response:
            assert response.status == 502
            assert response.headers["X-Request-Id"] == "r-502"
            assert await response.json() == {
                "error": {
                    "code": "IMSGW.0502",
                    "message": "The upstream refused the connection or could not be reached.",
                    "request_id": "r-502",
                }
            }
        async with http.get(gateway.admin_url + "/healthz") as response:
            assert response.status == 200
        async with http.get(gateway.admin_url + "/readyz") as response:
            assert response.status == 503
            assert (await response.json())["status"] == "upstream unreachable"


async def test_silent_upstream_is_a_504(recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    release = asyncio.Event()

    async def respond(request: web.Request, seen: Seen) -> web.StreamResponse:
        await release.wait()
        return web.Response(text="late")

    recorder.respond = respond
    gateway = await make_gateway(recorder.url, upstream={"read_timeout": 0.2})
    try:
        async with http.get(gateway.url + "/v2/images") as response:
            assert response.status == 504
            error = (await response.json())["error"]
            assert error["code"] == "IMSGW.0504"
            assert error["message"] == "The upstream did not answer in time."
            assert error["request_id"] == response.headers["X-Request-Id"]
    finally:
        release.set()


async def test_connect_timeout_is_a_504(make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    # The handshake never completes; the read timeout is far off, so only connect_timeout can end it.
    with unanswered_port() as port:
        gateway = await make_gateway(f"http://127.0.0.1:{port}", upstream={"connect_timeout": 0.3, "read_timeout": 60})
        async with http.get(gateway.url + "/v2/images") as response:
            assert response.status == 504
            error = (await response.json())["error"]
    assert error["code"] == "IMSGW.0504"
    assert error["message"] == "No connection to the upstream in time: it did not accept one, or the pool was busy."


async def test_an_upstream_failing_mid_body_aborts_the_client_stream(
    gateway: Gateway, recorder: Recorder, http: aiohttp.ClientSession
) -> None:
    recorder.respond = breaks_mid_body
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(gateway.url + "/v2/images/x/file") as response:
            assert response.status == 200
            await response.read()
    async with http.get(gateway.admin_url + "/healthz") as response:
        assert response.status == 200


async def test_absolute_form_targets_are_refused(gateway: Gateway, recorder: Recorder) -> None:
    response = await raw_request(
        gateway.url, b"GET http://evil.example/v2/images HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    )
    assert response.status == 400
    assert recorder.seen == []


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"])
async def test_method_override_headers_are_refused(gateway: Gateway, recorder: Recorder, http: aiohttp.ClientSession, header: str) -> None:
    async with http.post(gateway.url + "/v2/images/x", headers={header: "PATCH"}, data=b"[]") as response:
        assert response.status == 400
        assert header in (await response.json())["error"]["message"]
    assert recorder.seen == []


async def test_readiness_and_liveness(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(gateway.admin_url + "/healthz") as response:
        assert (response.status, await response.json()) == (200, {"status": "ok"})
    async with http.get(gateway.admin_url + "/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"


def _tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def test_https_upstream_verified_with_a_configured_ca(
    aiohttp_server: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    ca = trustme.CA()
    recording = Recorder()
    server = await aiohttp_server(recording.app(), ssl=_tls_server_context(ca))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    url = f"https://127.0.0.1:{server.port}"

    trusting = await make_gateway(url, upstream={"ca_file": str(ca_file)})
    async with http.get(trusting.url + "/v2/images") as response:
        assert response.status == 200
    assert recording.seen[0].headers["X-Forwarded-Proto"] == "http"

    default_trust = await make_gateway(url)
    async with http.get(default_trust.url + "/v2/images") as response:
        assert response.status == 502
        assert "certificate" in (await response.json())["error"]["message"]

    unverified = await make_gateway(url, upstream={"verify_tls": False})
    async with http.get(unverified.url + "/v2/images") as response:
        assert response.status == 200


async def test_https_listener(recorder: Recorder, make_gateway: GatewayFactory, tmp_path: Any) -> None:
    ca = trustme.CA()
    gateway = await make_gateway(recorder.url, ssl=_tls_server_context(ca))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    url = gateway.url.replace("http://", "https://")
    async with aiohttp.ClientSession() as session, session.get(url + "/v2/images", ssl=client_context) as response:
        assert response.status == 200
    assert recorder.seen[0].headers["X-Forwarded-Proto"] == "https"


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        # Small and whole: read first, then sent in one write with its headers.
        (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\": \"x\"}", 200),
        # Small but cut short: nothing was sent yet, so the client gets a clean 502.
        (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\": ", 502),
    ],
)
async def test_a_small_answer_is_relayed_whole_or_not_at_all(
    make_gateway: GatewayFactory, http: aiohttp.ClientSession, answer: bytes, status: int
) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    try:
        gateway = await make_gateway(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        async with http.get(gateway.url + "/v2/images/x") as response:
            body = await response.read()
        assert response.status == status
        if status == 200:
            assert (body, response.headers["Content-Length"]) == (b'{"id": "x"}', "11")
        else:
            assert (await response.json())["error"]["code"] == "IMSGW.0502"  # type: ignore[index]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_head_that_does_not_finish_in_time_gets_408_and_a_close(recorder: Recorder, make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway(recorder.url, server={"header_timeout": 0.3})
    host, port = gateway.url.removeprefix("http://").split(":")

    def slow_client() -> bytes:
        # Connected and sending at once, from outside the loop: the bytes are there before the
        # gateway accepts (uvloop then reads them before the connection's handler task runs).
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /v2/images HTTP/1.1\r\nHost: x\r\n")  # part of a head, and nothing more
            received = b""
            while chunk := sock.recv(65536):  # until the gateway closes
                received += chunk
            return received

    answer = await asyncio.to_thread(slow_client)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"IMSGW.0408"' in answer
    assert recorder.seen == []


async def test_a_head_in_pieces_within_the_timeout_and_an_idle_connection_are_served(
    recorder: Recorder, make_gateway: GatewayFactory
) -> None:
    gateway = await make_gateway(recorder.url, server={"header_timeout": 0.5})
    host, port = gateway.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        # Idle before any byte for longer than header_timeout: keepalive_timeout's (75 s), not
        # the head's. A slow machine only makes the idle longer, which proves as much.
        await asyncio.sleep(0.6)
        writer.write(b"GET /v2/images HTTP/1.1\r\n")
        await writer.drain()
        # Two pieces well inside the timeout (10x: a stalled loop cannot stretch 0.05 s past 0.5 s).
        await asyncio.sleep(0.05)
        writer.write(b"Host: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert [seen.raw_path for seen in recorder.seen] == ["/v2/images"]
