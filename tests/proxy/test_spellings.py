"""Every header the gateway decides on, in every spelling an HTTP server accepts.

A header name may come in any letter case; a value may carry spaces around it, come in a
comma list, or be split over repeated fields (which some WSGI servers join with ", ").
Each case is sent as raw bytes and checked twice: what the client gets, and what reached
the stand-in upstream (nothing, when the gateway refuses).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from gateway.patch.parser import V20_MEDIA_TYPE as V20
from gateway.patch.parser import V21_MEDIA_TYPE as V21
from tests.conftest import Gateway, GatewayFactory, RawResponse, Recorder, raw_request

IMAGE = "/v2/images/0b8e5e02-8ab0-4ff6-9c4e-bd1b1a47d9e7"
FORBIDDEN = b'[{"op": "replace", "path": "/min_ram", "value": 4096}]'
ALLOWED = b'[{"op": "replace", "path": "/name", "value": "renamed"}]'


@pytest.fixture
async def gateway(recorder: Recorder, make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(recorder.url)


async def send(
    gateway: Gateway,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    version: str = "HTTP/1.1",
    length: bool = True,
    close: bool = True,
) -> RawResponse:
    lines = [f"{method} {target} {version}", "Host: gw.example"]
    lines += [f"{name}:{value}" for name, value in headers]
    if length and (body or method in ("PATCH", "POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return await raw_request(gateway.url, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def error_code(response: RawResponse) -> str:
    return str(json.loads(response.body)["error"]["code"])


def patches(recorder: Recorder) -> list[bytes]:
    """The bodies of the PATCHes that reached the upstream (the gateway's own GETs aside)."""
    return [seen.body for seen in recorder.seen if seen.method == "PATCH"]


# --- Content-Type: which bodies are json-patch, which are forms -------------------------

JSON_PATCH_SPELLINGS = [
    V21,
    V21.upper(),
    "Application/OpenStack-Images-V2.1-Json-Patch",
    f"  {V21}  ",
    f"{V21}; charset=utf-8",
    f"{V21.upper()} ;charset=UTF-8",
    f"application/json, {V21}",
    f"{V20}",
    f" {V20.upper()} ",
]


@pytest.mark.parametrize("content_type", JSON_PATCH_SPELLINGS)
async def test_a_forbidden_patch_is_refused_in_every_json_patch_spelling(
    gateway: Gateway, recorder: Recorder, content_type: str
) -> None:
    # Glance reads the media type exactly (parameters aside): a spelling it would not take
    # as json-patch is a 415 here; the body is judged under the ones it takes. Either way,
    # nothing reaches the upstream.
    body = FORBIDDEN if "2.1" in content_type else b'[{"replace": "/min_ram", "value": 4096}]'
    response = await send(gateway, "PATCH", IMAGE, [("Content-Type", content_type)], body)
    expected = 400 if content_type.strip().split(";")[0].strip() in (V20, V21) else 415
    assert response.status == expected, response.body
    assert (b"min_ram" in response.body) is (expected == 400)
    assert patches(recorder) == []


async def test_json_patch_split_over_repeated_content_type_fields_is_inspected(gateway: Gateway, recorder: Recorder) -> None:
    # A server that joins repeated fields reads "application/json, <json-patch>".
    response = await send(gateway, "PATCH", IMAGE, [("Content-Type", "application/json"), ("content-type", V21)], FORBIDDEN)
    assert response.status == 400
    assert patches(recorder) == []


@pytest.mark.parametrize("content_type", [V21.upper(), f" {V21} ", f"text/plain, {V21}", f"{V20.title()};x=1"])
async def test_json_patch_on_another_path_or_method_is_refused_in_every_spelling(
    gateway: Gateway, recorder: Recorder, content_type: str
) -> None:
    # Any reader could take it for an image PATCH: refused, as a foreign media type or as a
    # json-patch body off its one route.
    response = await send(gateway, "POST", "/v2/schemas/image", [("Content-Type", content_type)], FORBIDDEN)
    assert response.status in (400, 415)
    assert recorder.seen == []


@pytest.mark.parametrize("content_type", ["application/json-patch+json", "application/json", "APPLICATION/JSON"])
async def test_other_media_types_on_other_paths_pass(gateway: Gateway, recorder: Recorder, content_type: str) -> None:
    response = await send(gateway, "POST", "/v2/schemas/image", [("Content-Type", content_type)], b"{}")
    assert response.status == 200
    assert [seen.headers["Content-Type"] for seen in recorder.seen] == [content_type]


FORM_SPELLINGS = [
    "application/x-www-form-urlencoded",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "Application/X-Www-Form-Urlencoded; charset=utf-8",
    "  application/x-www-form-urlencoded  ",
    "multipart/form-data; boundary=xyz",
    "MULTIPART/Form-Data ; boundary=xyz",
    "application/json, application/x-www-form-urlencoded",
]


@pytest.mark.parametrize("content_type", FORM_SPELLINGS)
async def test_form_bodies_are_refused_in_every_spelling(gateway: Gateway, recorder: Recorder, content_type: str) -> None:
    response = await send(gateway, "POST", "/v2/images/x/members", [("Content-Type", content_type)], b"_method=PATCH")
    assert response.status == 400
    assert b"Form bodies are not accepted" in response.body
    assert recorder.seen == []


async def test_a_form_in_a_repeated_content_type_field_is_refused(gateway: Gateway, recorder: Recorder) -> None:
    headers = [("Content-Type", "application/json"), ("CONTENT-TYPE", "application/x-www-form-urlencoded")]
    response = await send(gateway, "POST", "/v2/images/x/members", headers, b"_method=PATCH")
    assert response.status == 400
    assert recorder.seen == []


# --- Content-Encoding: an image PATCH body must be plain ---------------------------------


@pytest.mark.parametrize(
    "codings",
    [
        [("Content-Encoding", "gzip")],
        [("Content-Encoding", "GZIP")],
        [("Content-Encoding", "Gzip")],
        [("content-encoding", "deflate")],
        [("CONTENT-ENCODING", "  br  ")],
        [("Content-Encoding", "identity, gzip")],
        [("Content-Encoding", "IDENTITY,GZIP")],
        [("Content-Encoding", "identity"), ("content-encoding", "gzip")],
        [("Content-Encoding", "x-gzip")],
    ],
    ids=lambda codings: " + ".join(f"{name}: {value}" for name, value in codings),
)
async def test_compressed_patch_bodies_are_refused_in_every_spelling(
    gateway: Gateway, recorder: Recorder, codings: list[tuple[str, str]]
) -> None:
    response = await send(gateway, "PATCH", IMAGE, [("Content-Type", V21), *codings], ALLOWED)
    assert response.status == 400
    assert b"Content-Encoding" in response.body
    assert patches(recorder) == []


@pytest.mark.parametrize("coding", ["identity", "IDENTITY", " Identity ", "identity, identity"])
async def test_identity_coding_in_any_spelling_is_plain(gateway: Gateway, recorder: Recorder, coding: str) -> None:
    response = await send(gateway, "PATCH", IMAGE, [("Content-Type", V21), ("Content-Encoding", coding)], ALLOWED)
    assert response.status == 200, response.body
    assert patches(recorder) == [ALLOWED]


# --- Transfer-Encoding: only chunked, in any spelling -----------------------------------

CHUNKED_BODY = b"5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize("coding", ["chunked", "CHUNKED", "Chunked", " chunked "])
async def test_chunked_in_any_letter_case_is_framed_and_forwarded(gateway: Gateway, recorder: Recorder, coding: str) -> None:
    headers = [("Transfer-Encoding", coding)]
    response = await send(gateway, "POST", "/v2/images/x/members", headers, CHUNKED_BODY, length=False)
    assert response.status == 200
    assert [seen.body for seen in recorder.seen] == [b"hello"]


@pytest.mark.parametrize(
    "codings",
    [
        [("Transfer-Encoding", "gzip, chunked")],
        [("transfer-encoding", "GZIP,CHUNKED")],
        [("Transfer-Encoding", "identity, chunked")],
        [("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("transfer-encoding", "gzip")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
        [("TRANSFER-ENCODING", "deflate ,  chunked")],
    ],
    ids=lambda codings: " + ".join(f"{name}: {value}" for name, value in codings),
)
async def test_other_transfer_codings_are_not_implemented_in_any_spelling(
    gateway: Gateway, recorder: Recorder, codings: list[tuple[str, str]]
) -> None:
    response = await send(gateway, "POST", "/v2/images/x/members", codings, CHUNKED_BODY, length=False)
    assert response.status in (400, 501)
    assert recorder.seen == []


@pytest.mark.parametrize("coding", ["chunked", "CHUNKED"])
async def test_transfer_encoding_in_http_1_0_is_refused_in_any_spelling(
    gateway: Gateway, recorder: Recorder, coding: str
) -> None:
    headers = [("transfer-ENCODING", coding)]
    response = await send(gateway, "POST", "/v2/images/x/members", headers, CHUNKED_BODY, version="HTTP/1.0", length=False)
    assert response.status == 400
    assert recorder.seen == []


# --- Hop-by-hop headers and what Connection names ---------------------------------------

HOP_BY_HOP_SPELLINGS = [
    ("keep-alive", "timeout=5"),
    ("KEEP-ALIVE", "timeout=5"),
    ("Keep-Alive", "timeout=5"),
    ("te", "trailers"),
    ("TE", "trailers"),
    ("trailer", "X-Checksum"),
    ("TRAILER", "X-Checksum"),
    ("proxy-connection", "keep-alive"),
    ("PROXY-CONNECTION", "keep-alive"),
    ("Proxy-Authorization", "Basic eDp5"),
    ("proxy-AUTHENTICATE", "Basic"),
]


@pytest.mark.parametrize(("name", "value"), HOP_BY_HOP_SPELLINGS)
async def test_hop_by_hop_headers_never_reach_the_upstream_in_any_letter_case(
    gateway: Gateway, recorder: Recorder, name: str, value: str
) -> None:
    response = await send(gateway, "GET", "/v2/images", [(name, value), ("X-Kept", "yes")])
    assert response.status == 200
    seen = recorder.seen[0].headers
    assert name not in seen
    assert seen["X-Kept"] == "yes"
    assert not [raw for raw, _ in recorder.seen[0].raw_headers if raw.lower() == name.lower().encode()]


@pytest.mark.parametrize(
    "connection",
    [
        [("Connection", "X-Private")],
        [("Connection", "x-private")],
        [("connection", "X-PRIVATE")],
        [("Connection", "  x-Private  ")],
        [("Connection", "keep-alive, X-Private")],
        [("Connection", "keep-alive,x-private,  X-Other")],
        [("Connection", "keep-alive"), ("CONNECTION", "X-Private")],
    ],
    ids=lambda headers: " + ".join(f"{name}: {value}" for name, value in headers),
)
async def test_headers_connection_names_are_dropped_in_every_spelling(
    gateway: Gateway, recorder: Recorder, connection: list[tuple[str, str]]
) -> None:
    headers = [*connection, ("X-PRIVATE", "secret"), ("x-other", "2"), ("X-Kept", "yes")]
    response = await send(gateway, "GET", "/v2/images", headers, close=False)
    assert response.status == 200
    seen = recorder.seen[0].headers
    assert "X-Private" not in seen
    assert "Connection" not in seen
    assert seen["X-Kept"] == "yes"
    assert ("X-Other" in seen) is not any("other" in value.lower() for _, value in connection)


@pytest.mark.parametrize(
    "connection",
    [
        "Authorization",
        "AUTHORIZATION",
        "  x-auth-token  ",
        "keep-alive, Content-Type",
        "close,CONTENT-LENGTH",
        "x-sdk-date",
        "HOST",
    ],
)
async def test_connection_may_not_name_a_kept_header_in_any_spelling(
    gateway: Gateway, recorder: Recorder, connection: str
) -> None:
    headers = [("Connection", connection), ("Authorization", "x"), ("X-Auth-Token", "t"), ("X-Sdk-Date", "20260101T000000Z")]
    response = await send(gateway, "GET", "/v2/images", headers, close=False)
    assert response.status == 400
    assert b"The Connection header may not name" in response.body
    assert recorder.seen == []


# --- Method-override headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-HTTP-Method-Override", "PATCH"),
        ("x-http-method-override", "patch"),
        ("X-HTTP-METHOD-OVERRIDE", "  PATCH  "),
        ("X-Http-Method", "DELETE"),
        ("x-http-method", "delete"),
        ("X-Method-Override", "PUT"),
        ("X-METHOD-OVERRIDE", ""),
    ],
)
async def test_method_override_headers_are_refused_in_every_spelling(
    gateway: Gateway, recorder: Recorder, name: str, value: str
) -> None:
    response = await send(gateway, "POST", IMAGE, [(name, value), ("Content-Type", "application/json")], b"{}")
    assert response.status == 400
    assert b"send the real method instead" in response.body
    assert recorder.seen == []


# --- Routing headers: "_" and "-" alike -------------------------------------------------

ROUTING_SPELLINGS = [
    "SCRIPT_NAME",
    "script_name",
    "Script-Name",
    "SCRIPT-NAME",
    "PATH_INFO",
    "path-info",
    "X-Forwarded-Prefix",
    "x_forwarded_prefix",
    "X-ORIGINAL-URL",
    "x_original_url",
    "X-Envoy-Original-Path",
    "Request-Method",
    "X_Any_Underscore",
]


@pytest.mark.parametrize("name", ROUTING_SPELLINGS)
async def test_routing_headers_are_dropped_in_every_spelling(gateway: Gateway, recorder: Recorder, name: str) -> None:
    response = await send(gateway, "GET", "/v2/images", [(name, "/foo"), ("X-Kept", "yes")])
    assert response.status == 200
    seen = recorder.seen[0]
    assert name not in seen.headers
    assert not [raw for raw, _ in seen.raw_headers if raw.lower().replace(b"_", b"-") == name.lower().replace("_", "-").encode()]
    assert seen.headers["X-Kept"] == "yes"


@pytest.mark.parametrize("name", ROUTING_SPELLINGS)
async def test_routing_headers_are_refused_in_every_spelling_when_configured(
    recorder: Recorder, make_gateway: GatewayFactory, name: str
) -> None:
    gateway = await make_gateway(recorder.url, server={"routing_headers": "refuse"})
    response = await send(gateway, "GET", "/v2/images", [(name, "/foo")])
    assert response.status == 400
    assert name.encode() in response.body
    assert recorder.seen == []


@pytest.mark.parametrize("name", ["X-Forwarded-For", "Content-Type", "X-Auth-Token", "Script", "Path"])
async def test_names_without_underscore_that_are_not_routing_headers_pass(
    gateway: Gateway, recorder: Recorder, name: str
) -> None:
    response = await send(gateway, "GET", "/v2/images", [(name, "v")])
    assert response.status == 200
    assert name in recorder.seen[0].headers


# --- X-Forwarded-*: appended to, never replaced -----------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([("X-Forwarded-For", "10.0.0.1")], "10.0.0.1, 127.0.0.1"),
        ([("x-forwarded-for", "10.0.0.1")], "10.0.0.1, 127.0.0.1"),
        ([("X-FORWARDED-FOR", "  10.0.0.1  ")], "10.0.0.1, 127.0.0.1"),
        ([("X-Forwarded-For", "10.0.0.1, 10.0.0.2")], "10.0.0.1, 10.0.0.2, 127.0.0.1"),
        ([("X-Forwarded-For", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2")], "10.0.0.1, 10.0.0.2, 127.0.0.1"),
        ([], "127.0.0.1"),
    ],
)
async def test_x_forwarded_for_is_appended_to_in_every_spelling(
    gateway: Gateway, recorder: Recorder, sent: list[tuple[str, str]], expected: str
) -> None:
    response = await send(gateway, "GET", "/v2/images", sent)
    assert response.status == 200
    assert recorder.seen[0].headers.getall("X-Forwarded-For") == [expected]


@pytest.mark.parametrize(
    ("sent", "proto", "host"),
    [
        ([], "http", "gw.example"),
        ([("x-forwarded-proto", "HTTPS"), ("X-FORWARDED-HOST", "edge.example")], "HTTPS, http", "edge.example, gw.example"),
        ([("X-Forwarded-Proto", " https "), ("x-forwarded-proto", "http")], "https, http, http", "gw.example"),
    ],
)
async def test_x_forwarded_proto_and_host_are_appended_to_in_every_spelling(
    gateway: Gateway, recorder: Recorder, sent: list[tuple[str, str]], proto: str, host: str
) -> None:
    response = await send(gateway, "GET", "/v2/images", sent)
    assert response.status == 200
    seen = recorder.seen[0].headers
    assert seen.getall("X-Forwarded-Proto") == [proto]
    assert seen.getall("X-Forwarded-Host") == [host]


# --- Upgrade and Expect: the gateway's own business -------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [("Upgrade", "h2c"), ("Connection", "Upgrade")],
        [("UPGRADE", "h2c"), ("connection", "upgrade")],
        [("upgrade", "  TLS/1.2  ")],
        [("Upgrade", "h2c, TLS/1.2")],
    ],
    ids=lambda headers: " + ".join(f"{name}: {value}" for name, value in headers),
)
async def test_upgrade_in_any_spelling_is_not_forwarded_and_the_connection_closes(
    gateway: Gateway, recorder: Recorder, headers: list[tuple[str, str]]
) -> None:
    response = await send(gateway, "GET", "/v2/images", headers, close=False)
    assert response.status == 200
    assert response.headers.get("Connection", "").lower() == "close"
    seen = recorder.seen[0].headers
    assert "Upgrade" not in seen
    assert "Connection" not in seen


@pytest.mark.parametrize("expect", ["100-continue", "100-CONTINUE", "100-Continue"])
@pytest.mark.parametrize("name", ["Expect", "expect", "EXPECT"])
async def test_expect_100_continue_is_answered_by_the_gateway_in_any_spelling(
    gateway: Gateway, recorder: Recorder, name: str, expect: str
) -> None:
    response = await send(gateway, "PATCH", IMAGE, [(name, expect), ("Content-Type", V21)], ALLOWED)
    assert response.status == 200, response.body
    assert patches(recorder) == [ALLOWED]
    assert all("Expect" not in seen.headers for seen in recorder.seen)


@pytest.mark.parametrize("name", ["Expect", "EXPECT"])
async def test_expect_100_continue_with_a_forbidden_patch_is_refused(gateway: Gateway, recorder: Recorder, name: str) -> None:
    response = await send(gateway, "PATCH", IMAGE, [(name, "100-continue"), ("Content-Type", V21)], FORBIDDEN)
    assert response.status == 400
    assert patches(recorder) == []
