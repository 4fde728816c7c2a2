"""PATCH /v2/images/{id} through the gateway, in front of the emulator that records every request."""

from __future__ import annotations

import gzip
import json
from typing import Any

import aiohttp
import pytest

from gateway.patch.parser import ACCEPT_PATCH, V20_MEDIA_TYPE, V21_MEDIA_TYPE
from ims_emulator.app import RecordedRequest, build_emulator_app
from testing.ports import refusing_port
from tests.conftest import Gateway, GatewayFactory, raw_request

V20 = V20_MEDIA_TYPE
V21 = V21_MEDIA_TYPE


class Stack:
    """A gateway in front of a journaling emulator, and a client."""

    def __init__(self, gateway: Gateway, emulator_url: str, journal: list[RecordedRequest], http: aiohttp.ClientSession) -> None:
        self.gateway = gateway
        self.emulator_url = emulator_url
        self.journal = journal
        self.http = http

    async def create(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "ims_test", "container_format": "bare", "disk_format": "qcow2", **fields}
        async with self.http.post(self.emulator_url + "/v2/images", json=body) as response:
            assert response.status == 201
            image = await response.json()
        self.journal.clear()
        return image

    async def show(self, image_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.emulator_url}/v2/images/{image_id}") as response:
            return await response.json()

    async def patch(self, image_id: str, content_type: str | None, body: bytes | str, **headers: str) -> tuple[int, Any, Any]:
        data = body.encode() if isinstance(body, str) else body
        sent = {"X-Auth-Token": "token-1", **headers}
        if content_type is not None:
            sent["Content-Type"] = content_type
        async with self.http.patch(f"{self.gateway.url}/v2/images/{image_id}", data=data, headers=sent) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None), response.headers

    def upstream_patches(self) -> list[RecordedRequest]:
        return [r for r in self.journal if r.method == "PATCH"]


@pytest.fixture
async def stack(aiohttp_server: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> Stack:
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal))
    emulator_url = str(emulator.make_url("")).rstrip("/")
    gateway = await make_gateway(emulator_url)
    return Stack(gateway, emulator_url, journal, http)


async def test_a_v20_body_is_rewritten_to_canonical_v21_and_applied(stack: Stack) -> None:
    image = await stack.create(colour="red")
    body = '[{"replace": "/name", "value": "renamed", "op": "ignored"}, {"add": "/owner_team", "value": "infra"}, {"remove": "/colour", "value": "x"}]'
    status, returned, headers = await stack.patch(image["id"], V20, body)
    assert status == 200
    assert returned["name"] == "renamed"
    assert returned["owner_team"] == "infra"
    assert "colour" not in returned
    forwarded = stack.upstream_patches()
    assert len(forwarded) == 1
    canonical = (
        b'[{"op": "replace", "path": "/name", "value": "renamed"}, '
        b'{"op": "add", "path": "/owner_team", "value": "infra"}, {"op": "remove", "path": "/colour"}]'
    )
    assert forwarded[0].body == canonical
    assert forwarded[0].headers["Content-Type"] == V21
    assert forwarded[0].headers["Content-Length"] == str(len(canonical))
    assert forwarded[0].headers["X-Auth-Token"] == "token-1"
    assert forwarded[0].headers["X-Request-Id"] == headers["X-Request-Id"]


async def test_the_conflict_check_reads_the_image_with_the_callers_credentials(stack: Stack) -> None:
    image = await stack.create()
    status, _, _ = await stack.patch(image["id"], V20, '[{"add": "/team", "value": "a"}]', **{"X-Project-Id": "p-9"})
    assert status == 200
    read, patched = stack.journal
    assert (read.method, read.raw_path) == ("GET", f"/v2/images/{image['id']}")
    assert read.headers["X-Auth-Token"] == "token-1"
    assert read.headers["X-Project-Id"] == "p-9"
    assert "Content-Type" not in read.headers
    assert patched.method == "PATCH"


