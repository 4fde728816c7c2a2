"""Real Glance 33, no gateway: proves the harness and pins the behaviour the gateway
must reproduce (cases.py). Every case runs on a fresh image made from BASE_IMAGE."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from testing.glance import REQUIREMENTS, GlanceServer

from .cases import ACCEPT_PATCH, ALL_CASES, PatchCase, ops, v20, v21
from .imageapi import V20, V21, ImageApi, comparable

pytestmark = [pytest.mark.glance, pytest.mark.e2e]

MIB = 1 << 20


@pytest.fixture
def image(glance_api: ImageApi, base_images: Callable[[ImageApi], dict[str, Any]]) -> dict[str, Any]:
    return base_images(glance_api)


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def test_the_pinned_versions_are_the_ones_running(glance: GlanceServer) -> None:
    pins = pinned_versions()
    assert pins["glance"] == "33.0.0"
    assert {name: glance.versions[name] for name in pins} == pins


def test_glance_answers_without_credentials(glance_api: ImageApi) -> None:
    reply = glance_api.request("GET", "/versions")
    assert reply.status == 200
    current = [v["id"] for v in reply.json()["versions"] if v["status"] == "CURRENT"]
    assert len(current) == 1 and current[0].startswith("v2.")
    assert glance_api.request("GET", "/v2/images").status == 200


def test_upload_and_download_one_mib(glance_api: ImageApi, image: dict[str, Any]) -> None:
    data = os.urandom(MIB)
    glance_api.upload(image["id"], (data[i : i + 65536] for i in range(0, MIB, 65536)))

    stored = glance_api.get_image(image["id"])
    assert stored["status"] == "active"
    assert stored["size"] == MIB
    assert stored["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert stored["os_hash_algo"] == "sha512"
    assert stored["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert glance_api.download_sha256(image["id"]) == (hashlib.sha256(data).hexdigest(), MIB)


def test_case_names_are_unique() -> None:
    names = [case.name for case in ALL_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.name)
def test_patch_case(glance_api: ImageApi, image: dict[str, Any], case: PatchCase) -> None:
    before = glance_api.get_image(image["id"])

    reply = glance_api.patch(image["id"], case.content_type, case.body, accept="application/json")

    assert reply.status == case.status, reply.body[:600]
    after = glance_api.get_image(image["id"])
    if case.status == 200:
        assert comparable(reply.json()) == comparable(after)
        assert comparable(after) == expected_image(before, case)
    else:
        assert after == before
    if case.message is not None:
        assert case.message in reply.error.text
    if case.status == 415:
        assert reply.header("Accept-Patch") == ACCEPT_PATCH


def expected_image(before: dict[str, Any], case: PatchCase) -> dict[str, Any]:
    expected = {**comparable(before), **case.result}
    for attribute in case.removed:
        del expected[attribute]
    return expected


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/plain; charset=UTF-8"),
        ("*/*", "text/html; charset=UTF-8"),
        ("text/html", "text/html; charset=UTF-8"),
        ("application/json", "application/json"),
    ],
)
@pytest.mark.parametrize(
    ("body", "explanation", "detail"),
    [
        (ops(v21("replace", "/id", "x")), "Attribute 'id' is read-only.", ""),
        (
            ops(v21("remove", "/name")),
            "Access was denied to this resource.",
            "Property name may not be removed.",
        ),
    ],
)
def test_error_bodies_follow_accept_and_parse_alike(
    glance_api: ImageApi,
    image: dict[str, Any],
    accept: str | None,
    content_type: str,
    body: bytes,
    explanation: str,
    detail: str,
) -> None:
    reply = glance_api.patch(image["id"], V21, body, accept=accept)

    assert reply.status == 403
    assert reply.header("Content-Type") == content_type
    assert (reply.error.explanation, reply.error.detail) == (explanation, detail)


def test_unknown_image_is_404_after_the_body_is_parsed(glance_api: ImageApi) -> None:
    missing = str(uuid.uuid4())

    found = glance_api.patch(missing, V21, ops(v21("replace", "/name", "x")))
    read_only = glance_api.patch(missing, V20, ops(v20("replace", "/id", "x")))

    assert found.status == 404
    assert found.error.text == f"No image found with ID {missing}"
    assert read_only.status == 403


def test_a_missing_content_type_shows_webobs_unfilled_template(
    glance_api: ImageApi, image: dict[str, Any]
) -> None:
    reply = glance_api.patch(image["id"], None, b"[]", accept="application/json")

    assert reply.status == 415
    assert reply.error.explanation == (
        "The request media type ${CONTENT_TYPE} is not supported by this server."
    )


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


@pytest.mark.parametrize(
    ("parts", "status", "message"),
    [
        ((), 400, "Malformed JSON in request body."),
        ((b'[{"op": "replace", ', b'"path": "/name", "value": "chunked"}]'), 200, None),
    ],
)
def test_a_chunked_body_counts_as_present(
    glance_api: ImageApi,
    image: dict[str, Any],
    parts: tuple[bytes, ...],
    status: int,
    message: str | None,
) -> None:
    reply = glance_api.request(
        "PATCH",
        f"/v2/images/{image['id']}",
        headers={"Content-Type": V21, "Accept": "application/json"},
        body=chunks(*parts),
    )

    assert reply.status == status
    if message is None:
        assert reply.json()["name"] == "chunked"
    else:
        assert reply.error.text == message


def test_both_shapes_of_the_conformance_vector_give_the_same_image(
    glance_api: ImageApi, base_images: Callable[[ImageApi], dict[str, Any]]
) -> None:
    images = [base_images(glance_api) for _ in range(2)]
    bodies = [
        (V20, ops(v20("replace", "/name", "fedora"), v20("remove", "/sparks"), v20("add", "/bebim", "bap"))),
        (V21, ops(v21("replace", "/name", "fedora"), v21("remove", "/sparks"), v21("add", "/bebim", "bap"))),
    ]
    for created, (content_type, body) in zip(images, bodies, strict=True):
        assert glance_api.patch(created["id"], content_type, body).status == 200

    results = [comparable(glance_api.get_image(created["id"])) for created in images]
    assert results[0] == results[1]
    assert results[0]["name"] == "fedora"
