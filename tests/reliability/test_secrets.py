"""Credentials never show up in the gateway's logs, metrics, migration report or answers.

Recognisable credentials go through every path: forwarded requests, every kind of refusal,
unparseable requests, slow heads, upstream faults and client disconnects, at debug log
level. Then every place the gateway writes to is searched for them.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from testing.faulty_upstream import FaultyUpstream
from tests.reliability.conftest import (
    GatewayProcess,
    Response,
    SpawnGateway,
    build_request,
    fetch,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MARK = uuid.uuid4().hex[:12]
SECRETS = {
    "X-Auth-Token": f"gAAAAAtoken{MARK}",
    "X-Subject-Token": f"subject{MARK}",
    "X-Security-Token": f"securitytoken{MARK}",
    "Authorization": f"SDK-HMAC-SHA256 Access=AK{MARK}, SignedHeaders=host, Signature=sig{MARK}",
    "Proxy-Authorization": f"Basic proxy{MARK}",
    "Cookie": f"session=cookie{MARK}",
}
V21_NAME = b'[{"op": "replace", "path": "/name", "value": "x"}]'


def credentials(**extra: str) -> dict[str, str]:
    return {**SECRETS, **extra}


def head_with_credentials(method: str, target: str) -> str:
    return f"{method} {target} HTTP/1.1\r\nHost: gw\r\n" + "".join(f"{k}: {v}\r\n" for k, v in SECRETS.items())


async def raw(url: str, data: bytes, wait_for_close: bool = True) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 15) if wait_for_close else await asyncio.wait_for(reader.read(65536), 15)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def every_path(gateway: GatewayProcess, upstream: FaultyUpstream) -> list[bytes]:
    """Send the credentials through every path; what came back, raw."""
    answers: list[bytes] = []

    def keep(response: Response) -> None:
        answers.append(repr(response.headers).encode() + response.body)

    url = gateway.url
    patch = "/v2/images/0b1f"
    keep(await fetch(url + f"/v2/images?token=query{MARK}", headers=credentials()))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V21_MEDIA_TYPE}), V21_NAME))
    forbidden = b'[{"op": "replace", "path": "/__os_type", "value": "x"}]'
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V21_MEDIA_TYPE}), forbidden))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V20_MEDIA_TYPE}), b'[{"add": "/team", "value": "b"}]'))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V20_MEDIA_TYPE}), b'[{"add": "/new", "value": "b"}]'))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": "application/json"}), V21_NAME))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V21_MEDIA_TYPE}), b"[" + b" " * 70000 + b"]"))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V21_MEDIA_TYPE}), b"not json"))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V21_MEDIA_TYPE, "X-HTTP-Method-Override": "PUT"}), V21_NAME))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V21_MEDIA_TYPE, "Content-Encoding": "gzip"}), V21_NAME))
    keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V21_MEDIA_TYPE, "Transfer-Encoding": "gzip, chunked"}), None))
    # aiohttp's parser quotes the bytes around an error: the credentials are right there.
    answers.append(await raw(url, (head_with_credentials("GET", "/") + "X-Bad: a\x00b\r\n\r\n").encode()))
    answers.append(await raw(url, (head_with_credentials("GET", "/") + "Content-Length: 1\r\nContent-Length: 2\r\n\r\n").encode()))
    answers.append(await raw(url, (f"GET / HTTP/1.1\r\nHost: gw\r\nX-Auth-Token: {SECRETS['X-Auth-Token']}{'a' * 9000}\r\n\r\n").encode()))
    answers.append(await raw(url, head_with_credentials("GET", "/slow-head").encode()))  # never finished: 408
    for fault in ("silent", "reset", "reset_mid:100", "truncate:100", "status:500", "status:503"):
        answers.append(await raw(url, build_request("GET", "/v2/images/0b1f/file", credentials(**{"X-Fault": fault, "Connection": "close"}))))
        answers.append(await raw(url, build_request("PATCH", patch, credentials(**{"X-Fault": fault, "Content-Type": V21_MEDIA_TYPE, "Connection": "close"}), V21_NAME)))
        answers.append(await raw(url, build_request("PATCH", patch, credentials(**{"X-Fault": fault, "Content-Type": V20_MEDIA_TYPE, "Connection": "close"}), b'[{"add": "/n", "value": "b"}]')))
    upstream.refuse()
    try:
        keep(await fetch(url + "/v2/images", headers=credentials()))
        keep(await fetch(url + patch, "PATCH", credentials(**{"Content-Type": V21_MEDIA_TYPE}), V21_NAME))
    finally:
        upstream.accept_if_refusing()
    answers.append(await raw(url, build_request("GET", "/v2/images/0b1f/file", credentials(**{"X-Fault": "trickle:0.01"})), wait_for_close=False))
    return answers


async def test_credentials_never_leave_the_request(upstream: FaultyUpstream, spawn_gateway: SpawnGateway) -> None:
    gateway = spawn_gateway(
        upstream.url,
        server={"header_timeout": 1.0},
        upstream={"read_timeout": 1.0},
        logging={"level": "debug"},
    )
    answers = await every_path(gateway, upstream)
    sources = {
        "answers": b"\n".join(answers).decode("utf-8", "replace"),
        "/metrics": (await fetch(gateway.admin_url + "/metrics")).body.decode(),
        "/deprecations": (await fetch(gateway.admin_url + "/deprecations")).body.decode(),
        "/readyz": (await fetch(gateway.admin_url + "/readyz")).body.decode(),
    }
    assert "ims_gateway_upstream_errors_total" in sources["/metrics"]
    # The upstream did get them: they were forwarded, not dropped.
    assert any(seen.headers.get("x-auth-token") == SECRETS["X-Auth-Token"] for seen in upstream.requests)
    assert gateway.stop() == 0
    sources["log"] = gateway.log()
    assert "X-Auth-Token" not in sources["log"]
    for name, text in sources.items():
        assert MARK not in text, f"a credential appears in {name}: ...{text[max(0, text.find(MARK) - 300) : text.find(MARK) + 100]}..."


async def test_credentials_in_the_upstream_url_are_refused_at_start(spawn_gateway: SpawnGateway) -> None:
    with pytest.raises(RuntimeError) as started:
        spawn_gateway(f"http://user:password{MARK}@127.0.0.1:9")
    assert "upstream.url" in str(started.value)
    assert f"password{MARK}" not in str(started.value)


SECRET_KEY = f"sk{MARK}secret"


async def test_secret_keys_and_signatures_never_leave_the_gateway(
    upstream: FaultyUpstream, spawn_gateway: SpawnGateway, tmp_path: Path
) -> None:
    """A listed key's secret (in signing.credentials_file) and every signature stay inside."""
    keys = tmp_path / "credentials"
    keys.write_text(f"# test\nLISTEDAK{MARK}:{SECRET_KEY}\n")
    gateway = spawn_gateway(upstream.url, logging={"level": "debug"}, signing={"credentials_file": str(keys)})
    host = "gateway.test"  # what build_request sends as Host
    answers: list[bytes] = []
    for method, target, content_type, body in (
        ("GET", "/v2/images", "application/json", b""),
        ("PATCH", "/v2/images/0b1f", V21_MEDIA_TYPE, b'[{"op": "replace", "path": "/__os_type", "value": "x"}]'),
        ("PATCH", "/v2/images/0b1f", V20_MEDIA_TYPE, b'[{"replace": "/name", "value": "x"}]'),
    ):
        for access_key, secret in ((f"LISTEDAK{MARK}", SECRET_KEY), (f"LISTEDAK{MARK}", f"wrong{MARK}"), (f"OTHER{MARK}", f"other{MARK}")):
            request = SdkRequest(method=method, schema="http", host=host, resource_path=target, query_params=[],
                                 header_params={"Content-Type": content_type, "X-Project-Id": f"p{MARK}"}, body=body)  # fmt: skip
            Signer(BasicCredentials(access_key, secret)).sign(request)
            sent = {name: value for name, value in request.header_params.items() if name.lower() != "host"}
            response = await fetch(gateway.url + target, method, sent, body or None)
            answers.append(repr(response.headers).encode() + response.body)
    forwarded_signatures = [seen.headers.get("authorization", "") for seen in upstream.requests]
    assert forwarded_signatures, "nothing was forwarded"
    metrics = (await fetch(gateway.admin_url + "/metrics")).body.decode()
    report = (await fetch(gateway.admin_url + "/deprecations")).body.decode()
    assert 'handling="resigned"' in metrics and 'handling="refused"' in metrics and 'handling="passed_through"' in metrics
    assert gateway.stop() == 0
    log = gateway.log()
    for name, text in {"answers": b"\n".join(answers).decode("utf-8", "replace"), "/metrics": metrics, "/deprecations": report, "log": log}.items():
        assert SECRET_KEY not in text, name
        assert "Signature=" not in text, name
        assert not any(sig.rpartition("Signature=")[2] in text for sig in forwarded_signatures if "Signature=" in sig), name
