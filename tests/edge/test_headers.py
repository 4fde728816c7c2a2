"""Header hygiene: hop-by-hop headers, routing headers and what Connection may not drop."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.edge import headers as hygiene
from gateway.edge.headers import (
    X_FORWARDED_FOR,
    append,
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


def test_request_ids_are_lower_case_hex() -> None:
    for _ in range(20):
        digits = fresh_request_id().removeprefix("req-").replace("-", "")
        assert len(digits) == 32 and set(digits) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], ["127.0.0.1"]),
        ([("X-Forwarded-For", "10.0.0.1")], ["10.0.0.1, 127.0.0.1"]),
        ([("x-forwarded-for", "10.0.0.1, 10.0.0.2")], ["10.0.0.1, 10.0.0.2, 127.0.0.1"]),
        ([("X-Forwarded-For", "10.0.0.1"), ("X-FORWARDED-FOR", "10.0.0.2")], ["10.0.0.1, 10.0.0.2, 127.0.0.1"]),
        ([("X-Forwarded-For", "")], ["127.0.0.1"]),
    ],
)
def test_append_joins_every_field_and_adds_the_value_last(before: list[tuple[str, str]], after: list[str]) -> None:
    headers = CIMultiDict([("X-Kept", "1"), *before])
    append(headers, X_FORWARDED_FOR, "127.0.0.1")
    assert headers.getall("X-Forwarded-For") == after
    assert headers["X-Kept"] == "1"


@pytest.mark.parametrize(
    "connection",
    [
        [("Connection", "x-a,X-B")],
        [("Connection", "X-A , x-b")],
        [("Connection", "x-a"), ("CONNECTION", "x-b")],
        [("connection", "keep-alive,x-a, ,X-B")],
    ],
)
def test_end_to_end_drops_every_name_of_a_connection_list(connection: list[tuple[str, str]]) -> None:
    headers = CIMultiDict([*connection, ("X-A", "1"), ("x-a", "2"), ("x-b", "3"), ("X-Kept", "y")])
    assert list(end_to_end(headers).items()) == [("X-Kept", "y")]


@pytest.mark.parametrize("connection", ["close,Content-Type", "keep-alive,authorization"])
def test_connection_names_are_split_at_commas_without_spaces(connection: str) -> None:
    assert connection_drops_kept_header(CIMultiDict([("Connection", connection)])) == connection.split(",")[1]


@pytest.mark.parametrize("cache", ["_ROUTING_LABELS", "_HOP_BY_HOP_OF"])
def test_the_per_name_caches_stay_bounded_and_right(monkeypatch: pytest.MonkeyPatch, cache: str) -> None:
    monkeypatch.setattr(hygiene, cache, {})
    names = [f"X-Name-{number}" for number in range(5000)]
    for name in names:
        headers = CIMultiDict([(name, "1"), ("SCRIPT_NAME", "/a"), ("Keep-Alive", "5")])
        assert routing_headers(headers) == [("SCRIPT_NAME", "script_name")]
        assert list(end_to_end(headers).keys()) == [name, "SCRIPT_NAME"]
        assert len(getattr(hygiene, cache)) <= 4096
    assert routing_headers(CIMultiDict([("Path-Info", "/x"), ("a_b", "1")])) == [("Path-Info", "path_info"), ("a_b", "underscore")]


def test_a_hop_by_hop_header_repeated_in_any_letter_case_is_dropped_every_time() -> None:
    headers = CIMultiDict([("Keep-Alive", "5"), ("X-Kept", "y"), ("keep-alive", "6"), ("TE", "trailers"), ("te", "x")])
    assert list(end_to_end(headers).items()) == [("X-Kept", "y")]
