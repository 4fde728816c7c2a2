"""Ways to make IMS's stack execute an image change the gateway did not check, and the gateway's answer.

Each vector is sent twice, raw: straight to the emulator, which routes like IMS's WSGI
stack (version negotiation, Routes' ``_method``, a trusting server's SCRIPT_NAME, header
names with ``_``, Routes' ``$``), to show that it is a real way in; and through the
gateway, which must refuse it (or defuse it) so that the image, read back directly from
the emulator, is unchanged and still there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from gateway.patch.parser import V20_MEDIA_TYPE as V20
from gateway.patch.parser import V21_MEDIA_TYPE as V21
from gateway.service.state import METRICS
from ims_emulator.app import RecordedRequest, build_emulator_app
from tests.conftest import Gateway, GatewayFactory, RawResponse, raw_request

# The gateway serves on uvloop, and its hardening reads aiohttp internals that differ there: both loops.
pytestmark = pytest.mark.both_loops

FORBIDDEN_V21 = b'[{"op": "replace", "path": "/min_ram", "value": 4096}]'
FORBIDDEN_V20 = b'[{"replace": "/min_ram", "value": 4096}]'
# Read as v2.1 it renames the image; read as v2.0 it sets __os_type.
TWO_FACED = b'[{"op": "replace", "path": "/name", "value": "Windows", "replace": "/__os_type"}]'
ADD_V20 = b'[{"add": "/team", "value": "infra"}]'
VND = "application/vnd.openstack.images-"


@dataclass(frozen=True)
class Vector:
    name: str
    method: str
    target: str  # {id}: the image
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    # What the emulator alone does with it: "changes" (a forbidden change is applied),
    # "deletes", "deactivates", "tags", or "refuses" (only the gateway's own read could do harm).
    direct: str = "changes"
    gateway_status: int = 400
    reason: str | None = None  # the gateway's refusal reason, as counted in refused_requests_total
    extra: dict[str, Any] = field(default_factory=dict)

    def bytes_for(self, image: str) -> bytes:
        lines = [f"{self.method} {self.target.replace('{id}', image)} HTTP/1.1", "Host: ims.example.com"]
        lines += [f"{name}: {value.replace('{id}', image)}" for name, value in self.headers]
        if self.body or self.method in ("PATCH", "POST", "PUT"):
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def _accept(version: str, body: bytes = FORBIDDEN_V21, content_type: str = V21) -> Vector:
    return Vector(
        f"accept {version!r}", "PATCH", "/images/{id}", [("Accept", version), ("Content-Type", content_type)], body,
        reason="forbidden_attribute",
    )  # fmt: skip


def _query(method: str, query: str, body: bytes = FORBIDDEN_V21, direct: str = "changes") -> Vector:
    headers = [("Content-Type", V21)] if body else []
    return Vector(f"{method} ?{query}", method, "/v2/images/{id}?" + query, headers, body, direct, reason="method_override")


VECTORS = [
    # 1. Glance's version negotiation routes a version-less path by Accept.
    *(_accept(VND + version) for version in ("v2", "v2.0", "v2.1", "v2.9", "v2.17")),
    _accept(VND + "v2, "),
    _accept(VND + "v2;q=1"),
    _accept(VND + "v2", FORBIDDEN_V20, V20),
    # 2. A trusting WSGI server cuts SCRIPT_NAME from the front of the path.
    Vector("SCRIPT_NAME", "PATCH", "/foo/v2/images/{id}", [("SCRIPT_NAME", "/foo"), ("Content-Type", V21)], FORBIDDEN_V21, reason="bad_target"),
    Vector("Script-Name", "PATCH", "/foo/v2/images/{id}", [("Script-Name", "/foo"), ("Content-Type", V21)], FORBIDDEN_V21, reason="bad_target"),
    Vector("script_name", "PATCH", "/x/y/v2/images/{id}", [("script_name", "/x/y"), ("Content-Type", V21)], FORBIDDEN_V21, reason="bad_target"),
    # 3. Routes' _method overrides the method of any request, in any spelling webob decodes.
    *(_query(method, "_method=PATCH") for method in ("POST", "PUT", "GET", "DELETE", "OPTIONS")),
    _query("POST", "_method=patch"),
    _query("POST", "x=_method&%5Fmethod=PATCH"),
    _query("POST", "a=1;_method=PATCH"),
    _query("POST", "_method=GET&_method=PATCH"),
    _query("GET", "_method=DELETE", body=b"", direct="deletes"),
    _query("GET", "_method&_%6Dethod=DELETE", body=b"", direct="deletes"),
    Vector(
        "GET deactivate ?_method=POST", "GET", "/v2/images/{id}/actions/deactivate?_method=POST",
        direct="deactivates", reason="method_override",
    ),
    Vector("GET tag ?_method=PUT", "GET", "/v2/images/{id}/tags/hacked?_method=PUT", direct="tags", reason="method_override"),
    # 4. The gateway's own v2.0 add check once read the client's path and query.
    Vector("add check ?_method=DELETE", "PATCH", "/v2/images/{id}?_method=DELETE", [("Content-Type", V20)], ADD_V20, "refuses", reason="method_override"),
    Vector(
        "add check on deactivate", "PATCH", "/v2/images/{id}/actions/deactivate?_method=POST", [("Content-Type", V20)], ADD_V20,
        "refuses", reason="method_override",
    ),
    # 5. A json-patch body on another method or another path.
    # Upper case: Glance refuses it (415), a stack that lower-cases media types would not.
    Vector("POST json-patch ?_method", "POST", "/v2/images/{id}?_method=PATCH", [("Content-Type", V21.upper())], FORBIDDEN_V21, "refuses", reason="method_override"),
    Vector("PUT json-patch", "PUT", "/v2/images/{id}", [("Content-Type", V21)], FORBIDDEN_V21, "refuses", reason="method_override"),
    # 6. Two readings of the content type: uWSGI maps Content_Type to CONTENT_TYPE and
    #    joins repeats; Connection would make the gateway drop the one it checked.
    Vector(
        "Content_Type first", "PATCH", "/v2/images/{id}",
        [("Content_Type", V20 + ";"), ("Content-Type", V21)], TWO_FACED, gateway_status=200, reason=None,
    ),
    Vector(
        "Connection: Content-Type", "PATCH", "/v2/images/{id}",
        # Only a proxy that honours Connection leaves Content_Type alone for IMS to read.
        [("Content-Type", V21), ("Content_Type", V20), ("Connection", "Content-Type")], TWO_FACED, "refuses",
        reason="connection_header",
    ),
    # 7. Routes' `$` matches before a final newline.
    Vector("trailing %0A", "PATCH", "/v2/images/{id}%0A", [("Content-Type", V21)], FORBIDDEN_V21, reason="bad_target"),
    Vector("trailing %0a after slash", "PATCH", "//v2/images/{id}%0a", [("Content-Type", V21)], FORBIDDEN_V21, reason="bad_target"),
    # 8. Forms: Routes reads _method from a form POST.
    Vector(
        "form _method=DELETE", "POST", "/v2/images/{id}", [("Content-Type", "application/x-www-form-urlencoded")],
        b"_method=DELETE", "refuses", reason="method_override",
    ),
]


class Stack:
    def __init__(self, gateway: Gateway, emulator: str, journal: list[RecordedRequest], http: aiohttp.ClientSession) -> None:
        self.gateway, self.emulator, self.journal, self.http = gateway, emulator, journal, http

    async def image(self) -> str:
        """An active image, made directly on the emulator."""
        async with self.http.post(self.emulator + "/v2/images", json={"name": "gate", "disk_format": "raw", "container_format": "bare"}) as response:
            image = str((await response.json())["id"])
        async with self.http.put(f"{self.emulator}/v2/images/{image}/file", data=b"x" * 8, headers={"Content-Type": "application/octet-stream"}) as response:
            assert response.status == 204
        self.journal.clear()
        return image

    async def read(self, image: str) -> dict[str, Any] | None:
        async with self.http.get(f"{self.emulator}/v2/images/{image}") as response:
            return await response.json() if response.status == 200 else None


@pytest.fixture
async def stack(aiohttp_server: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> Stack:
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal))
    url = str(emulator.make_url("")).rstrip("/")
    return Stack(await make_gateway(url), url, journal, http)


def untouched(image: dict[str, Any] | None) -> bool:
    return image is not None and image["min_ram"] == 0 and image["status"] == "active" and image["tags"] == [] and image["__os_type"] == "Linux"


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
async def test_the_emulator_alone_executes_the_vector(stack: Stack, vector: Vector) -> None:
    """Without the gateway, each vector does what it is here for (so the gateway test can fail)."""
    image = await stack.image()
    before = await stack.read(image)
    await raw_request(stack.emulator, vector.bytes_for(image))
    after = await stack.read(image)
    effects = {
        "changes": after is not None and (after["min_ram"] == 4096 or after["__os_type"] == "Windows"),
        "deletes": after is None,
        "deactivates": after is not None and after["status"] == "deactivated",
        "tags": after is not None and after["tags"] == ["hacked"],
        "refuses": after == before,
    }
    assert effects[vector.direct], (vector.name, after)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
async def test_through_the_gateway_the_vector_changes_nothing(stack: Stack, vector: Vector) -> None:
    image = await stack.image()
    response = await raw_request(stack.gateway.url, vector.bytes_for(image))
    assert response.status == vector.gateway_status, response.body
    if response.status >= 400:
        assert json.loads(response.body)["error"]["code"].startswith("IMSGW.")
    assert untouched(await stack.read(image))
    # Whatever reached IMS was a plain request: no override, no routing header, one content type.
    for seen in stack.journal:
        assert "_method" not in seen.raw_path.lower()
        assert not [name for name in seen.headers if "_" in name or name.lower() == "script-name"]
        assert len(seen.headers.getall("Content-Type", [])) <= 1
    if vector.reason is not None:
        counts = stack.gateway.app[METRICS].registry
        assert counts.get_sample_value("ims_gateway_refused_requests_total", {"reason": vector.reason}) == 1


async def test_a_version_less_patch_is_an_image_patch_and_is_applied_when_allowed(stack: Stack) -> None:
    image = await stack.image()
    body = b'[{"op": "replace", "path": "/name", "value": "renamed"}]'
    vector = Vector("allowed", "PATCH", "/images/{id}", [("Accept", VND + "v2"), ("Content-Type", V21)], body)
    response = await raw_request(stack.gateway.url, vector.bytes_for(image))
    assert response.status == 200, response.body
    assert (await stack.read(image) or {})["name"] == "renamed"


async def test_the_v20_add_check_reads_the_canonical_image_only(stack: Stack) -> None:
    image = await stack.image()
    vector = Vector("add", "PATCH", "/images/{id}?verbose=1", [("Accept", VND + "v2.1"), ("Content-Type", V20)], ADD_V20)
    response = await raw_request(stack.gateway.url, vector.bytes_for(image))
    assert response.status == 200, response.body
    read, patched = stack.journal
    assert (read.method, read.raw_path, read.headers["Accept"]) == ("GET", f"/v2/images/{image}", "application/json")
    assert (patched.method, patched.raw_path) == ("PATCH", f"/images/{image}?verbose=1")
    assert (await stack.read(image) or {})["team"] == "infra"


@pytest.mark.parametrize("name", ["SCRIPT_NAME", "Script-Name", "X-Forwarded-Prefix", "X-Original-URL", "X_Anything", "path_info"])
async def test_routing_headers_are_dropped_and_counted(stack: Stack, name: str) -> None:
    image = await stack.image()
    async with stack.http.get(f"{stack.gateway.url}/v2/images/{image}", headers={name: "/v2"}) as response:
        assert response.status == 200
    [seen] = stack.journal
    assert name not in seen.headers
    label = name.lower().replace("-", "_") if "_" not in name or name.upper() in ("SCRIPT_NAME", "PATH_INFO") else "underscore"
    counts = stack.gateway.app[METRICS].registry
    assert counts.get_sample_value("ims_gateway_routing_headers_total", {"header": label, "action": "dropped"}) == 1


async def test_routing_headers_can_be_refused_instead(
    aiohttp_server: Any, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal))
    gateway = await make_gateway(str(emulator.make_url("")).rstrip("/"), server={"routing_headers": "refuse"})
    async with http.get(gateway.url + "/v2/images", headers={"SCRIPT_NAME": "/v2", "X-Kept": "1"}) as response:
        assert response.status == 400
        message = (await response.json())["error"]["message"]
    assert message == "These headers are not accepted: SCRIPT_NAME. They can change the path or the method IMS executes."
    assert journal == []
    counts = gateway.app[METRICS].registry
    assert counts.get_sample_value("ims_gateway_routing_headers_total", {"header": "script_name", "action": "refused"}) == 1
    assert counts.get_sample_value("ims_gateway_refused_requests_total", {"reason": "routing_header"}) == 1


@pytest.mark.parametrize(
    ("request_line", "status"),
    [("GET /v2/images HTTP/2.0", 505), ("GET /v2/images", 505), ("GET /v2/images HTTP/1.0", 200), ("GET /v2/images HTTP/1.1", 200)],
)
async def test_only_http_1_0_and_1_1_are_accepted(stack: Stack, request_line: str, status: int) -> None:
    request = f"{request_line}\r\nHost: gw\r\nConnection: close\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(*stack.gateway.url.removeprefix("http://").split(":"))
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line = answer.split(b"\r\n", 1)[0].decode()
    assert status_line.split(" ")[1] == str(status), answer
    if status == 505:
        assert status_line == "HTTP/1.1 505 HTTP Version Not Supported"
        assert b'"code": "IMSGW.0505"' in answer
        assert stack.journal == []


async def test_an_upgrade_request_never_stalls_the_requests_pipelined_behind_it(stack: Stack) -> None:
    image = await stack.image()
    upgrade = f"GET /v2/images/{image} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
    behind = Vector("behind", "PATCH", "/v2/images/{id}", [("Content-Type", V21)], FORBIDDEN_V21).bytes_for(image)
    reader, writer = await asyncio.open_connection(*stack.gateway.url.removeprefix("http://").split(":"))
    writer.write(upgrade.encode() + behind)
    # The answer to the first request, then the connection closes at once (not after the
    # keep-alive timeout): the client resends what was pipelined, as HTTP/1.1 says it must.
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 ") == 1
    assert untouched(await stack.read(image))


@pytest.mark.parametrize(("depth", "status"), [(8, 400), (9, 400), (400, 400)])
async def test_values_nested_deeper_than_the_limit_are_refused(stack: Stack, depth: int, status: int) -> None:
    image = await stack.image()
    value = "[" * depth + '"x"' + "]" * depth
    body = f'[{{"op": "add", "path": "/team", "value": {value}}}]'.encode()
    vector = Vector("deep", "PATCH", "/v2/images/{id}", [("Content-Type", V21)], body)
    response: RawResponse = await raw_request(stack.gateway.url, vector.bytes_for(image))
    assert response.status == status
    message = json.loads(response.body)["error"]["message"]
    if depth > 8:
        assert message == 'Operation object 0: the member "value" is nested more than 8 levels deep.'
        assert stack.journal == []
    else:  # forwarded: the emulator, as Glance, wants a string
        assert message.startswith("Provided object does not match schema 'image'")
        assert [seen.method for seen in stack.journal] == ["PATCH"]
