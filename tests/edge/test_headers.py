"""Header hygiene: hop-by-hop headers, routing headers and what Connection may not drop."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.edge.headers import (
    connection_drops_kept_header,
    end_to_end,
    fresh_request_id,
    routing_header,
    routing_headers,
)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("SCRIPT_NAME", "script_name"),
        ("Script-Name", "script_name"),
        ("script_name", "script_name"),
        ("PATH_INFO", "path_info"),
        ("X-Forwarded-Prefix", "x_forwarded_prefix"),
        ("x_forwarded_prefix", "x_forwarded_prefix"),
        ("X-Original-URL", "x_original_url"),
        ("X-Rewrite-Url", "x_rewrite_url"),
        ("X-Envoy-Original-Path", "x_envoy_original_path"),
        ("Content_Type", "underscore"),
        ("X_Auth_Token", "underscore"),
        ("Content-Type", None),
        ("X-Auth-Token", None),
        ("X-Forwarded-For", None),
    ],
)
def test_routing_headers_in_every_spelling_a_wsgi_server_maps(name: str, label: str | None) -> None:
    assert routing_header(name) == label


def test_routing_headers_are_listed_in_order_with_their_labels() -> None:
    headers = CIMultiDict([("Host", "h"), ("SCRIPT_NAME", "/a"), ("X-Kept", "1"), ("a_b", "2")])
    assert routing_headers(headers) == [("SCRIPT_NAME", "script_name"), ("a_b", "underscore")]


@pytest.mark.parametrize(
    ("connection", "kept"),
    [
        ("close", None),
        ("keep-alive, Upgrade, HTTP2-Settings", None),
        ("X-Private", None),
        ("Content-Type", "Content-Type"),
        ("close, content-length", "content-length"),
        (" CONTENT-ENCODING ", "CONTENT-ENCODING"),
        ("Host", "Host"),
        ("authorization", "authorization"),
        ("X-Sdk-Date", "X-Sdk-Date"),
        ("X-Auth-Token", "X-Auth-Token"),
    ],
)
def test_connection_may_not_name_a_header_the_gateway_decides_on(connection: str, kept: str | None) -> None:
    assert connection_drops_kept_header(CIMultiDict([("Connection", connection)])) == kept


def test_connection_is_read_across_repeated_fields() -> None:
    headers = CIMultiDict([("Connection", "close"), ("connection", "Content-Type")])
    assert connection_drops_kept_header(headers) == "Content-Type"


def test_end_to_end_drops_hop_by_hop_and_what_connection_names_in_any_letter_case() -> None:
    headers = CIMultiDict(
        [("connection", "X-Private"), ("x-private", "1"), ("KEEP-ALIVE", "5"), ("Proxy-Foo", "1"), ("te", "trailers"), ("X-Kept", "y")]
    )
    assert list(end_to_end(headers).items()) == [("X-Kept", "y")]


def test_request_ids_are_version_4_uuids() -> None:
    rid = fresh_request_id()
    assert rid.startswith("req-") and rid[18] == "4" and rid[23] in "89ab" and len(rid) == 40
