"""Properties of the running gateway over generated PATCH requests.

Whatever the body, path spelling or media type: the gateway never answers 5xx, and no
request reaching the upstream changes a forbidden attribute.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.patch import parser as patch
from gateway.patch.policy import Policy
from gateway.service.app import build_app, runner_options
from tests.conftest import make_settings

POLICY = Policy()
IMAGE_ID = "33ad552d-1149-471c-8190-ff6776174a00"


@dataclass
class Upstream:
    """Answers like IMS would for an image with only custom attributes; keeps every PATCH."""

    patches: list[tuple[str, str | None, bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.method == "PATCH":
            self.patches.append((request.raw_path, request.headers.get("Content-Type"), body))
        return web.json_response({"id": IMAGE_ID, "name": "x"})


@dataclass
class Running:
    port: int
    upstream: Upstream


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    """The gateway and its upstream on an event loop in a thread, for synchronous hypothesis tests."""
    loop = asyncio.new_event_loop()
    upstream = Upstream()
    started = threading.Event()
    state: dict[str, object] = {}

    async def start() -> None:
        upstream_app = web.Application(client_max_size=1024**2)
        upstream_app.router.add_route("*", "/{tail:.*}", upstream.handle)
        upstream_runner = web.AppRunner(upstream_app, access_log=None)
        await upstream_runner.setup()
        upstream_site = web.TCPSite(upstream_runner, "127.0.0.1", 0)
        await upstream_site.start()
        upstream_port = upstream_runner.addresses[0][1]
        settings_ = make_settings(upstream={"url": f"http://127.0.0.1:{upstream_port}"})
        runner = web.AppRunner(build_app(settings_), **runner_options(settings_))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state.update(runners=(runner, upstream_runner), port=runner.addresses[0][1])
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    started.wait(30)
    yield Running(int(state["port"]), upstream)  # type: ignore[call-overload]

    async def stop() -> None:
        for runner in state["runners"]:  # type: ignore[attr-defined]
            await runner.cleanup()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


ALLOWED = ["name", "__description", "custom", "ID", "a/b", "a~b", "description", "_x"]
FORBIDDEN = ["__os_type", "id", "status", "min_ram", "tags", "locations", "os_glance_x", "__new", "visibility", "__platform"]
NAMES = st.sampled_from(ALLOWED * 4 + FORBIDDEN)
WHITESPACE = st.sampled_from([""] * 8 + [" ", "\t", "\u00a0", "\u2003", "\u200b", "\x1f", "\x85"])
OPS = st.sampled_from(["add", "remove", "replace"] * 4 + ["test", "Add", None, 1])


@st.composite
def pointers(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 20)) == 20:
        return draw(st.one_of(st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2)))
    name = draw(NAMES).replace("~", "~0").replace("/", "~1")
    token = draw(WHITESPACE) + name + draw(WHITESPACE)
    prefix = draw(st.sampled_from(["/"] * 8 + ["//", "", "/ /"]))
    suffix = draw(st.sampled_from([""] * 12 + ["/", "/-", "/0"]))
    return prefix + token + suffix


@st.composite
def operations(draw: st.DrawFn, v20: bool) -> str:
    pointer = draw(pointers())
    pointer_json = json.dumps(pointer)
    if draw(st.booleans()):
        pointer_json = pointer_json.replace("_", "\\u005f", 1)  # an escape that decodes to "_"
    members = []
    if v20 and draw(st.integers(0, 9)) < 9:
        members.append(f'"{draw(st.sampled_from(["add", "remove", "replace"]))}": {pointer_json}')
    else:
        members.append(f'"op": {json.dumps(draw(OPS))}')
        members.append(f'"path": {pointer_json}')
    if draw(st.integers(0, 5)) < 5:
        members.append(f'"value": {json.dumps(draw(st.one_of(st.text(max_size=5), st.integers(), st.none())))}')
    if draw(st.integers(0, 15)) == 15:
        members.append(f'"path": {json.dumps("/" + draw(NAMES))}')  # a duplicate member
    draw(st.randoms()).shuffle(members)
    return "{" + ", ".join(members) + "}"


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    content_type = draw(st.sampled_from([patch.V20_MEDIA_TYPE, patch.V21_MEDIA_TYPE, patch.V21_MEDIA_TYPE + "; charset=utf-8"]))
    v20 = content_type == patch.V20_MEDIA_TYPE
    items = draw(st.lists(operations(v20), max_size=3))
    body = "[" + ", ".join(items) + "]"
    if draw(st.integers(0, 20)) == 20:
        body = body[: draw(st.integers(0, len(body)))]
    return content_type, body.encode()


TARGETS = st.sampled_from(
    [f"/v2/images/{IMAGE_ID}", f"/v2/images/{IMAGE_ID}/", f"//v2/images/{IMAGE_ID}",
     f"/v2/./images/{IMAGE_ID}", f"/v2/%69mages/{IMAGE_ID}?x=1", f"/V2.1/Images/{IMAGE_ID}"]
)


def send(port: int, method: str, target: str, content_type: str, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", "gw")
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def forwarded_violations(content_type: str | None, body: bytes) -> list[object]:
    shape = patch.shape_of(content_type)
    media_type = patch.V20_MEDIA_TYPE if shape is patch.Shape.V20 else patch.V21_MEDIA_TYPE
    return list(POLICY.violations(patch.parse(media_type, body, glance_attribute_checks=False).changes))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=bodies(), target=TARGETS, method=st.sampled_from(["PATCH", "PATCH", "patch"]))
def test_never_5xx_and_never_a_forbidden_change_upstream(
    running: Running, request: tuple[str, bytes], target: str, method: str
) -> None:
    content_type, body = request
    before = len(running.upstream.patches)
    status = send(running.port, method, target, content_type, body)
    event(f"status {status}")
    assert status < 500
    for _, forwarded_type, forwarded in running.upstream.patches[before:]:
        assert forwarded_violations(forwarded_type, forwarded) == []
    if status == 200:
        assert len(running.upstream.patches) == before + 1
