"""Huawei Cloud's own clients through the gateway, in front of an emulator that verifies AK/SK
signatures as IMS's API gateway does: the real huaweicloudsdkims client with the shipped
configuration (signatures pass through untouched) and with re-signing (a listed key)."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer, SM3Signer
from huaweicloudsdkims.v2 import (
    GlanceCreateImageMetadataRequest,
    GlanceCreateImageMetadataRequestBody,
    GlanceListImagesRequest,
    GlanceShowImageRequest,
    GlanceUpdateImageRequest,
    GlanceUpdateImageRequestBody,
    ImsClient,
)

from gateway.edge import signing
from gateway.patch.parser import V20_MEDIA_TYPE as V20
from gateway.patch.parser import V21_MEDIA_TYPE as V21
from gateway.service.state import METRICS
from ims_emulator.app import RecordedRequest, build_emulator_app
from tests.conftest import Gateway, GatewayFactory

AK = "HPUAGATEWAYTEST00001"
SK = "gateway-test-secret-key-0000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"
T = TypeVar("T")


class Stack:
    def __init__(self, gateway: Gateway, emulator: str, journal: list[RecordedRequest], handling: str = "resigned") -> None:
        self.gateway, self.emulator, self.journal, self.handling = gateway, emulator, journal, handling

    def client(self, secret: str = SK) -> ImsClient:
        config = HttpConfig.get_default_config()
        config.retry_times = 0
        config.user_agent = "ims-gateway-tests"  # else the SDK writes ~/.huaweicloud/application_id
        credentials = BasicCredentials(AK, secret, PROJECT)
        return ImsClient.new_builder().with_http_config(config).with_credentials(credentials).with_endpoint(self.gateway.url).build()

    def count(self, handling: str) -> float | None:
        return self.gateway.app[METRICS].registry.get_sample_value("ims_gateway_signed_requests_total", {"handling": handling})


async def sdk(call: Callable[[], T]) -> T:
    """Run a synchronous SDK call while the test's servers keep serving."""

    def quiet() -> T:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # every glance_* call says it is deprecated
            return call()

    return await asyncio.to_thread(quiet)


def credentials_file(tmp_path: Path) -> str:
    path = tmp_path / "credentials"
    path.write_text(f"# the keys the gateway may sign with\n{AK}:{SK}\n")
    path.chmod(0o600)
    return str(path)


@pytest.fixture(params=["passed_through", "resigned"])
async def stack(request: pytest.FixtureRequest, aiohttp_server: Any, make_gateway: GatewayFactory, tmp_path: Path) -> Stack:
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal, credentials={AK: SK}))
    url = str(emulator.make_url("")).rstrip("/")
    sections: dict[str, dict[str, Any]] = {"signing": {"credentials_file": credentials_file(tmp_path)}} if request.param == "resigned" else {}
    return Stack(await make_gateway(url, **sections), url, journal, request.param)


