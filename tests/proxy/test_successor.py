"""Successor routing: accepted PATCH /v2/images/{id} calls go to IMS's PATCH /v2/cloudimages/{id}.

End to end against the emulator, which implements the successor API as IMS documents it.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from ims_emulator.app import RecordedRequest, build_emulator_app
from tests.conftest import Gateway, GatewayFactory

SUCCESSOR_TYPE = "application/json;charset=UTF-8"


class Stack:
    def __init__(self, gateway: Gateway, emulator_url: str, journal: list[RecordedRequest], http: aiohttp.ClientSession) -> None:
        self.gateway = gateway
        self.emulator_url = emulator_url
        self.journal = journal
        self.http = http

    async def create(self, *, active: bool = True, **fields: Any) -> str:
        body = {"name": "ims_test", "container_format": "bare", "disk_format": "qcow2", **fields}
        async with self.http.post(self.emulator_url + "/v2/images", json=body) as response:
            assert response.status == 201
            image_id: str = (await response.json())["id"]
        if active:
            url = f"{self.emulator_url}/v2/images/{image_id}/file"
            async with self.http.put(url, data=b"disk", headers={"Content-Type": "application/octet-stream"}) as response:
                assert response.status == 204
        self.journal.clear()
        return image_id

    async def show(self, image_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.emulator_url}/v2/images/{image_id}") as response:
            return await response.json()

    async def patch(self, path: str, content_type: str, body: bytes) -> tuple[int, Any]:
        async with self.http.patch(self.gateway.url + path, data=body, headers={"Content-Type": content_type}) as response:
            return response.status, json.loads(await response.read())

    def patches(self) -> list[RecordedRequest]:
        return [r for r in self.journal if r.method == "PATCH"]


@pytest.fixture
async def stack(aiohttp_server: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> Stack:
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal))
    url = str(emulator.make_url("")).rstrip("/")
    gateway = await make_gateway(url, patch={"successor_routing": True}, deprecation={"v20_successor_link": True})
    return Stack(gateway, url, journal, http)


async def test_a_v20_body_is_applied_through_the_successor_api(stack: Stack) -> None:
    image = await stack.create(colour="red")
    body = b'[{"replace": "/name", "value": "renamed"}, {"add": "/team", "value": "infra"}, {"remove": "/colour"}]'
    status, returned = await stack.patch(f"/v2/images/{image}", V20_MEDIA_TYPE, body)
    assert status == 200
    assert (returned["name"], returned["team"]) == ("renamed", "infra")
    assert "colour" not in returned
    (forwarded,) = stack.patches()
    assert forwarded.raw_path == f"/v2/cloudimages/{image}"
    canonical = (
        b'[{"op": "replace", "path": "/name", "value": "renamed"}, '
        b'{"op": "add", "path": "/team", "value": "infra"}, {"op": "remove", "path": "/colour"}]'
    )
    assert forwarded.body == canonical
    assert forwarded.headers["Content-Type"] == SUCCESSOR_TYPE
    assert forwarded.headers["Content-Length"] == str(len(canonical))
    # The v2.0 add check still reads the image first, on the API that shows it.
    assert [(r.method, r.raw_path) for r in stack.journal] == [("GET", f"/v2/images/{image}"), ("PATCH", f"/v2/cloudimages/{image}")]


async def test_a_v21_body_is_sent_canonical_with_the_query_kept(stack: Stack) -> None:
    image = await stack.create()
    body = b'[ {"value": "n", "path": "/name", "op": "replace", "extra": 1} ]'
    status, returned = await stack.patch(f"/v2/images/{image}?trace=1", V21_MEDIA_TYPE, body)
    assert (status, returned["name"]) == (200, "n")
    (forwarded,) = stack.patches()
    assert forwarded.raw_path == f"/v2/cloudimages/{image}?trace=1"
    assert forwarded.body == b'[{"op": "replace", "path": "/name", "value": "n"}]'


async def test_the_successor_apis_own_refusal_reaches_the_client(stack: Stack) -> None:
    image = await stack.create(active=False)
    status, returned = await stack.patch(f"/v2/images/{image}", V21_MEDIA_TYPE, b'[{"op": "replace", "path": "/name", "value": "n"}]')
    assert status == 400
    assert returned["error"]["message"] == f"Only active images can be updated; image {image} is queued."
    assert [r.raw_path for r in stack.patches()] == [f"/v2/cloudimages/{image}"]


async def test_the_gateways_checks_still_come_first(stack: Stack) -> None:
    image = await stack.create(team="a")
    status, returned = await stack.patch(f"/v2/images/{image}", V21_MEDIA_TYPE, b'[{"op": "replace", "path": "/min_ram", "value": 1}]')
    assert (status, returned["error"]["code"]) == (400, "IMSGW.0403")
    status, returned = await stack.patch(f"/v2/images/{image}", V20_MEDIA_TYPE, b'[{"add": "/team", "value": "b"}]')
    assert (status, returned["error"]["message"]) == (409, "Property team already present.")
    assert stack.patches() == []
    assert (await stack.show(image))["team"] == "a"


async def test_a_target_without_an_image_id_is_refused_and_sent_nowhere(stack: Stack) -> None:
    status, _ = await stack.patch("/v2/images", V21_MEDIA_TYPE, b'[{"op": "replace", "path": "/name", "value": "n"}]')
    assert status == 400
    assert stack.patches() == []


async def test_the_successor_link_names_the_resource_the_call_went_to(stack: Stack) -> None:
    image = await stack.create()
    async with stack.http.patch(
        f"{stack.gateway.url}/v2/images/{image}", data=b'[{"replace": "/name", "value": "x"}]', headers={"Content-Type": V20_MEDIA_TYPE}
    ) as response:
        assert response.status == 200
        assert response.headers["Link"] == f'</v2/cloudimages/{image}>; rel="successor-version"'