async def test_a_v21_body_passes_byte_identical(stack: Stack) -> None:
    image = await stack.create()
    body = b'[ {"path":"/name" ,"value": "n\\u00e9w", "op":"replace", "extra": 1} ]\n'
    status, returned, _ = await stack.patch(image["id"], V21 + "; charset=UTF-8", body)
    assert status == 200
    assert returned["name"] == "n\u00e9w"
    (forwarded,) = stack.upstream_patches()
    assert forwarded.body == body
    assert forwarded.headers["Content-Type"] == V21 + "; charset=UTF-8"
    assert forwarded.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize("content_type", [V20, V21])
async def test_an_empty_list_is_forwarded(stack: Stack, content_type: str) -> None:
    image = await stack.create()
    status, returned, _ = await stack.patch(image["id"], content_type, "[]")
    assert status == 200
    assert returned["name"] == "ims_test"
    assert stack.upstream_patches()[0].body == b"[]"


@pytest.mark.parametrize(
    ("content_type", "body", "offenders"),
    [
        (V21, '[{"op": "replace", "path": "/__os_type", "value": "Windows"}]', ["/__os_type"]),
        (V20, '[{"replace": "/min_disk", "value": 1}]', ["/min_disk"]),
        (V21, '[{"op": "remove", "path": "/locations/0"}]', ["/locations/0"]),
        (V21, '[{"op": "replace", "path": "/ id ", "value": "x"}]', ["/ id "]),
        (V21, '[{"op": "replace", "path": "/\\u005f_platform", "value": "x"}]', ["/__platform"]),
        (V21, '[{"op": "add", "path": "/os_glance_import_task", "value": "x"}]', ["/os_glance_import_task"]),
        (V20, '[{"add": "/__newthing", "value": "x"}]', ["/__newthing"]),
        (
            V21,
            '[{"op": "replace", "path": "/name", "value": "ok"}, {"op": "replace", "path": "/visibility", "value": "public"},'
            ' {"op": "add", "path": "/custom", "value": "ok"}, {"op": "remove", "path": "/protected"}]',
            ["/visibility", "/protected"],
        ),
    ],
)
async def test_forbidden_attributes_are_refused_and_nothing_reaches_the_upstream(
    stack: Stack, content_type: str, body: str, offenders: list[str]
) -> None:
    image = await stack.create()
    status, returned, headers = await stack.patch(image["id"], content_type, body)
    assert status == 400
    error = returned["error"]
    assert error["code"] == "IMSGW.0403"
    assert error["message"].startswith(
        "Only the name, the description (__description) and customized attributes may be modified"
    )
    assert [item["path"] for item in error["details"]] == [json.loads(f'"{p}"') for p in offenders]
    for item in error["details"]:
        assert repr(item["path"]) in error["message"]
        assert item["reason"] in error["message"]
    assert error["request_id"] == headers["X-Request-Id"]
    assert stack.journal == []
    assert await stack.show(image["id"]) == {**image}