async def test_the_sdk_works_through_the_gateway(stack: Stack) -> None:
    client = stack.client()
    created = await sdk(lambda: client.glance_create_image_metadata(GlanceCreateImageMetadataRequest(
        body=GlanceCreateImageMetadataRequestBody(name="sdk", container_format="bare", disk_format="qcow2"))))  # fmt: skip
    image = created.id
    renamed = await sdk(lambda: client.glance_update_image(GlanceUpdateImageRequest(
        image_id=image, body=[GlanceUpdateImageRequestBody(op="replace", path="/name", value="renamed é")])))  # fmt: skip
    assert renamed.name == "renamed é"
    await sdk(lambda: client.glance_update_image(GlanceUpdateImageRequest(
        image_id=image, body=[GlanceUpdateImageRequestBody(op="add", path="/owner_team", value="infra")])))  # fmt: skip
    with pytest.raises(ClientRequestException) as refused:
        await sdk(lambda: client.glance_update_image(GlanceUpdateImageRequest(
            image_id=image, body=[GlanceUpdateImageRequestBody(op="replace", path="/__os_type", value="Windows")])))  # fmt: skip
    assert (refused.value.status_code, refused.value.error_code) == (400, "IMSGW.0403")
    assert "'__os_type' is an IMS system attribute" in refused.value.error_msg
    listed = await sdk(lambda: client.glance_list_images(GlanceListImagesRequest(limit=5, name="renamed é")))
    assert [one.id for one in listed.images] == [image]
    shown = await sdk(lambda: client.glance_show_image(GlanceShowImageRequest(image_id=image)))
    assert (shown.name, shown.to_json_object().get("owner_team")) == ("renamed é", "infra")
    # What reached IMS: every request under a valid signature (the emulator checked), for the
    # Host the client signed (passed through) or the upstream's own (signed again).
    hosts = {seen.headers["Host"] for seen in stack.journal}
    expected = urlsplit(stack.gateway.url).netloc if stack.handling == "passed_through" else urlsplit(stack.emulator).netloc
    assert hosts == {expected}
    assert all(seen.headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, ") for seen in stack.journal)
    assert [seen.method for seen in stack.journal] == ["POST", "PATCH", "PATCH", "GET", "GET"]
    assert stack.count(stack.handling) == 6


def sdk_signed(host: str, method: str, target: str, content_type: str | None, body: bytes, *, sm3: bool = False) -> SdkRequest:
    path, _, query = target.partition("?")
    headers = {"X-Project-Id": PROJECT, "User-Agent": "ims-gateway-tests"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = SdkRequest(method=method, schema="http", host=host, resource_path=path,
                         query_params=parse_qsl(query, keep_blank_values=True), header_params=headers, body=body)  # fmt: skip
    (SM3Signer if sm3 else Signer)(BasicCredentials(AK, SK)).sign(request)
    return request


async def send(url: str, request: SdkRequest) -> tuple[int, Any]:
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type")) as session:
        async with session.request(
            request.method, f"{url}{request.uri}", headers=request.header_params, data=request.body or None,
        ) as response:  # fmt: skip
            text = await response.text()
            return response.status, json.loads(text) if text else None


async def image(stack: Stack) -> str:
    # Straight to the emulator, signed by the SDK.
    request = sdk_signed(urlsplit(stack.emulator).netloc, "POST", "/v2/images", "application/json", b'{"name": "x"}')
    status, created = await send(stack.emulator, request)
    assert status == 201, created
    stack.journal.clear()
    return str(created["id"])


async def test_a_v20_request_signed_by_the_sdk_is_applied(stack: Stack) -> None:
    image_id = await image(stack)
    request = sdk_signed(urlsplit(stack.gateway.url).netloc, "PATCH", f"/v2/images/{image_id}", V20, b'[{"add": "/team", "value": "blue"}]')
    status, answer = await send(stack.gateway.url, request)
    assert status == 200, answer
    assert answer["team"] == "blue"
    patches = [seen for seen in stack.journal if seen.method == "PATCH"]
    if stack.handling == "passed_through":
        # IMS applies v2.0 itself: unrewritten, and no add check (its GET could not be signed).
        assert [(seen.headers["Content-Type"], seen.body) for seen in patches] == [(V20, b'[{"add": "/team", "value": "blue"}]')]
        assert len(stack.journal) == 1
    else:
        assert [seen.headers["Content-Type"] for seen in patches] == [V21]
        assert [seen.method for seen in stack.journal] == ["GET", "PATCH"]  # the add check, signed too


async def test_a_forbidden_change_is_refused_before_anything_is_sent(stack: Stack) -> None:
    image_id = await image(stack)
    request = sdk_signed(urlsplit(stack.gateway.url).netloc, "PATCH", f"/v2/images/{image_id}", V20, b'[{"replace": "/min_ram", "value": 1}]')
    status, answer = await send(stack.gateway.url, request)
    assert (status, answer["error"]["code"]) == (400, "IMSGW.0403")
    assert stack.journal == []


@pytest.mark.parametrize("tamper", ["signature", "stale date", "body hash"])
async def test_a_listed_keys_bad_signature_is_refused_with_401(
    aiohttp_server: Any, make_gateway: GatewayFactory, tmp_path: Path, tamper: str
) -> None:
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal, credentials={AK: SK}))
    gateway = await make_gateway(str(emulator.make_url("")).rstrip("/"), signing={"credentials_file": credentials_file(tmp_path)})
    host = urlsplit(gateway.url).netloc
    body = b'{"name": "x"}'
    request = sdk_signed(host, "POST", "/v2/images", "application/json", body)
    if tamper == "signature":
        request.header_params["Authorization"] = request.header_params["Authorization"][:-4] + "0000"
    elif tamper == "stale date":
        stale = (datetime.now(UTC) - timedelta(minutes=16)).strftime("%Y%m%dT%H%M%SZ")
        request = sdk_signed(host, "POST", "/v2/images", "application/json", body)
        request.header_params.pop("Authorization")
        request.header_params["X-Sdk-Date"] = stale
        Signer(BasicCredentials(AK, SK)).sign(request)
    else:
        request.body = b'{"name": "y"}'
    status, answer = await send(gateway.url, request)
    assert (status, answer["error"]["code"]) == (401, "IMSGW.0401")
    assert answer["error"]["message"].startswith("The request's AK/SK signature does not verify: ")
    assert journal == []
    registry = gateway.app[METRICS].registry
    assert registry.get_sample_value("ims_gateway_signed_requests_total", {"handling": "refused"}) == 1
    assert registry.get_sample_value("ims_gateway_refused_requests_total", {"reason": "signature"}) == 1


