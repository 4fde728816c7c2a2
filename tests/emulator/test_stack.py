"""The emulator routes like IMS's WSGI stack: version negotiation, Routes' _method, a trusting
server's SCRIPT_NAME and header-name mapping, Routes' `$`, Glance's body_reject."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict, CIMultiDictProxy

from ims_emulator.app import build_emulator_app
from ims_emulator.stack import NoVersion, environ
from tests.conftest import raw_request

V20 = "application/openstack-images-v2.0-json-patch"
V21 = "application/openstack-images-v2.1-json-patch"
RENAME = b'[{"op": "replace", "path": "/name", "value": "renamed"}]'


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    ("method", "raw_path", "pairs", "expected"),
    [
        ("PATCH", "/v2/images/x", (), ("PATCH", "/v2/images/x")),
        ("PATCH", "/v2.1/images/x", (), ("PATCH", "/v2/images/x")),
        ("PATCH", "//v2//images/x", (), ("PATCH", "/v2/images/x")),
        ("PATCH", "/images/x", (("Accept", "application/vnd.openstack.images-v2"),), ("PATCH", "/v2/images/x")),
        ("PATCH", "/images/x", (("Accept", "application/vnd.openstack.images-v2.17, "),), ("PATCH", "/v2/images/x")),
        ("PATCH", "/v2/images/x", (("Accept", "application/vnd.openstack.images-v2"),), ("PATCH", "/v2/v2/images/x")),
        ("PATCH", "/foo/v2/images/x", (("SCRIPT_NAME", "/foo"),), ("PATCH", "/v2/images/x")),
        ("PATCH", "/foo/v2/images/x", (("Script-Name", "/foo"),), ("PATCH", "/v2/images/x")),
        ("POST", "/v2/images/x?_method=PATCH", (), ("PATCH", "/v2/images/x")),
        ("GET", "/v2/images/x?a=1;_method=delete", (), ("DELETE", "/v2/images/x")),
        ("GET", "/v2/images/x?_method&%5Fmethod=PUT", (), ("PUT", "/v2/images/x")),
        ("GET", "/v2/images/x?%5Fmethod=PUT", (), ("GET", "/v2/images/x")),  # no literal _method: Routes does not look
        ("PATCH", "/v2/images/x%0A", (), ("PATCH", "/v2/images/x\n")),
        ("PATCH", "/v2/cloudimages/x", (("Accept", "application/vnd.openstack.images-v2"),), ("PATCH", "/v2/cloudimages/x")),
    ],
)
def test_the_method_and_path_glance_routes(method: str, raw_path: str, pairs: tuple[tuple[str, str], ...], expected: tuple[str, str]) -> None:
    env = environ(method, raw_path, headers(*pairs))
    assert (env.method, env.path) == expected


def test_a_form_post_may_override_the_method() -> None:
    env = environ("POST", "/v2/images/x", headers(("Content-Type", "application/x-www-form-urlencoded")), b"_method=DELETE")
    assert env.method == "DELETE"


def test_header_names_with_dash_or_underscore_fill_one_variable_joined() -> None:
    env = environ("PATCH", "/v2/images/x", headers(("Content_Type", V20 + ";"), ("Content-Type", V21)))
    assert env.content_type == f"{V20};, {V21}"


@pytest.mark.parametrize("raw_path", ["/images/x", "/v3/images/x", "/V2/images/x", "/v2.99/images/x"])
def test_without_a_known_version_there_is_no_route(raw_path: str) -> None:
    with pytest.raises(NoVersion):
        environ("GET", raw_path, headers())


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(build_emulator_app())


async def image(client: TestClient) -> str:
    response = await client.post("/v2/images", json={"name": "x"})
    return str((await response.json())["id"])


async def test_version_negotiation_end_to_end(client: TestClient) -> None:
    image_id = await image(client)
    response = await client.patch(
        f"/images/{image_id}", data=RENAME, headers={"Content-Type": V21, "Accept": "application/vnd.openstack.images-v2.1"}
    )
    assert response.status == 200
    assert (await response.json())["name"] == "renamed"
    assert (await client.get(f"/images/{image_id}")).status == 300


async def test_a_get_with_method_delete_deletes(client: TestClient) -> None:
    image_id = await image(client)
    assert (await client.get(f"/v2/images/{image_id}?_method=DELETE")).status == 204
    assert (await client.get(f"/v2/images/{image_id}")).status == 404


async def test_delete_with_a_body_is_refused_as_glance_does(client: TestClient) -> None:
    image_id = await image(client)
    response = await client.patch(f"/v2/images/{image_id}?_method=DELETE", data=b'[{"add": "/a", "value": "b"}]', headers={"Content-Type": V20})
    assert response.status == 400
    assert (await response.json())["error"]["message"] == "A body is not expected with this request."
    assert (await client.get(f"/v2/images/{image_id}")).status == 200


async def test_a_final_newline_still_names_the_image(client: TestClient) -> None:
    image_id = await image(client)
    url = str(client.make_url("")).rstrip("/")
    request = (
        f"PATCH /v2/images/{image_id}%0A HTTP/1.1\r\nHost: e\r\nContent-Type: {V21}\r\n"
        f"Content-Length: {len(RENAME)}\r\nConnection: close\r\n\r\n"
    ).encode() + RENAME
    assert (await raw_request(url, request)).status == 200
    assert (await (await client.get(f"/v2/images/{image_id}")).json())["name"] == "renamed"


async def test_a_known_path_with_another_method_is_405_with_allow(client: TestClient) -> None:
    response = await client.put("/v2/images")
    assert response.status == 405
    assert response.headers["Allow"] == "POST, GET"
    assert (await client.get("/v2/nothing")).status == 404
