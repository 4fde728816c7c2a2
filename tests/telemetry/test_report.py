"""The migration report (/deprecations) and the log line of each deprecated call."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDictProxy

from gateway.patch.parser import V20_MEDIA_TYPE as V20
from gateway.patch.parser import V21_MEDIA_TYPE as V21
from gateway.service.state import METRICS
from gateway.telemetry.calls import DeprecatedCall, sample, utc
from gateway.telemetry.report import MigrationReport, prefers_html, render_html
from tests.conftest import Gateway, GatewayFactory, Recorder

TOKEN = "gAAAAABtok-SECRET-7f3a9c"
CREDENTIALS = {
    "X-Auth-Token": TOKEN,
    "Authorization": f"Bearer {TOKEN}-bearer",
    "Cookie": f"session={TOKEN}-cookie",
    "X-Subject-Token": f"{TOKEN}-subject",
}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
RENAME_V21 = '[{"op": "replace", "path": "/name", "value": "x"}]'
MEMORY_STORE = {
    "type": "memory", "location": "memory", "answered": True, "problem": None,
    "flushed_at": None, "pending_calls": 0, "dropped_calls": 0,
}  # fmt: skip


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def call(at: float, client: str = "glance", project: str | None = "p1", address: str = "10.0.0.1", **facts: Any) -> DeprecatedCall:
    request = make_mocked_request("PATCH", "/v2/images/x", headers={"User-Agent": f"{client}/1"})
    defaults: dict[str, Any] = {
        "request_id": "req-1",
        "client": client,
        "shape": "v2.0",
        "mode": "enforce",
        "outcome": "rewritten",
        "reason": None,
        "status": 200,
        "changes": [("replace", "name")],
        "at": at,
    }
    return dataclasses.replace(DeprecatedCall.of(request, **{**defaults, **facts}), address=address, project_id=project)


# -- the table ------------------------------------------------------------------------


def test_calls_of_one_client_fold_into_one_entry() -> None:
    clock = Clock()
    report = MigrationReport(10, clock)
    report.record(call(100.0))
    report.record(call(200.0, shape="v2.1", outcome="forwarded", changes=[("add", "custom"), ("replace", "name")]))
    report.record(call(300.0, outcome="rejected", reason="forbidden_attribute", status=400, changes=[("replace", "system")]))
    assert report.document() == {
        "generated_at": utc(clock.now),
        "scope": "this gateway process since it started",
        "max_clients": 10,
        "evicted": 0,
        "expired": 0,
        "retention": "",
        "store": MEMORY_STORE,
        "replicas": [],
        "clients": [
            {
                "client": "glance",
                "user_agent": "glance/1",
                "address": "10.0.0.1",
                "forwarded_for": None,
                "project_id": "p1",
                "count": 3,
                "shapes": {"v2.0": 2, "v2.1": 1},
                "modes": {"enforce": 3},
                "ops": {"replace": 3, "add": 1},
                "attributes": {"name": 2, "custom": 1, "system": 1},
                "outcomes": {"rewritten": 1, "forwarded": 1, "rejected": 1},
                "signatures": {},
                "access_key": None,
                "first_seen": "1970-01-01T00:01:40Z",
                "last_seen": "1970-01-01T00:05:00Z",
                "last_seen_by": None,
            }
        ],
    }


@pytest.mark.parametrize(
    ("key", "separate"),
    [
        ({"client": "other-client"}, True),
        ({"project": "p2"}, True),
        ({"project": None}, True),
        ({"address": "10.0.0.2"}, True),
        ({}, False),
    ],
)
def test_entries_are_keyed_by_client_address_and_project(key: dict[str, Any], separate: bool) -> None:
    report = MigrationReport(10)
    report.record(call(1.0))
    report.record(call(2.0, **key))
    assert len(report) == (2 if separate else 1)


def test_the_least_recently_seen_entry_is_evicted_when_full() -> None:
    report = MigrationReport(3)
    for n, project in enumerate(["a", "b", "c"]):
        report.record(call(float(n), project=project))
    report.record(call(10.0, project="a"))
    report.record(call(11.0, project="d"))
    assert sorted(e.project_id or "" for e in report.entries()) == ["a", "c", "d"]
    assert report.evicted == 1
    for n in range(1000):
        report.record(call(100.0 + n, project=f"flood-{n}"))
    assert len(report) == 3
    assert report.evicted == 1001
    assert [e.project_id for e in report.entries()] == ["flood-999", "flood-998", "flood-997"]


def test_a_smaller_bound_evicts_at_once() -> None:
    report = MigrationReport(5)
    for n in range(5):
        report.record(call(float(n), project=str(n)))
    report.resize(2)
    assert sorted(e.project_id or "" for e in report.entries()) == ["3", "4"]
    assert (report.max_clients, report.evicted) == (2, 3)


def test_entries_are_listed_by_count_then_recency() -> None:
    report = MigrationReport(10)
    report.record(call(1.0, project="once-old"))
    report.record(call(2.0, project="twice"))
    report.record(call(3.0, project="twice"))
    report.record(call(4.0, project="once-new"))
    assert [e.project_id for e in report.entries()] == ["twice", "once-new", "once-old"]


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        (None, 10, None),
        ("plain", 10, "plain"),
        ("tab\there\r\nnew", 20, "tab?here??new"),
        ("\u00e9t\u00e9", 10, "?t?"),
        ("x" * 11, 10, "xxxxxxx..."),
        ("x" * 10, 10, "x" * 10),
    ],
)
def test_header_samples_are_printable_and_bounded(text: str | None, limit: int, shown: str | None) -> None:
    assert sample(text, limit) == shown


# -- /deprecations: negotiation and HTML -------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/html", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("text/*", True),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0, text/html;q=0.1", True),
        ("text/html;q=abc", False),
        ("text/html;q=2", False),
        ("text/html; Q=1.000", True),
        ("TEXT/HTML", True),
        ("text/html;level=1;q=0.9, */*;q=0.1", True),
        (",,;", False),
    ],
)
def test_html_only_for_a_client_that_prefers_it(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


def test_the_html_page_escapes_what_clients_send() -> None:
    report = MigrationReport(10)
    report.record(call(1.0, client="x<b>", project="<img src=x onerror=alert(1)>"))
    page = render_html(report.snapshot())
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "x&lt;b&gt;" in page
    assert page.count("<tr>") == 2


# -- through the gateway ---------------------------------------------------------------


@pytest.fixture
async def gateway(recorder: Recorder, make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway(recorder.url)


async def patch(http: aiohttp.ClientSession, gateway: Gateway, content_type: str, body: str, **headers: str) -> int:
    async with http.patch(
        gateway.url + "/v2/images/0b5e7a8c-2f6d-4c1e-9a7b-3d2e1f0a9b8c",
        data=body,
        headers={"Content-Type": content_type, **CREDENTIALS, **headers},
    ) as response:
        await response.read()
        return response.status


async def fetch(http: aiohttp.ClientSession, url: str, accept: str = "application/json") -> tuple[str, str, CIMultiDictProxy[str]]:
    async with http.get(url, headers={"Accept": accept, "Accept-Encoding": "identity"}) as response:
        assert response.status == 200
        return response.content_type, await response.text(), response.headers


async def test_the_report_lists_each_client_with_what_it_did(
    gateway: Gateway, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ims_gateway.deprecated")
    who = {"User-Agent": "python-glanceclient/4.1.0 keystoneauth1/5.1.2", "X-Project-Id": "proj-1", "X-Forwarded-For": "203.0.113.7"}
    assert await patch(http, gateway, V20, '[{"replace": "/name", "value": "n"}, {"add": "/team", "value": "t"}]', **who) == 200
    assert await patch(http, gateway, V21, '[{"op": "replace", "path": "/__os_type", "value": "x"}]', **who) == 400
    assert await patch(http, gateway, V21, RENAME_V21, **{"User-Agent": "curl/8.4.0"}) == 200
    async with http.get(gateway.url + "/v2/images") as response:
        assert response.status == 200

    content_type, text, headers = await fetch(http, gateway.admin_url + "/deprecations")
    assert content_type == "application/json"
    document = json.loads(text)
    assert TIME.fullmatch(document.pop("generated_at"))
    clients = document.pop("clients")
    assert document == {
        "scope": "this gateway process since it started", "max_clients": 1000, "evicted": 0,
        "expired": 0, "retention": "30d", "store": MEMORY_STORE, "replicas": [],
    }  # fmt: skip
    for entry in clients:
        assert TIME.fullmatch(entry.pop("first_seen")) and TIME.fullmatch(entry.pop("last_seen"))
        assert entry.pop("last_seen_by") == socket.gethostname()
    assert clients == [
        {
            "client": "python-glanceclient",
            "user_agent": "python-glanceclient/4.1.0 keystoneauth1/5.1.2",
            "address": "127.0.0.1",
            "forwarded_for": "203.0.113.7",
            "project_id": "proj-1",
            "count": 2,
            "shapes": {"v2.0": 1, "v2.1": 1},
            "modes": {"enforce": 2},
            "ops": {"replace": 2, "add": 1},
            "attributes": {"name": 1, "custom": 1, "system": 1},
            "outcomes": {"rewritten": 1, "rejected": 1},
            "signatures": {},
            "access_key": None,
        },
        {
            "client": "curl",
            "user_agent": "curl/8.4.0",
            "address": "127.0.0.1",
            "forwarded_for": None,
            "project_id": None,
            "count": 1,
            "shapes": {"v2.1": 1},
            "modes": {"enforce": 1},
            "ops": {"replace": 1},
            "attributes": {"name": 1},
            "outcomes": {"forwarded": 1},
            "signatures": {},
            "access_key": None,
        },
    ]

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ims_gateway.deprecated"]
    assert len(lines) == 3
    first = lines[0]
    assert TIME.fullmatch(first.pop("time"))
    assert first.pop("request_id").startswith("req-")
    assert first == {
        "event": "deprecated_call",
        "client": "python-glanceclient",
        "user_agent": "python-glanceclient/4.1.0 keystoneauth1/5.1.2",
        "address": "127.0.0.1",
        "forwarded_for": "203.0.113.7",
        "project_id": "proj-1",
        "shape": "v2.0",
        "mode": "enforce",
        "outcome": "rewritten",
        "enforced": True,
        "reason": None,
        "status": 200,
        "ops": {"replace": 1, "add": 1},
        "attributes": {"name": 1, "custom": 1},
    }
    assert (lines[1]["outcome"], lines[1]["reason"], lines[1]["status"]) == ("rejected", "forbidden_attribute", 400)


async def test_no_credential_appears_in_the_report_the_logs_or_the_metrics(
    gateway: Gateway, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await patch(http, gateway, V20, '[{"replace": "/name", "value": "n"}]', **{"User-Agent": "glance/1", "X-Project-Id": "p"})
    await patch(http, gateway, V21, '[{"op": "replace", "path": "/__os_type", "value": "x"}]')
    await patch(http, gateway, "text/plain", "[]")
    _, as_json, _ = await fetch(http, gateway.admin_url + "/deprecations")
    _, as_html, _ = await fetch(http, gateway.admin_url + "/deprecations", accept="text/html")
    _, exposition, _ = await fetch(http, gateway.admin_url + "/metrics", accept="text/plain")
    assert json.loads(as_json)["clients"]
    assert "ims_gateway_deprecated_calls_total" in exposition
    assert any(r.name == "ims_gateway.deprecated" for r in caplog.records)
    for where in (as_json, as_html, exposition, caplog.text):
        assert "SECRET" not in where
        assert "Bearer" not in where


async def test_the_report_is_bounded_by_configuration(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(recorder.url, report={"max_clients": 2})
    for project in ("p1", "p2", "p3"):
        assert await patch(http, gateway, V21, RENAME_V21, **{"X-Project-Id": project}) == 200
    _, text, _ = await fetch(http, gateway.admin_url + "/deprecations")
    document = json.loads(text)
    assert [entry["project_id"] for entry in document["clients"]] == ["p3", "p2"]
    assert (document["max_clients"], document["evicted"]) == (2, 1)
    assert len(gateway.app[METRICS].report) == 2


async def test_a_browser_gets_an_escaped_html_page(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    agent = "<script>alert('ua')</script>/1.0"
    await patch(http, gateway, V20, '[{"replace": "/name", "value": "n"}]', **{"User-Agent": agent, "X-Project-Id": '"><script>p</script>'})
    content_type, page, headers = await fetch(
        http, gateway.admin_url + "/deprecations", accept="text/html,application/xhtml+xml,*/*;q=0.8"
    )
    assert content_type == "text/html"
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;ua&#x27;)&lt;/script&gt;/1.0" in page
    assert "&quot;&gt;&lt;script&gt;p&lt;/script&gt;" in page
    assert "script_alert" in page
    assert headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Vary"] == "Accept"


async def test_long_or_binary_headers_are_sampled(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    await patch(http, gateway, V21, RENAME_V21, **{"User-Agent": "long/1 " + "x" * 1000, "X-Project-Id": "p" * 500})
    _, text, _ = await fetch(http, gateway.admin_url + "/deprecations")
    (entry,) = json.loads(text)["clients"]
    assert entry["user_agent"] == ("long/1 " + "x" * 1000)[:253] + "..."
    assert entry["project_id"] == "p" * 125 + "..."
    assert entry["client"] == "long"