async def test_the_first_failing_item_decides(stack: Stack) -> None:
    image = await stack.create()
    forbidden_first = '[{"op": "replace", "path": "/status", "value": "x"}, {"op": "replace", "path": "nopath"}]'
    status, returned, _ = await stack.patch(image["id"], V21, forbidden_first)
    assert (status, returned["error"]["code"]) == (400, "IMSGW.0403")
    malformed_first = '[{"op": "replace", "path": "nopath"}, {"op": "replace", "path": "/status", "value": "x"}]'
    status, returned, _ = await stack.patch(image["id"], V21, malformed_first)
    assert status == 400
    assert returned["error"] == {
        "code": "IMSGW.0400",
        "message": 'Pointer `nopath` does not start with "/".',
        "request_id": returned["error"]["request_id"],
    }
    assert stack.journal == []


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (V21, "not json", "Malformed JSON in request body."),
        (V21, b"\xff[]", "Malformed JSON in request body."),
        (V21, '"string"', "Unexpected body type. Expected list/dict."),
        (V21, "{}", "Request body must be a JSON array of operation objects."),
        (V21, "[1]", "Operations must be JSON objects."),
        (V21, '[{"op": "test", "path": "/a"}]', "Invalid operation: `test`. It must be one of the following: add, remove, replace."),
        (V21, '[{"op": "replace", "path": "/a~2b", "value": "x"}]', 'Pointer `/a~2b` contains "~" not part of a recognized escape sequence.'),
        (V21, '[{"op": "replace", "path": "/a/b", "value": "x"}]', "Invalid JSON pointer for this resource: '/a/b'"),
        (V21, '[{"op": "add", "path": "/tags/-", "value": "x"}]', "Invalid JSON pointer for this resource: '/tags/-'"),
        (V21, '[{"op": "add", "path": "/a"}]', 'Operation "add" requires a member named "value".'),
        (V20, '[{"op": "replace", "path": "/name", "value": "x"}]', 'Operation objects must contain exactly one member named "add", "remove", or "replace".'),
        (V21, '[{"op": "replace", "path": 5, "value": "x"}]', None),
        (V20, '[{"replace": null, "value": "x"}]', None),
        (V21, '[{"op": "replace", "path": "/a", "value": NaN}]', "Malformed JSON in request body."),
        (V21, '[{"op": "replace", "path": "/a", "path": "/name", "value": "x"}]', None),
    ],
)
async def test_malformed_bodies_get_glances_answer_as_400(stack: Stack, content_type: str, body: str | bytes, message: str | None) -> None:
    image = await stack.create()
    status, returned, _ = await stack.patch(image["id"], content_type, body)
    assert status == 400
    assert returned["error"]["code"] == "IMSGW.0400"
    if message is not None:
        assert returned["error"]["message"] == message
    assert stack.journal == []


async def test_no_body_is_refused(stack: Stack) -> None:
    image = await stack.create()
    status, returned, _ = await stack.patch(image["id"], V21, b"")
    assert (status, returned["error"]["message"]) == (400, "Body expected in request.")
    assert stack.journal == []


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json-patch+json", "APPLICATION/OPENSTACK-IMAGES-V2.1-JSON-PATCH", V21 + " ;charset=utf-8", V21 + "x"],
)
async def test_unsupported_media_types_get_415_with_accept_patch(stack: Stack, content_type: str | None) -> None:
    image = await stack.create()
    status, returned, headers = await stack.patch(image["id"], content_type, '[{"op": "replace", "path": "/name", "value": "x"}]')
    assert status == 415
    assert headers["Accept-Patch"] == ACCEPT_PATCH
    assert returned["error"]["code"] == "IMSGW.0415"
    assert stack.journal == []


async def test_a_v20_add_of_an_existing_attribute_stays_a_409(stack: Stack) -> None:
    image = await stack.create(team="a")
    status, returned, _ = await stack.patch(image["id"], V20, '[{"add": "/team", "value": "b"}]')
    assert status == 409
    assert returned["error"]["code"] == "IMSGW.0409"
    assert returned["error"]["message"] == "Property team already present."
    assert stack.upstream_patches() == []
    assert (await stack.show(image["id"]))["team"] == "a"


async def test_two_v20_adds_of_one_new_attribute_conflict(stack: Stack) -> None:
    image = await stack.create()
    body = '[{"add": "/team", "value": "a"}, {"add": "/team", "value": "b"}]'
    status, returned, _ = await stack.patch(image["id"], V20, body)
    assert (status, returned["error"]["message"]) == (409, "Property team already present.")
    assert "team" not in await stack.show(image["id"])


async def test_a_v20_add_of_a_base_attribute_is_a_409(stack: Stack) -> None:
    image = await stack.create()
    status, returned, _ = await stack.patch(image["id"], V20, '[{"add": "/name", "value": "b"}]')
    assert (status, returned["error"]["message"]) == (409, "Property name already present.")


