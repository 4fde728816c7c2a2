"""Modes: enforce (the default), observe (forward as received, record the verdict), rewrite off."""

from __future__ import annotations

import gzip
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.context import RequestContext
from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from gateway.proxy import images
from gateway.service.state import RUNTIME
from tests.conftest import Gateway, GatewayFactory, Recorder, raw_request

IMAGE = "33ad552d-1149-471c-8190-ff6776174a00"
PATH = f"/v2/images/{IMAGE}"
FORBIDDEN_V21 = b'[{"op": "replace", "path": "/__os_type", "value": "Windows"}]'
V20_ADD = b'[{"add": "/team", "value": "infra", "extra": 1}]'
V21_NAME = b'[ {"path": "/name", "op": "replace", "value": "x"} ]'


class Decisions:
    """The context of each image PATCH once decided: what metrics and the report label by."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.contexts: list[RequestContext] = []
        decide = images.patch_image

        async def recording(request: web.BaseRequest, context: RequestContext, *args: Any) -> web.StreamResponse:
            try:
                return await decide(request, context, *args)
            finally:
                self.contexts.append(context)

        monkeypatch.setattr(images, "patch_image", recording)

    def last(self) -> tuple[str | None, str | None, str | None, str | None]:
        """(mode, shape, outcome, reason): in observe mode, what enforce would have done."""
        context = self.contexts[-1]
        return context.mode, context.shape, context.outcome, context.reason


async def start(make_gateway: GatewayFactory, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, **patch_settings: Any) -> tuple[Gateway, Decisions]:
    gateway = await make_gateway(recorder.url, patch=patch_settings)
    return gateway, Decisions(monkeypatch)


async def send(http: aiohttp.ClientSession, gateway: Gateway, content_type: str | None, body: bytes, **headers: str) -> int:
    sent = dict(headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    async with http.patch(gateway.url + PATH, data=body, headers=sent) as response:
        await response.read()
        return response.status


# -- enforce -------------------------------------------------------------------------------


async def test_enforce_is_the_default_and_says_so(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, decisions = await start(make_gateway, recorder, monkeypatch)
    assert await send(http, gateway, V21_MEDIA_TYPE, FORBIDDEN_V21) == 400
    assert decisions.last() == ("enforce", "v2.1", "rejected", "forbidden_attribute")
    assert await send(http, gateway, V20_MEDIA_TYPE, b'[{"replace": "/name", "value": "x"}]') == 200
    assert decisions.last() == ("enforce", "v2.0", "rewritten", None)
    assert [(seen.raw_path, seen.headers["Content-Type"]) for seen in recorder.seen] == [(PATH, V21_MEDIA_TYPE)]


# -- observe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "headers", "shape", "would", "reason"),
    [
        (V21_MEDIA_TYPE, FORBIDDEN_V21, {}, "v2.1", "rejected", "forbidden_attribute"),
        (V20_MEDIA_TYPE, b'[{"replace": "/min_disk", "value": 1}]', {}, "v2.0", "rejected", "forbidden_attribute"),
        (V21_MEDIA_TYPE, b"[{", {}, "v2.1", "rejected", "malformed_json"),
        (V21_MEDIA_TYPE, b'[{"op": "test", "path": "/a"}]', {}, "v2.1", "rejected", "bad_op"),
        ("application/json", V21_NAME, {}, "unsupported", "rejected", "unsupported_media_type"),
        (V21_MEDIA_TYPE, gzip.compress(FORBIDDEN_V21, mtime=0), {"Content-Encoding": "gzip"}, "v2.1", "rejected", "content_encoding"),
        (V20_MEDIA_TYPE, V20_ADD, {}, "v2.0", "rewritten", None),
        (V21_MEDIA_TYPE + "; charset=UTF-8", V21_NAME, {}, "v2.1", "forwarded", None),
    ],
)
async def test_observe_forwards_the_original_bytes_and_records_what_enforce_would_do(
    make_gateway: GatewayFactory,
    recorder: Recorder,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    content_type: str,
    body: bytes,
    headers: dict[str, str],
    shape: str,
    would: str,
    reason: str | None,
) -> None:
    caplog.set_level(logging.INFO, logger="ims_gateway.patch")
    gateway, decisions = await start(make_gateway, recorder, monkeypatch, mode="observe")
    assert await send(http, gateway, content_type, body, **headers, **{"X-Request-Id": "req-observed"}) == 200
    (seen,) = recorder.seen
    assert (seen.method, seen.raw_path, seen.body) == ("PATCH", PATH, body)
    assert seen.headers["Content-Type"] == content_type
    assert seen.headers.get("Content-Encoding") == headers.get("Content-Encoding")
    assert decisions.last() == ("observe", shape, would, reason)
    logged = [r.getMessage() for r in caplog.records if r.name == "ims_gateway.patch"]
    if would == "forwarded":
        assert logged == []
    else:
        assert logged == [f"observe mode: req-observed {shape} body would have been {would}" + (f" ({reason})" if reason else "")]


async def test_observe_never_reads_the_image_for_the_v20_add_check(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, _ = await start(make_gateway, recorder, monkeypatch, mode="observe")
    assert await send(http, gateway, V20_MEDIA_TYPE, V20_ADD) == 200
    assert [seen.method for seen in recorder.seen] == ["PATCH"]


async def test_observe_forwards_a_request_without_a_body(
    make_gateway: GatewayFactory, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, decisions = await start(make_gateway, recorder, monkeypatch, mode="observe")
    request = f"PATCH {PATH} HTTP/1.1\r\nHost: gw\r\nContent-Type: {V21_MEDIA_TYPE}\r\nConnection: close\r\n\r\n".encode()
    response = await raw_request(gateway.url, request)
    assert response.status == 200
    assert recorder.seen[0].body == b""
    # aiohttp's client states an empty PATCH body as Content-Length: 0, as for any pass-through.
    assert recorder.seen[0].headers.get("Content-Length", "0") == "0"
    assert "Transfer-Encoding" not in recorder.seen[0].headers
    assert decisions.last() == ("observe", "v2.1", "rejected", "missing_body")


@pytest.mark.parametrize("chunked", [False, True])
async def test_observe_streams_a_body_over_the_limit_whole(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    gateway, decisions = await start(make_gateway, recorder, monkeypatch, mode="observe", max_body_bytes=100)
    body = b'[{"op": "replace", "path": "/name", "value": "' + b"x" * 5000 + b'"}]'

    async def pieces() -> Any:
        for start in range(0, len(body), 700):
            yield body[start : start + 700]

    data = pieces() if chunked else body
    async with http.patch(gateway.url + PATH, data=data, headers={"Content-Type": V21_MEDIA_TYPE}) as response:
        assert response.status == 200
    assert recorder.seen[0].body == body
    assert decisions.last() == ("observe", "v2.1", "rejected", "too_large")


async def test_observe_records_a_brownout_refusal_and_still_forwards(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = await make_gateway(
        recorder.url,
        patch={"mode": "observe"},
        deprecation={"v20_brownouts": ["2024-05-02T09:00:00Z/2024-05-02T10:00:00Z"], "v20_deprecated_at": "2023-06-30T23:59:59Z"},
    )
    decisions = Decisions(monkeypatch)
    gateway.app[RUNTIME].clock = lambda: datetime(2024, 5, 2, 9, 30, tzinfo=UTC)
    async with http.patch(gateway.url + PATH, data=V20_ADD, headers={"Content-Type": V20_MEDIA_TYPE}) as response:
        assert response.status == 200
        assert response.headers["Deprecation"] == "@1688169599"
    assert recorder.seen[0].body == V20_ADD
    assert decisions.last() == ("observe", "v2.0", "rejected", "brownout")


# -- enforce with rewrite off ----------------------------------------------------------------


async def test_rewrite_off_forwards_accepted_v20_bodies_unchanged(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, decisions = await start(make_gateway, recorder, monkeypatch, rewrite=False)
    assert await send(http, gateway, V20_MEDIA_TYPE, V20_ADD) == 200
    (seen,) = recorder.seen  # IMS applies v2.0's own add semantics: no read-before-write here
    assert (seen.method, seen.body, seen.headers["Content-Type"]) == ("PATCH", V20_ADD, V20_MEDIA_TYPE)
    assert seen.headers["Content-Length"] == str(len(V20_ADD))
    assert decisions.last() == ("enforce", "v2.0", "forwarded", None)


async def test_rewrite_off_still_refuses_what_the_policy_forbids(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, decisions = await start(make_gateway, recorder, monkeypatch, rewrite=False)
    assert await send(http, gateway, V20_MEDIA_TYPE, b'[{"replace": "/visibility", "value": "public"}]') == 400
    assert recorder.seen == []
    assert decisions.last() == ("enforce", "v2.0", "rejected", "forbidden_attribute")


async def test_rewrite_setting_is_irrelevant_to_v21(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, _ = await start(make_gateway, recorder, monkeypatch, rewrite=False)
    assert await send(http, gateway, V21_MEDIA_TYPE, V21_NAME) == 200
    assert recorder.seen[0].body == V21_NAME