async def test_an_unlisted_keys_signed_headers_reach_ims_as_received(aiohttp_server: Any, make_gateway: GatewayFactory) -> None:
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal, credentials={AK: SK}))
    url = str(emulator.make_url("")).rstrip("/")
    stack = Stack(await make_gateway(url), url, journal, "passed_through")
    image_id = await image(stack)
    request = sdk_signed(urlsplit(stack.gateway.url).netloc, "GET", f"/v2/images/{image_id}", "application/json", b"")
    request.header_params["X-Request-Id"] = "client id, not a token"  # signed, though not a sane request id
    request.header_params.pop("Authorization")
    Signer(BasicCredentials(AK, SK)).sign(request)
    status, _ = await send(stack.gateway.url, request)
    assert status == 200
    [seen] = stack.journal
    for name in ("Host", "X-Request-Id", "X-Project-Id", "X-Sdk-Date", "Authorization", "User-Agent", "Content-Type"):
        assert seen.headers[name] == request.header_params[name], name
    assert "X-Forwarded-For" in seen.headers  # not signed: the gateway may add it


RESIGNED_TABLE = [
    ("GET", "/v2/images?name=a%20b%2Bc&limit=2&marker=x%2Fy&sort_key=name", "application/json", b"", False),
    ("GET", "/v2/images?flag=&x=%7E~%2A&_y=1", "application/json", b"", False),
    ("GET", "/v2/images/%E9%95%9C%E5%83%8F", "application/json", b"", False),
    ("POST", "/v2/images", "application/json;charset=UTF-8", '{"name": "é"}'.encode(), False),
    ("PATCH", "/v2/images/{id}", V21, b'[{"op": "replace", "path": "/name", "value": "n"}]', False),
    ("PATCH", "/v2/images/{id}", V20, b'[{"replace": "/name", "value": "n"}]', False),
    ("DELETE", "/v2/images/{id}", "application/json", b"", False),
    ("PUT", "/v2/images/{id}/file", "application/octet-stream", b"data" * 1000, False),
    ("GET", "/v2/images?a=1&b=%C3%A9", "application/json", b"", True),
    ("PATCH", "/v2/images/{id}", V21, b'[{"op": "replace", "path": "/name", "value": "m"}]', True),
]


@pytest.mark.parametrize(("method", "target", "content_type", "body", "sm3"), RESIGNED_TABLE)
async def test_the_gateways_signatures_are_the_sdks(
    aiohttp_server: Any, make_gateway: GatewayFactory, tmp_path: Path,
    method: str, target: str, content_type: str, body: bytes, sm3: bool,
) -> None:  # fmt: skip
    if sm3 and not signing.SM3_AVAILABLE:
        pytest.skip("this OpenSSL has no SM3")
    journal: list[RecordedRequest] = []
    emulator = await aiohttp_server(build_emulator_app(journal=journal, credentials={AK: SK}))
    emulator_url = str(emulator.make_url("")).rstrip("/")
    gateway = await make_gateway(emulator_url, signing={"credentials_file": credentials_file(tmp_path)})
    stack = Stack(gateway, emulator_url, journal)
    target = target.replace("{id}", await image(stack))
    status, answer = await send(gateway.url, sdk_signed(urlsplit(gateway.url).netloc, method, target, content_type, body, sm3=sm3))
    assert status != 401, answer  # the emulator verified the gateway's signature
    seen = journal[-1]
    # Recompute with the SDK's own signer over what the gateway sent, for the headers it signed.
    authorization = signing.parse_authorization(seen.headers["Authorization"])
    path, _, query = seen.raw_path.partition("?")
    check = SdkRequest(
        method=seen.method, schema="http", host=seen.headers["Host"], resource_path=path,
        query_params=parse_qsl(query, keep_blank_values=True),
        header_params={name: seen.headers[name] for name in authorization.signed_headers},
        # A streamed body is not recorded: any non-empty one makes the SDK take the declared hash.
        body=seen.body or (b"streamed" if "UNSIGNED-PAYLOAD" in seen.headers.values() else b""),
    )  # fmt: skip
    (SM3Signer if sm3 else Signer)(BasicCredentials(AK, SK)).sign(check)
    assert check.header_params["Authorization"] == seen.headers["Authorization"]
    assert seen.headers["Host"] == urlsplit(emulator_url).netloc