async def test_a_v20_remove_then_add_is_not_a_conflict(stack: Stack) -> None:
    image = await stack.create(team="a")
    status, returned, _ = await stack.patch(image["id"], V20, '[{"remove": "/team"}, {"add": "/team", "value": "b"}]')
    assert (status, returned["team"]) == (200, "b")


async def test_the_upstream_answers_when_an_earlier_change_fails_there(stack: Stack) -> None:
    image = await stack.create(team="a")
    body = '[{"replace": "/missing", "value": "x"}, {"add": "/team", "value": "b"}]'
    status, returned, _ = await stack.patch(image["id"], V20, body)
    assert status == 409
    assert returned["error"]["message"] == "Property missing does not exist."
    assert len(stack.upstream_patches()) == 1


async def test_a_v21_add_of_an_existing_attribute_acts_as_replace(stack: Stack) -> None:
    image = await stack.create(team="a")
    status, returned, _ = await stack.patch(image["id"], V21, '[{"op": "add", "path": "/team", "value": "b"}]')
    assert (status, returned["team"]) == (200, "b")
    assert [r.method for r in stack.journal] == ["PATCH"]


async def test_the_conflict_check_can_be_turned_off(aiohttp_server: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal))
    url = str(emulator.make_url("")).rstrip("/")
    stack = Stack(await make_gateway(url, patch={"check_add_conflicts": False}), url, journal, http)
    image = await stack.create(team="a")
    status, returned, _ = await stack.patch(image["id"], V20, '[{"add": "/team", "value": "b"}]')
    assert (status, returned["team"]) == (200, "b")
    assert [r.method for r in journal] == ["PATCH"]


async def test_the_upstreams_answer_is_returned_when_the_image_cannot_be_read(stack: Stack) -> None:
    status, returned, _ = await stack.patch("00000000-0000-4000-8000-000000000000", V20, '[{"add": "/team", "value": "b"}]')
    assert status == 404
    assert [r.method for r in stack.journal] == ["GET"]


async def test_a_declared_oversized_body_is_413_without_reading_it(stack: Stack) -> None:
    image = await stack.create()
    head = (
        f"PATCH /v2/images/{image['id']} HTTP/1.1\r\nHost: gw\r\nContent-Type: {V21}\r\n"
        f"Content-Length: 10000000\r\n\r\n"
    ).encode()
    response = await raw_request(stack.gateway.url, head + b"[" * 1000)
    assert response.status == 413
    assert json.loads(response.body)["error"]["code"] == "IMSGW.0413"
    assert response.headers["Connection"] == "close"
    assert stack.journal == []


async def test_a_chunked_body_past_the_limit_is_413(stack: Stack) -> None:
    image = await stack.create()

    async def chunks() -> Any:
        yield b'[{"op": "replace", "path": "/name", "value": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}]'

    async with stack.http.patch(
        f"{stack.gateway.url}/v2/images/{image['id']}", data=chunks(), headers={"Content-Type": V21}
    ) as response:
        assert response.status == 413
        assert "65536 bytes" in (await response.json())["error"]["message"]
    assert stack.journal == []


async def test_a_chunked_body_within_the_limit_is_inspected_and_forwarded(stack: Stack) -> None:
    image = await stack.create()

    async def chunks() -> Any:
        yield b'[{"op": "replace", '
        yield b'"path": "/__os_type", "value": "Windows"}]'

    async with stack.http.patch(
        f"{stack.gateway.url}/v2/images/{image['id']}", data=chunks(), headers={"Content-Type": V21}
    ) as response:
        assert response.status == 400
    assert stack.journal == []


async def test_compressed_patch_bodies_are_refused(stack: Stack) -> None:
    image = await stack.create()
    body = gzip.compress(b'[{"op": "replace", "path": "/__os_type", "value": "Windows"}]')
    status, returned, _ = await stack.patch(image["id"], V21, body, **{"Content-Encoding": "gzip"})
    assert status == 400
    assert "Content-Encoding" in returned["error"]["message"]
    assert stack.journal == []


