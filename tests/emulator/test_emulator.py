"""The IMS emulator, observed over HTTP: statuses, bodies, headers, what it stored."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

import ims_emulator.images as emulator_images
from ims_emulator.app import (
    EMULATOR_JOURNAL,
    IMAGE_STORE,
    JSON_BODY_LIMIT,
    RecordedRequest,
    build_emulator_app,
    start_emulator,
)
from ims_emulator.images import PROPERTY_QUOTA
from testing.paths import REPO

V20 = "application/openstack-images-v2.0-json-patch"
V21 = "application/openstack-images-v2.1-json-patch"
MiB = 1024 * 1024
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
IMS_FIELDS = (
    "file", "self", "schema", "owner", "id", "size", "status", "tags", "visibility", "name",
    "checksum", "protected", "container_format", "min_ram", "updated_at", "__os_bit",
    "__os_version", "__description", "disk_format", "__isregistered", "__platform",
    "__os_type", "min_disk", "virtual_env_type", "__image_source_type", "__imagetype",
    "created_at", "virtual_size", "__originalimagename", "__backup_id", "__productcode",
    "__image_size", "__data_origin", "hw_firmware_type", "os_hidden",
)  # fmt: skip

# Glance's base attributes and the links: everything else of an image is a property.
NOT_PROPERTIES = frozenset(
    {"id", "name", "status", "visibility", "protected", "os_hidden", "owner", "container_format",
     "disk_format", "min_disk", "min_ram", "tags", "size", "virtual_size", "checksum", "os_hash_algo",
     "os_hash_value", "created_at", "updated_at", "self", "file", "schema"}
)  # fmt: skip

Client = TestClient[Any, Any]
Factory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def client(aiohttp_client: Factory) -> Client:
    return await aiohttp_client(build_emulator_app())


async def create(client: Client, **body: Any) -> dict[str, Any]:
    response = await client.post("/v2/images", json=body)
    assert response.status == 201, await response.text()
    image: dict[str, Any] = await response.json()
    return image


async def show(client: Client, image_id: str) -> dict[str, Any]:
    response = await client.get(f"/v2/images/{image_id}")
    assert response.status == 200
    image: dict[str, Any] = await response.json()
    return image


async def patch(client: Client, image_id: str, body: Any, content_type: str = V21) -> aiohttp.ClientResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.patch(f"/v2/images/{image_id}", data=data, headers={"Content-Type": content_type})


async def cloud_patch(
    client: Client, image_id: str, body: Any, content_type: str = "application/json;charset=UTF-8"
) -> aiohttp.ClientResponse:
    data = json.dumps(body).encode()
    return await client.patch(f"/v2/cloudimages/{image_id}", data=data, headers={"Content-Type": content_type})


async def upload(client: Client, image_id: str, data: Any) -> aiohttp.ClientResponse:
    headers = {"Content-Type": "application/octet-stream"}
    if isinstance(data, bytes):
        data = io.BytesIO(data)
    return await client.put(f"/v2/images/{image_id}/file", data=data, headers=headers)


async def active_image(client: Client, **body: Any) -> dict[str, Any]:
    image = await create(client, **body)
    assert (await upload(client, image["id"], b"data")).status == 204
    return await show(client, image["id"])


async def error_of(response: aiohttp.ClientResponse, status: int) -> tuple[str, str]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return body["error"]["code"], body["error"]["message"]


def property_count(image: dict[str, Any]) -> int:
    return len(image.keys() - NOT_PROPERTIES)


def data_files(client: Client) -> list[Path]:
    return list(client.server.app[IMAGE_STORE].directory.iterdir())


def pattern(size: int) -> bytes:
    block = bytes(range(256)) * 4096
    return (block * (size // len(block) + 1))[:size]


# -- create ------------------------------------------------------------------------


async def test_create_answers_201_with_a_queued_ims_image(client: Client) -> None:
    response = await client.post(
        "/v2/images",
        json={"name": "ubuntu", "container_format": "bare", "disk_format": "zvhd2", "min_disk": 40,
              "min_ram": 1024, "protected": True, "tags": ["a", "b"], "__os_type": "Windows",
              "custom": "value"},
    )  # fmt: skip

    assert response.status == 201
    image = await response.json()
    assert response.headers["Location"] == f"/v2/images/{image['id']}"
    assert set(IMS_FIELDS) <= set(image)
    assert image["status"] == "queued"
    assert image["size"] is None and image["checksum"] is None
    assert image["self"] == f"/v2/images/{image['id']}"
    assert image["file"] == f"/v2/images/{image['id']}/file"
    assert image["schema"] == "/v2/schemas/image"
    assert TIMESTAMP.fullmatch(image["created_at"]) and image["updated_at"] == image["created_at"]
    expected = {"name": "ubuntu", "container_format": "bare", "disk_format": "zvhd2", "min_disk": 40,
                "min_ram": 1024, "protected": True, "tags": ["a", "b"], "__os_type": "Windows",
                "custom": "value", "visibility": "private", "hw_firmware_type": "bios",
                "__image_size": "0", "__data_origin": None}  # fmt: skip
    assert {key: image[key] for key in expected} == expected


async def test_create_takes_the_id_offered(client: Client) -> None:
    image_id = "33ad552d-1149-471c-8190-ff6776174a00"
    assert (await create(client, id=image_id))["id"] == image_id
    assert (await show(client, image_id))["id"] == image_id


async def test_create_refuses_an_id_in_use(client: Client) -> None:
    image = await create(client)
    response = await client.post("/v2/images", json={"id": image["id"]})
    assert await error_of(response, 409) == ("EMU.0409", f"Image with identifier {image['id']} already exists!")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"status": "active"}, 403, "Attribute 'status' is read-only."),
        ({"checksum": "x"}, 403, "Attribute 'checksum' is read-only."),
        ({"size": 1}, 403, "Attribute 'size' is read-only."),
        ({"self": "/x"}, 403, "Attribute 'self' is read-only."),
        ({"os_hash_value": "x"}, 403, "Attribute 'os_hash_value' is read-only."),
        ({"created_at": "2020-01-01T00:00:00Z"}, 403, "Attribute 'created_at' is read-only."),
        ({"deleted": "x"}, 403, "Attribute 'deleted' is reserved."),
        ({"locations": []}, 403, "Attribute 'locations' is reserved."),
        ({"os_glance_import_task": "x"}, 403, "Attribute 'os_glance_import_task' is reserved."),
        ({"name": 5}, 400, "Provided object does not match schema 'image': 5 is not of type 'string'"),
        ({"name": "n" * 256}, 400, f"Provided object does not match schema 'image': '{'n' * 256}' is too long"),
        ({"visibility": "everyone"}, 400,
         "Provided object does not match schema 'image': 'everyone' is not one of "
         "['community', 'public', 'private', 'shared']"),
        ({"disk_format": "floppy"}, 400,
         "Provided object does not match schema 'image': 'floppy' is not one of "
         "[None, 'ami', 'ari', 'aki', 'vhd', 'vhdx', 'vmdk', 'raw', 'qcow2', 'vdi', 'iso', 'ploop', "
         "'zvhd', 'zvhd2']"),
        ({"min_ram": -1}, 400, "Provided object does not match schema 'image': -1 is less than the minimum of 0"),
        ({"min_disk": "1"}, 400, "Provided object does not match schema 'image': '1' is not of type 'integer'"),
        ({"min_disk": True}, 400, "Provided object does not match schema 'image': True is not of type 'integer'"),
        ({"protected": "yes"}, 400, "Provided object does not match schema 'image': 'yes' is not of type 'boolean'"),
        ({"tags": "a"}, 400, "Provided object does not match schema 'image': 'a' is not of type 'array'"),
        ({"tags": [1]}, 400, "Provided object does not match schema 'image': 1 is not of type 'string'"),
        ({"custom": 5}, 400, "Provided object does not match schema 'image': 5 is not of type 'string'"),
        ({"k" * 256: "v"}, 400, "Custom property should not be greater than 255 characters."),
        ({"id": "not-a-uuid"}, 400,
         "Provided object does not match schema 'image': 'not-a-uuid' does not match "
         "'^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$'"),
        ([], 400, "Provided object does not match schema 'image': [] is not of type 'object'"),
    ],
)  # fmt: skip
async def test_create_refuses_what_glance_refuses(client: Client, body: Any, status: int, message: str) -> None:
    response = await client.post("/v2/images", json=body)
    code = "IMG.0001" if status == 400 else f"EMU.0{status}"
    assert await error_of(response, status) == (code, message)
    assert (await (await client.get("/v2/images")).json())["images"] == []


@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (None, "IMG.0007", "Body expected in request."),
        (b"{", "IMG.0001", "Malformed JSON in request body."),
        (b"\xef\xbb\xbf{}", "IMG.0001", "Malformed JSON in request body."),
        ('{"name": "x"}'.encode("utf-16"), "IMG.0001", "Malformed JSON in request body."),
    ],
)
async def test_create_needs_a_json_body(client: Client, data: bytes | None, code: str, message: str) -> None:
    response = await client.post("/v2/images", data=data)
    assert await error_of(response, 400) == (code, message)


async def test_create_holds_the_property_quota(client: Client) -> None:
    room = PROPERTY_QUOTA - property_count(await create(client))

    assert (await client.post("/v2/images", json={f"p{i}": "v" for i in range(room)})).status == 201
    response = await client.post("/v2/images", json={f"p{i}": "v" for i in range(room + 1)})
    assert await error_of(response, 413) == (
        "EMU.0413",
        "The limit has been exceeded on the number of allowed image properties. "
        f"Attempted: {PROPERTY_QUOTA + 1}, Maximum: {PROPERTY_QUOTA}",
    )


# -- show, list, delete ------------------------------------------------------------


async def test_show_answers_the_image(client: Client) -> None:
    image = await create(client, name="x")
    assert await show(client, image["id"]) == image


async def test_show_answers_404_for_an_unknown_image(client: Client) -> None:
    response = await client.get("/v2/images/nope")
    assert await error_of(response, 404) == ("EMU.0404", "No image found with ID nope")


async def test_list_answers_newest_first_with_glance_links(client: Client) -> None:
    ids = [(await create(client, name=str(i)))["id"] for i in range(3)]

    body = await (await client.get("/v2/images")).json()

    assert [image["id"] for image in body["images"]] == ids[::-1]
    assert body["schema"] == "/v2/schemas/images"
    assert body["first"] == "/v2/images"
    assert "next" not in body


async def test_list_pages_with_limit_and_marker(client: Client) -> None:
    ids = [(await create(client))["id"] for _ in range(5)][::-1]

    seen: list[str] = []
    link = "/v2/images?limit=2"
    pages = 0
    while link:
        body = await (await client.get(link)).json()
        assert body["first"] == "/v2/images?limit=2"
        seen += [image["id"] for image in body["images"]]
        link = body.get("next", "")
        pages += 1

    assert seen == ids
    assert pages == 3


async def test_list_links_a_next_page_when_a_page_is_full(client: Client) -> None:
    ids = [(await create(client))["id"] for _ in range(2)]
    body = await (await client.get("/v2/images?limit=2")).json()
    assert body["next"] == f"/v2/images?limit=2&marker={ids[0]}"
    assert (await (await client.get(body["next"])).json())["images"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=abc", "limit param must be an integer"),
        ("limit=0", "limit param must be positive"),
        ("limit=-1", "limit param must be positive"),
        ("marker=unknown", "No image found with ID unknown"),
    ],
)
async def test_list_refuses_bad_parameters(client: Client, query: str, message: str) -> None:
    await create(client)
    response = await client.get(f"/v2/images?{query}")
    assert await error_of(response, 400) == ("IMG.0001", message)


async def test_delete_removes_the_image_and_its_data(client: Client) -> None:
    image = await active_image(client)
    assert len(data_files(client)) == 1

    response = await client.delete(f"/v2/images/{image['id']}")

    assert response.status == 204
    assert (await client.get(f"/v2/images/{image['id']}")).status == 404
    assert data_files(client) == []


async def test_delete_refuses_a_protected_image(client: Client) -> None:
    image = await create(client, protected=True)
    response = await client.delete(f"/v2/images/{image['id']}")
    assert await error_of(response, 403) == ("EMU.0403", f"Image {image['id']} is protected and cannot be deleted.")
    assert await show(client, image["id"]) == image


async def test_delete_answers_404_for_an_unknown_image(client: Client) -> None:
    response = await client.delete("/v2/images/nope")
    assert await error_of(response, 404) == ("EMU.0404", "Failed to find image nope to delete")


# -- PATCH /v2/images/{id} ---------------------------------------------------------

CONFORMANCE_V20 = [{"replace": "/name", "value": "fedora"}, {"remove": "/sparks"}, {"add": "/bebim", "value": "bap"}]
CONFORMANCE_V21 = [
    {"op": "replace", "path": "/name", "value": "fedora"},
    {"op": "remove", "path": "/sparks"},
    {"op": "add", "path": "/bebim", "value": "bap"},
]
VOLATILE = ("id", "self", "file", "created_at", "updated_at")


def stable(image: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in image.items() if key not in VOLATILE}


async def test_both_media_types_make_the_same_image(client: Client) -> None:
    results = []
    for content_type, body in ((V20, CONFORMANCE_V20), (V21, CONFORMANCE_V21)):
        image = await create(client, name="old", sparks="x")
        response = await patch(client, image["id"], body, content_type)
        assert response.status == 200
        results.append(await response.json())

    assert stable(results[0]) == stable(results[1])
    assert results[0]["name"] == "fedora" and results[0]["bebim"] == "bap" and "sparks" not in results[0]
    assert await show(client, results[0]["id"]) == results[0]


GLANCE_REFUSED_BODIES = [
    *[(V21, body) for body in ('{"op": "add"}', '"string"', "123", "true", "false", "null")],
    *[(V21, f"[{item}]") for item in ('["a", "list"]', '"string"', "123", "true", "false", "null",
                                      '{"op": "invalid", "path": "/name", "value": "fedora"}')],
    *[(V21, json.dumps([{"op": "add", "path": pointer, "value": "v"}]))
      for pointer in ("noslash", "///twoslash", "/two/   /slash", "/      /      ", "/trailingslash/",
                      "/lone~tilde", "/trailingtilde~", "/locations/1/2")],
    (V21, '[{"path": "/colburn", "value": "arcata"}]'),
    (V21, '[{"op": "replace", "path": "/colburn"}]'),
    (V21, '[{"op": "replace", "value": "arcata"}]'),
    (V20, '[{"replace": "/foo", "add": "/bar", "value": "snore"}]'),
    (V20, '[{"value": "arcata"}]'),
    (V20, '[{"replace": "/colburn"}]'),
]  # fmt: skip


@pytest.mark.parametrize(("content_type", "body"), GLANCE_REFUSED_BODIES)
async def test_glances_refused_bodies_are_400_and_change_nothing(client: Client, content_type: str, body: str) -> None:
    image = await create(client, colburn="x")

    response = await patch(client, image["id"], body.encode(), content_type)

    assert (await error_of(response, 400))[0] == "IMG.0001"
    assert await show(client, image["id"]) == image


async def test_the_tricky_pointers_name_the_decoded_attributes(client: Client) -> None:
    image = await create(client)
    body = [{"op": "add", "path": path, "value": "v"} for path in ("/keywith~1slash", "/keywith~0tilde", "/tricky~01")]

    updated = await (await patch(client, image["id"], body)).json()

    assert {"keywith/slash", "keywith~tilde", "tricky~1"} <= set(updated)


async def test_an_empty_patch_answers_the_image_unchanged(client: Client) -> None:
    image = await create(client)
    response = await patch(client, image["id"], [])
    assert response.status == 200
    assert await response.json() == image


@pytest.mark.parametrize("attribute", ["name", "min_ram", "__os_type", "custom"])
async def test_v20_add_of_an_existing_attribute_is_a_conflict(client: Client, attribute: str) -> None:
    image = await create(client, custom="old")
    value = 5 if attribute == "min_ram" else "new"

    response = await patch(client, image["id"], [{"add": f"/{attribute}", "value": value}], V20)

    assert await error_of(response, 409) == ("EMU.0409", f"Property {attribute} already present.")
    assert await show(client, image["id"]) == image


@pytest.mark.parametrize("attribute", ["name", "min_ram", "__os_type", "custom"])
async def test_v21_add_of_an_existing_attribute_replaces_it(client: Client, attribute: str) -> None:
    image = await create(client, custom="old")
    value = 5 if attribute == "min_ram" else "new"

    response = await patch(client, image["id"], [{"op": "add", "path": f"/{attribute}", "value": value}])

    assert response.status == 200
    assert (await show(client, image["id"]))[attribute] == value


async def test_v20_adds_the_same_new_attribute_once_only(client: Client) -> None:
    image = await create(client)
    body = [{"add": "/fresh", "value": "1"}, {"add": "/fresh", "value": "2"}]

    response = await patch(client, image["id"], body, V20)

    assert await error_of(response, 409) == ("EMU.0409", "Property fresh already present.")
    assert "fresh" not in await show(client, image["id"])


async def test_v21_adds_of_the_same_new_attribute_keep_the_last_value(client: Client) -> None:
    image = await create(client)
    body = [{"op": "add", "path": "/fresh", "value": "1"}, {"op": "add", "path": "/fresh", "value": "2"}]
    assert (await (await patch(client, image["id"], body)).json())["fresh"] == "2"


@pytest.mark.parametrize(
    ("operation", "status", "message"),
    [
        ({"op": "replace", "path": "/missing", "value": "x"}, 409, "Property missing does not exist."),
        ({"op": "remove", "path": "/missing"}, 409, "Property missing does not exist."),
        ({"op": "remove", "path": "/name"}, 403, "Property name may not be removed."),
        ({"op": "remove", "path": "/tags"}, 403, "Property tags may not be removed."),
        ({"op": "remove", "path": "/owner"}, 403, "Property owner may not be removed."),
        ({"op": "replace", "path": "/owner", "value": "someone"}, 403, "Owner can't be updated by non admin."),
        ({"op": "add", "path": "/locations/-", "value": {"url": "file:///x", "metadata": {}}}, 403,
         "It's not allowed to add locations if locations are invisible."),
        ({"op": "remove", "path": "/locations/0"}, 403,
         "It's not allowed to remove locations if locations are invisible."),
        ({"op": "replace", "path": "/locations", "value": [{"url": "file:///x", "metadata": {}}]}, 403,
         "It's not allowed to update locations if locations are invisible."),
        ({"op": "replace", "path": "/locations", "value": []}, 403, "Cannot set locations to empty list."),
    ],
)  # fmt: skip
async def test_patch_refuses_what_the_image_does_not_allow(
    client: Client, operation: dict[str, Any], status: int, message: str
) -> None:
    image = await create(client, custom="old")
    body = [{"op": "replace", "path": "/custom", "value": "changed"}, operation]

    response = await patch(client, image["id"], body)

    assert await error_of(response, status) == (f"EMU.0{status}", message)
    assert await show(client, image["id"]) == image


@pytest.mark.parametrize(
    ("attribute", "value", "reason"),
    [
        ("name", 5, "5 is not of type 'string'"),
        ("name", "n" * 256, f"'{'n' * 256}' is too long"),
        ("min_ram", -1, "-1 is less than the minimum of 0"),
        ("min_disk", "1", "'1' is not of type 'integer'"),
        ("protected", "true", "'true' is not of type 'boolean'"),
        ("os_hidden", 1, "1 is not of type 'boolean'"),
        ("visibility", "everyone", "'everyone' is not one of ['community', 'public', 'private', 'shared']"),
        ("tags", "a", "'a' is not of type 'array'"),
        ("custom", 123, "123 is not of type 'string'"),
        ("custom", ["bar", "baz"], "['bar', 'baz'] is not of type 'string'"),
        ("custom", None, "None is not of type 'string'"),
    ],
)
async def test_patch_checks_value_types(client: Client, attribute: str, value: Any, reason: str) -> None:
    image = await create(client, custom="old")
    response = await patch(client, image["id"], [{"op": "replace", "path": f"/{attribute}", "value": value}])
    assert await error_of(response, 400) == ("IMG.0001", f"Provided object does not match schema 'image': {reason}")
    assert await show(client, image["id"]) == image


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("name", None), ("name", "n" * 255), ("min_disk", 0), ("protected", True), ("visibility", "public"),
     ("tags", ["x", "y"]), ("custom", "new"), ("container_format", "bare"), ("disk_format", "qcow2")],
)  # fmt: skip
async def test_patch_replaces_base_and_custom_attributes(client: Client, attribute: str, value: Any) -> None:
    image = await create(client, custom="old")
    response = await patch(client, image["id"], [{"op": "replace", "path": f"/{attribute}", "value": value}])
    assert response.status == 200
    assert (await show(client, image["id"]))[attribute] == value


async def test_patch_removes_a_custom_attribute(client: Client) -> None:
    image = await create(client, custom="old")
    assert (await patch(client, image["id"], [{"remove": "/custom"}], V20)).status == 200
    assert "custom" not in await show(client, image["id"])


async def test_patch_updates_updated_at(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    image = await create(client)
    monkeypatch.setattr(emulator_images, "timestamp", lambda: "2031-01-02T03:04:05Z")

    updated = await (await patch(client, image["id"], [{"op": "replace", "path": "/name", "value": "n"}])).json()

    assert updated["updated_at"] == "2031-01-02T03:04:05Z"
    assert updated["created_at"] == image["created_at"]


async def test_patch_holds_the_property_quota(client: Client) -> None:
    image = await create(client)
    room = PROPERTY_QUOTA - property_count(image)
    fill = [{"op": "add", "path": f"/p{i}", "value": "v"} for i in range(room)]
    assert (await patch(client, image["id"], fill)).status == 200

    response = await patch(client, image["id"], [{"op": "add", "path": "/one_more", "value": "v"}])

    code, message = await error_of(response, 413)
    assert message.endswith(f"Attempted: {PROPERTY_QUOTA + 1}, Maximum: {PROPERTY_QUOTA}")
    assert "one_more" not in await show(client, image["id"])
    # Removing and replacing stay possible at the quota.
    swap = [{"op": "remove", "path": "/p0"}, {"op": "replace", "path": "/p1", "value": "w"}]
    assert (await patch(client, image["id"], swap)).status == 200


@pytest.mark.parametrize(
    ("content_type", "data", "status", "code", "message"),
    [
        ("application/json", b"[]", 415, "EMU.0415", "The request media type application/json is not supported by this server."
         " Image PATCH expects Content-Type one of: application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch"),
        ("Application/openstack-images-v2.1-json-patch", b"[]", 415, "EMU.0415",
         "The request media type Application/openstack-images-v2.1-json-patch is not supported by this server."
         " Image PATCH expects Content-Type one of: application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch"),
        (V21, None, 400, "IMG.0007", "Body expected in request."),
        (V21, b"[", 400, "IMG.0001", "Malformed JSON in request body."),
        (V21, b"{}", 400, "IMG.0001", "Request body must be a JSON array of operation objects."),
        (V21, b'[{"op": "replace", "path": "/status", "value": "active"}]', 403, "EMU.0403",
         "Attribute 'status' is read-only."),
        (V20, b'[{"op": "replace", "path": "/name", "value": "x"}]', 400, "IMG.0001",
         'Operation objects must contain exactly one member named "add", "remove", or "replace".'),
    ],
)  # fmt: skip
async def test_patch_answers_the_parsers_refusals(
    client: Client, content_type: str, data: bytes | None, status: int, code: str, message: str
) -> None:
    image = await create(client)
    response = await client.patch(f"/v2/images/{image['id']}", data=data, headers={"Content-Type": content_type})
    assert await error_of(response, status) == (code, message)
    if status == 415:
        assert response.headers["Accept-Patch"] == f"{V20}, {V21}"


async def test_patch_checks_a_value_before_a_later_operations_structure(client: Client) -> None:
    image = await create(client)
    body = [{"op": "replace", "path": "/min_ram", "value": "x"}, {"op": "replace"}]
    code, message = await error_of(await patch(client, image["id"], body), 400)
    assert message == "Provided object does not match schema 'image': 'x' is not of type 'integer'"


async def test_patch_checks_the_body_before_looking_up_the_image(client: Client) -> None:
    response = await patch(client, "nope", [{"op": "replace", "path": "/min_ram", "value": "x"}])
    assert (await error_of(response, 400))[0] == "IMG.0001"


async def test_patch_answers_404_for_an_unknown_image(client: Client) -> None:
    response = await patch(client, "nope", [{"op": "replace", "path": "/name", "value": "x"}])
    assert await error_of(response, 404) == ("EMU.0404", "No image found with ID nope")


# -- PATCH /v2/cloudimages/{id} ----------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "application/json;charset=UTF-8", "Application/JSON ; charset=utf-8"])
async def test_cloudimages_updates_the_documented_attributes(client: Client, content_type: str) -> None:
    image = await active_image(client)
    body = [
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "replace", "path": "/__description", "value": "d" * 1024},
        {"op": "replace", "path": "/min_ram", "value": "2048"},
        {"op": "replace", "path": "/hw_firmware_type", "value": "uefi"},
        {"op": "add", "path": "/__support_kvm", "value": "true"},
        {"op": "add", "path": "/enterprise_project_id", "value": "0"},
        {"op": "add", "path": "/custom", "value": "c"},
    ]

    response = await cloud_patch(client, image["id"], body, content_type)

    assert response.status == 200
    updated = await response.json()
    assert {key: updated[key] for key in ("name", "min_ram", "hw_firmware_type", "__support_kvm", "custom")} == {
        "name": "renamed", "min_ram": 2048, "hw_firmware_type": "uefi", "__support_kvm": "true", "custom": "c"
    }  # fmt: skip
    assert await show(client, image["id"]) == updated


@pytest.mark.parametrize("value", [0, 512, "512"])
async def test_cloudimages_takes_min_ram_as_a_number_or_digits(client: Client, value: int | str) -> None:
    image = await active_image(client)
    response = await cloud_patch(client, image["id"], [{"op": "replace", "path": "/min_ram", "value": value}])
    assert (await response.json())["min_ram"] == int(value)


async def test_cloudimages_with_no_operations_answers_the_image_unchanged(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = await active_image(client)
    monkeypatch.setattr(emulator_images, "timestamp", lambda: "2031-01-02T03:04:05Z")
    response = await cloud_patch(client, image["id"], [])
    assert response.status == 200
    assert await response.json() == image


async def test_cloudimages_adds_replaces_and_removes_custom_attributes(client: Client) -> None:
    image = await active_image(client, old="1", gone="2")
    body = [
        {"op": "replace", "path": "/old", "value": "one"},
        {"op": "remove", "path": "/gone"},
        {"op": "add", "path": "/old", "value": "uno"},
        {"op": "remove", "path": "/__description"},
    ]

    updated = await (await cloud_patch(client, image["id"], body)).json()

    assert updated["old"] == "uno"
    assert "gone" not in updated and "__description" not in updated


@pytest.mark.parametrize(
    ("operation", "code", "message"),
    [
        ({"op": "replace", "path": "/name", "value": "n" * 129}, "IMG.0002", "The image name contains more than 128 characters."),
        ({"op": "replace", "path": "/name", "value": ""}, "IMG.0003", "The image name format is invalid."),
        ({"op": "replace", "path": "/name", "value": 5}, "IMG.0003", "The image name format is invalid."),
        ({"op": "replace", "path": "/__description", "value": "d" * 1025}, "IMG.0004",
         "The description contains more than 1024 characters."),
        ({"op": "replace", "path": "/min_ram", "value": -1}, "IMG.0001", "The value of min_ram must be a non-negative integer."),
        ({"op": "replace", "path": "/min_ram", "value": "1.5"}, "IMG.0001", "The value of min_ram must be a non-negative integer."),
        ({"op": "replace", "path": "/hw_firmware_type", "value": "efi"}, "IMG.0001",
         "The value of hw_firmware_type must be bios or uefi."),
        ({"op": "add", "path": "/custom", "value": 5}, "IMG.0001", "The value of custom must be a string."),
        ({"op": "replace", "path": "/__os_type", "value": "Windows"}, "IMG.0001", "The attribute /__os_type cannot be updated."),
        ({"op": "replace", "path": "/visibility", "value": "public"}, "IMG.0001", "The attribute /visibility cannot be updated."),
        ({"op": "replace", "path": "/status", "value": "queued"}, "IMG.0001", "The attribute /status cannot be updated."),
        ({"op": "remove", "path": "/id"}, "IMG.0001", "The attribute /id cannot be updated."),
        ({"op": "add", "path": "/os_glance_x", "value": "x"}, "IMG.0001", "The attribute /os_glance_x cannot be updated."),
        ({"op": "add", "path": "/locations/-", "value": "x"}, "IMG.0001", "The attribute /locations/- cannot be updated."),
        ({"op": "remove", "path": "/name"}, "IMG.0001", "The attribute name cannot be removed."),
        ({"op": "remove", "path": "/missing"}, "IMG.0001", "The attribute missing does not exist."),
        ({"op": "replace", "path": "/missing", "value": "x"}, "IMG.0001", "The attribute missing does not exist."),
        ({"op": "replace", "path": "/__support_xen", "value": "true"}, "IMG.0001", "The attribute __support_xen does not exist."),
        ({"replace": "/name", "value": "x"}, "IMG.0001",
         "Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace."),
    ],
)  # fmt: skip
async def test_cloudimages_refuses_and_saves_nothing(
    client: Client, operation: dict[str, Any], code: str, message: str
) -> None:
    image = await active_image(client)
    body = [{"op": "replace", "path": "/name", "value": "changed"}, operation]

    response = await cloud_patch(client, image["id"], body)

    assert await error_of(response, 400) == (code, message)
    assert await show(client, image["id"]) == image


@pytest.mark.parametrize("content_type", [V21, "application/json-patch+json", "text/plain"])
async def test_cloudimages_wants_application_json(client: Client, content_type: str) -> None:
    image = await active_image(client)
    response = await cloud_patch(client, image["id"], [], content_type)
    assert await error_of(response, 415) == (
        "EMU.0415",
        f"Unsupported Content-Type {content_type!r}: use application/json.",
    )


async def test_cloudimages_wants_a_body(client: Client) -> None:
    image = await active_image(client)
    response = await client.patch(f"/v2/cloudimages/{image['id']}", headers={"Content-Type": "application/json"})
    assert await error_of(response, 400) == ("IMG.0007", "Body expected in request.")


async def test_cloudimages_updates_only_active_images(client: Client) -> None:
    image = await create(client)
    response = await cloud_patch(client, image["id"], [{"op": "replace", "path": "/name", "value": "x"}])
    assert await error_of(response, 400) == (
        "IMG.0001",
        f"Only active images can be updated; image {image['id']} is queued.",
    )


async def test_cloudimages_answers_404_for_an_unknown_image(client: Client) -> None:
    response = await cloud_patch(client, "nope", [])
    assert await error_of(response, 404) == ("EMU.0404", "No image found with ID nope")


# -- image data --------------------------------------------------------------------


async def test_upload_and_download_a_body_larger_than_client_max_size(client: Client) -> None:
    data = pattern(2 * JSON_BODY_LIMIT + 12345)
    image = await create(client)

    response = await upload(client, image["id"], data)

    assert response.status == 204
    stored = await show(client, image["id"])
    assert stored["status"] == "active"
    assert stored["size"] == len(data)
    assert stored["__image_size"] == str(len(data))
    assert stored["checksum"] == hashlib.md5(data).hexdigest()
    assert stored["os_hash_algo"] == "sha512"
    assert stored["os_hash_value"] == hashlib.sha512(data).hexdigest()

    download = await client.get(f"/v2/images/{image['id']}/file")
    assert download.status == 200
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-MD5"] == stored["checksum"]
    assert await download.read() == data


async def test_upload_streams_a_chunked_body(client: Client) -> None:
    chunks = [pattern(MiB), b"tail"]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    image = await create(client)
    assert (await upload(client, image["id"], body())).status == 204
    assert (await show(client, image["id"]))["checksum"] == hashlib.md5(b"".join(chunks)).hexdigest()


async def test_download_serves_a_range(client: Client) -> None:
    image = await active_image(client)
    response = await client.get(f"/v2/images/{image['id']}/file", headers={"Range": "bytes=1-2"})
    assert response.status == 206
    assert await response.read() == b"at"


async def test_download_of_an_image_without_data_answers_204(client: Client) -> None:
    image = await create(client)
    response = await client.get(f"/v2/images/{image['id']}/file")
    assert response.status == 204
    assert await response.read() == b""


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_data_of_an_unknown_image_is_404(client: Client, method: str) -> None:
    response = await client.request(
        method, "/v2/images/nope/file", data=b"x" if method == "PUT" else None,
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert await error_of(response, 404) == ("EMU.0404", "No image found with ID nope")


async def test_upload_to_an_image_with_data_is_a_conflict(client: Client) -> None:
    image = await active_image(client)
    response = await upload(client, image["id"], b"other")
    assert await error_of(response, 409) == ("EMU.0409", "Image status transition from active to saving is not allowed")
    assert (await show(client, image["id"]))["size"] == 4


@pytest.mark.parametrize("content_type", ["application/json", None])
async def test_upload_wants_octet_stream(aiohttp_client: Factory, content_type: str | None) -> None:
    journal: list[RecordedRequest] = []
    client = await aiohttp_client(build_emulator_app(journal=journal))
    image = await create(client)
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.put(
        f"/v2/images/{image['id']}/file", data=b"x", headers=headers, skip_auto_headers=["Content-Type"]
    )
    assert journal[-1].headers.get("Content-Type") == content_type
    assert await error_of(response, 415) == ("EMU.0415", f"Invalid content type {content_type}")
    assert (await show(client, image["id"]))["status"] == "queued"


class Gate:
    """A request body that sends one chunk, then waits for the test to open the gate."""

    def __init__(self) -> None:
        self.sent = asyncio.Event()
        self.open = asyncio.Event()

    async def body(self) -> AsyncIterator[bytes]:
        yield b"first"
        self.sent.set()
        await self.open.wait()
        yield b"second"


async def wait_for_status(client: Client, image_id: str, status: str) -> None:
    for _ in range(500):
        if (await show(client, image_id))["status"] == status:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"image {image_id} never became {status}")


async def test_an_upload_in_progress_refuses_a_second_one(client: Client) -> None:
    image = await create(client)
    gate = Gate()
    first = asyncio.create_task(upload(client, image["id"], gate.body()))
    await gate.sent.wait()
    await wait_for_status(client, image["id"], "saving")

    second = await upload(client, image["id"], b"other")

    assert await error_of(second, 409) == ("EMU.0409", "Image status transition from saving to saving is not allowed")
    gate.open.set()
    assert (await first).status == 204
    assert (await show(client, image["id"]))["checksum"] == hashlib.md5(b"firstsecond").hexdigest()


async def test_deleting_an_image_during_its_upload_answers_410_and_keeps_no_data(client: Client) -> None:
    image = await create(client)
    gate = Gate()
    uploading = asyncio.create_task(upload(client, image["id"], gate.body()))
    await gate.sent.wait()
    await wait_for_status(client, image["id"], "saving")

    assert (await client.delete(f"/v2/images/{image['id']}")).status == 204
    gate.open.set()

    code, message = await error_of(await uploading, 410)
    assert message.startswith(f"Image {image['id']} could not be found after upload.")
    assert data_files(client) == []


async def test_a_client_gone_mid_upload_leaves_the_image_queued_and_no_file(client: Client) -> None:
    image = await create(client)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PUT /v2/images/{image['id']}/file HTTP/1.1\r\nHost: emulator\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {8 * MiB}\r\n\r\n".encode()
        + pattern(MiB)
    )
    await writer.drain()
    await wait_for_status(client, image["id"], "saving")

    writer.close()
    await writer.wait_closed()

    await wait_for_status(client, image["id"], "queued")
    assert data_files(client) == []
    assert (await upload(client, image["id"], b"retry")).status == 204


# -- cross-cutting: request id, aiohttp's own answers, journal, lifecycle ------------


async def test_the_request_id_is_echoed_or_made(client: Client) -> None:
    echoed = await client.get("/v2/images", headers={"X-Openstack-Request-Id": "req-mine"})
    made = await client.get("/v2/images/nope")
    assert echoed.headers["X-Openstack-Request-Id"] == "req-mine"
    assert re.fullmatch(r"req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", made.headers["X-Openstack-Request-Id"])


async def test_aiohttps_own_refusals_are_ims_shaped(client: Client) -> None:
    not_found = await client.get("/v2/nothing")
    not_allowed = await client.post("/v2/images/some-id")
    too_large = await client.post("/v2/images", data=io.BytesIO(b" " * (JSON_BODY_LIMIT + 1)))

    assert await error_of(not_found, 404) == ("EMU.0404", "The resource could not be found.")
    assert await error_of(not_allowed, 405) == ("EMU.0405", "The method POST is not allowed for this resource.")
    assert "PATCH" in not_allowed.headers["Allow"]
    code, message = await error_of(too_large, 413)
    assert message.startswith(f"Maximum request body size {JSON_BODY_LIMIT} exceeded")


async def test_the_journal_records_each_request_before_handling(aiohttp_client: Factory) -> None:
    journal: list[RecordedRequest] = []
    app = build_emulator_app(journal=journal)
    client = await aiohttp_client(app)
    image = await create(client, name="x")
    body = b'[{"op": "replace", "path": "/name", "value": "y"}]'
    await patch(client, image["id"], body)
    await upload(client, image["id"], pattern(MiB))
    await client.get("/v2/images/a%2Fb?limit=1", headers={"X-Auth-Token": "token"})

    assert app[EMULATOR_JOURNAL] is journal
    assert [(r.method, r.raw_path) for r in journal] == [
        ("POST", "/v2/images"),
        ("PATCH", f"/v2/images/{image['id']}"),
        ("PUT", f"/v2/images/{image['id']}/file"),
        ("GET", "/v2/images/a%2Fb?limit=1"),
    ]
    assert journal[0].body == b'{"name": "x"}'
    assert journal[1].body == body
    assert journal[1].headers["Content-Type"] == V21
    assert journal[2].body is None
    assert journal[3].body is None
    assert journal[3].headers["X-Auth-Token"] == "token"


async def test_the_journal_records_a_body_too_large_to_read(aiohttp_client: Factory) -> None:
    journal: list[RecordedRequest] = []
    client = await aiohttp_client(build_emulator_app(journal=journal))
    response = await client.post("/v2/images", data=io.BytesIO(b" " * (JSON_BODY_LIMIT + 1)))
    assert response.status == 413
    assert [(r.method, r.body) for r in journal] == [("POST", None)]


async def test_without_a_journal_the_app_holds_none(aiohttp_client: Factory) -> None:
    client = await aiohttp_client(build_emulator_app())
    assert client.server.app[EMULATOR_JOURNAL] is None


async def test_start_emulator_serves_until_cleaned_up() -> None:
    runner, base_url = await start_emulator()
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        async with aiohttp.ClientSession() as session, session.post(f"{base_url}/v2/images", json={"name": "x"}) as response:
            assert response.status == 201
        directory = runner.app[IMAGE_STORE].directory
        assert directory.is_dir()
    finally:
        await runner.cleanup()
    assert not directory.exists()


async def test_start_emulator_cleans_up_when_the_port_is_taken() -> None:
    runner, base_url = await start_emulator()
    try:
        port = int(base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            await start_emulator(port=port)
    finally:
        await runner.cleanup()


# What run_emulator prints once it listens, with the port it was given (for port 0, the one it got).
SERVING = re.compile(rb"(?:Running|listening) on (http://127\.0\.0\.1:\d+)")


async def test_run_emulator_serves_until_interrupted() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from ims_emulator.app import run_emulator; run_emulator('127.0.0.1', 0)",
        cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        printed = b""
        async with asyncio.timeout(30):
            while (serving := SERVING.search(printed)) is None:
                line = await process.stdout.readline()
                if not line:
                    pytest.fail(f"the emulator exited before it listened: {printed!r}")
                printed += line
        # Listening already: one request, no retries.
        async with aiohttp.ClientSession() as session, session.get(serving[1].decode() + "/v2/images") as response:
            assert response.status == 200
            assert (await response.json())["images"] == []
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