FORBIDDEN = b'[{"op": "replace", "path": "/__os_type", "value": "Windows"}]'


@pytest.mark.parametrize(
    "target",
    [
        "/v2/images/{id}/",
        "//v2/images/{id}",
        "/v2//images/{id}",
        "/v2/./images/{id}",
        "/v2/x/../images/{id}",
        "/v2/%69mages/{id}",
        "/v2/images/%7Bid%7D",
        "/v2.1/images/{id}",
        "/V2/IMAGES/{id}",
        "/v2/images/{id}?foo=bar",
        "/v2/images/{id};x=1",
        "/images/{id}",
        "/IMAGES/{id}/",
    ],
)
async def test_path_variants_are_inspected_too(stack: Stack, target: str) -> None:
    image = await stack.create()
    path = target.replace("{id}", image["id"])
    request = (
        f"PATCH {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: {V21}\r\nContent-Length: {len(FORBIDDEN)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + FORBIDDEN
    response = await raw_request(stack.gateway.url, request)
    assert response.status == 400
    assert json.loads(response.body)["error"]["code"] == "IMSGW.0403"
    assert stack.journal == []


@pytest.mark.parametrize("target", ["/v2/images/{id}/extra", "/v2/images", "/v2/images/{id}/file", "/v2/cloudimages/{id}", "/x"])
async def test_a_json_patch_body_that_names_no_image_is_refused(stack: Stack, target: str) -> None:
    image = await stack.create()
    body = b'[{"op": "replace", "path": "/name", "value": "allowed"}]'
    path = target.replace("{id}", image["id"])
    request = (
        f"PATCH {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: {V21}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    response = await raw_request(stack.gateway.url, request)
    assert response.status == 400
    assert json.loads(response.body)["error"]["message"] == "An image PATCH must name one image: PATCH /v2/images/{image_id}."
    assert stack.journal == []


@pytest.mark.parametrize("method", ["patch", "Patch"])
async def test_method_spelling_is_inspected_too(stack: Stack, method: str) -> None:
    image = await stack.create()
    request = (
        f"{method} /v2/images/{image['id']} HTTP/1.1\r\nHost: gw\r\nContent-Type: {V21}\r\n"
        f"Content-Length: {len(FORBIDDEN)}\r\nConnection: close\r\n\r\n"
    ).encode() + FORBIDDEN
    response = await raw_request(stack.gateway.url, request)
    assert response.status in (400, 405)
    assert stack.journal == []


async def test_an_unreachable_upstream_is_a_502_for_a_patch(make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    with refusing_port() as port:
        gateway = await make_gateway(f"http://127.0.0.1:{port}")
        async with http.patch(
            gateway.url + "/v2/images/abc", data=b'[{"op": "replace", "path": "/name", "value": "x"}]', headers={"Content-Type": V21}
        ) as response:
            assert response.status == 502
            error = (await response.json())["error"]
    assert error["code"] == "IMSGW.0502"
    assert error["message"] == "The upstream refused the connection or could not be reached."


@pytest.mark.parametrize("declared", [True, False])
async def test_an_oversized_answer_to_a_patch_is_a_502(
    recorder: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession, declared: bool
) -> None:
    from aiohttp import web

    async def respond(request: web.Request, seen: Any) -> web.StreamResponse:
        if declared:
            return web.Response(body=b"x" * (2 * 1024 * 1024))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(40):
            await response.write(b"x" * 65536)
        return response

    recorder.respond = respond
    gateway = await make_gateway(recorder.url)
    async with http.patch(
        gateway.url + "/v2/images/abc", data=b'[{"op": "replace", "path": "/name", "value": "x"}]', headers={"Content-Type": V21}
    ) as response:
        assert response.status == 502
        assert (await response.json())["error"]["message"] == "The upstream's answer is larger than the gateway reads whole."
