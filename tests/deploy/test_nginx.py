"""The split topology (deploy/nginx/ims-split.conf) with Debian's nginx, on loopback.

IMS is a TLS stand-in that records what reaches it, so every test shows which backend
saw a request; nginx verifies its certificate as it would verify the real IMS's.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp.test_utils import TestServer

from tests.conftest import GatewayFactory, Recorder, raw_request
from tests.deploy.support import DEPLOY, Service, free_port, wait_until

pytestmark = pytest.mark.e2e

SPLIT_CONF = DEPLOY / "nginx" / "ims-split.conf"
IMS_HOST = "localhost"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def render_split(*, gateway: str, ims: str, listen: str, ca_file: str) -> str:
    """The shipped file with its SET ME values pointed at this test's processes."""
    text = SPLIT_CONF.read_text()
    replacements = {
        "server 127.0.0.1:8080;": f"server {gateway};",
        "server ims.ap-southeast-1.myhuaweicloud.com:443;": f"server {ims};",
        "set $ims_host ims.ap-southeast-1.myhuaweicloud.com;": f"set $ims_host {IMS_HOST};",
        "listen 80;": f"listen {listen};",
        "/etc/ssl/certs/ca-certificates.crt": ca_file,
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"{old!r} is not in {SPLIT_CONF.name} exactly once"
        text = text.replace(old, new)
    return text


def main_conf(prefix: Path, include: Path) -> str:
    """A minimal nginx.conf around the include, with every path inside ``prefix``."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {name}_temp_path {prefix / name};" for name in TEMP_PATHS)
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log stderr notice;\n"
        f"events {{ worker_connections 128; }}\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temp}\n    include {include};\n}}\n"
    )


def write_config(prefix: Path, *, gateway: str, ims: str, listen: str, ca_file: str) -> Path:
    include = prefix / "ims-split.conf"
    include.write_text(render_split(gateway=gateway, ims=ims, listen=listen, ca_file=ca_file))
    conf = prefix / "nginx.conf"
    conf.write_text(main_conf(prefix, include))
    return conf


def host_port(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def ims(aiohttp_server: Any, ca: trustme.CA) -> Recorder:
    """The IMS stand-in, over TLS with a certificate for localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(IMS_HOST, "127.0.0.1").configure_cert(context)
    recording = Recorder()
    server: TestServer = await aiohttp_server(recording.app(), ssl=context, auto_decompress=False)
    recording.url = str(server.make_url("")).rstrip("/")
    return recording


@pytest.fixture
async def gateway_stand_in(aiohttp_server: Any) -> Recorder:
    """Where nginx's gateway upstream points in the routing tests: records instead of checking."""
    recording = Recorder()
    server: TestServer = await aiohttp_server(recording.app(), auto_decompress=False)
    recording.url = str(server.make_url("")).rstrip("/")
    return recording


NginxFactory = Callable[[str, str], Awaitable[str]]


@pytest.fixture
async def start_nginx(system_tools: dict[str, str], tmp_path: Path, ca_file: str) -> AsyncIterator[NginxFactory]:
    """Start nginx with the split config in front of (gateway URL, IMS URL); returns nginx's URL."""
    services: list[Service] = []

    async def start(gateway_url: str, ims_url: str) -> str:
        prefix = tmp_path / f"nginx{len(services)}"
        prefix.mkdir()
        listen = f"127.0.0.1:{free_port()}"
        conf = write_config(prefix, gateway=host_port(gateway_url), ims=host_port(ims_url), listen=listen, ca_file=ca_file)
        service = Service([system_tools["nginx"], "-p", prefix, "-c", conf], prefix / "nginx.log")
        services.append(service)

        def accepting() -> bool | None:
            service.check_running()
            with socket.socket() as sock:
                return True if sock.connect_ex(("127.0.0.1", int(listen.rsplit(":", 1)[1]))) == 0 else None

        wait_until(accepting, "nginx to listen", timeout=15)
        return f"http://{listen}"

    yield start
    for service in services:
        service.stop()


def test_shipped_config_passes_nginx_t(system_tools: dict[str, str], tmp_path: Path, ca_file: str) -> None:
    conf = write_config(
        tmp_path, gateway=f"127.0.0.1:{free_port()}", ims=f"127.0.0.1:{free_port()}",
        listen=f"127.0.0.1:{free_port()}", ca_file=ca_file,
    )
    result = subprocess.run(
        [system_tools["nginx"], "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_every_operator_setting_is_templated_by_the_tests() -> None:
    lines = SPLIT_CONF.read_text().splitlines()
    set_me = [line for line in lines if "# SET ME" in line and not line.lstrip().startswith("#")]
    rendered = render_split(gateway="g:1", ims="i:2", listen="127.0.0.1:3", ca_file="/ca.pem")
    assert len(set_me) == 5
    assert not [line for line in set_me if line in rendered.splitlines()]


def request_bytes(method: str, target: str, *, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: ims.test", "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


V21 = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
PATCH_BODY = b'[{"op": "replace", "path": "/name", "value": "x"}]'

# (method, raw target, extra headers): every PATCH spelling IMS could read as an image
# PATCH, a PATCH elsewhere, and method-override attempts, all of which the gateway must see.
TO_GATEWAY = [
    ("PATCH", "/v2/images/abc", V21),
    ("PATCH", "//v2//images/abc", V21),
    ("PATCH", "/v2/./images/abc/", V21),
    ("PATCH", "/v2/x/../images/abc", V21),
    ("PATCH", "/V2/IMAGES/abc", V21),
    ("PATCH", "/v2.1/images/abc", V21),
    ("PATCH", "/v2/%69mages/abc", V21),
    ("PATCH", "/v2/%2569mages/abc", V21),
    ("PATCH", "/v2/images;v=1/abc", V21),
    ("PATCH", "/v2/images/abc?x=1", V21),
    ("PATCH", "/v1/cloudimages/abc", V21),
    ("POST", "/v2/images/abc", {**V21, "X-HTTP-Method-Override": "PATCH"}),
    ("POST", "/v2/images/abc", {**V21, "X-HTTP-Method": "PATCH"}),
    ("GET", "/v2/images/abc", {"X-Method-Override": "PATCH"}),
]

TO_IMS = [
    ("GET", "/v2/images/abc", {}),
    ("GET", "//v2/./images?limit=1", {}),
    ("POST", "/v2/images", {"Content-Type": "application/json"}),
    ("PUT", "/v2/images/abc/file", {"Content-Type": "application/octet-stream"}),
    ("DELETE", "/v2/images/abc", {}),
    ("HEAD", "/v2/images/abc", {}),
    ("GET", "/v2/images/abc/file", {"Range": "bytes=0-9"}),
]


@pytest.mark.parametrize(("method", "target", "headers"), TO_GATEWAY)
async def test_patch_and_method_overrides_reach_the_gateway_with_the_path_as_sent(
    start_nginx: NginxFactory, gateway_stand_in: Recorder, ims: Recorder,
    method: str, target: str, headers: dict[str, str],
) -> None:
    nginx = await start_nginx(gateway_stand_in.url, ims.url)
    response = await raw_request(nginx, request_bytes(method, target, headers=headers, body=PATCH_BODY))
    assert response.status == 200
    assert ims.seen == []
    [seen] = gateway_stand_in.seen
    assert (seen.method, seen.raw_path, seen.body) == (method, target, PATCH_BODY)


@pytest.mark.parametrize(("method", "target", "headers"), TO_IMS)
async def test_everything_else_goes_straight_to_ims(
    start_nginx: NginxFactory, gateway_stand_in: Recorder, ims: Recorder,
    method: str, target: str, headers: dict[str, str],
) -> None:
    body = b"\x00image bytes\xff" * 1000 if method in ("POST", "PUT") else b""
    nginx = await start_nginx(gateway_stand_in.url, ims.url)
    response = await raw_request(nginx, request_bytes(method, target, headers=headers, body=body))
    assert response.status == 200
    assert gateway_stand_in.seen == []
    [seen] = ims.seen
    assert (seen.method, seen.raw_path, seen.body) == (method, target, body)
    assert seen.headers["Host"] == IMS_HOST


async def test_a_lowercase_method_is_refused_by_nginx_and_reaches_no_backend(
    start_nginx: NginxFactory, gateway_stand_in: Recorder, ims: Recorder
) -> None:
    nginx = await start_nginx(gateway_stand_in.url, ims.url)
    response = await raw_request(nginx, request_bytes("patch", "/v2/images/abc", headers=V21, body=PATCH_BODY))
    assert response.status == 400
    assert gateway_stand_in.seen == [] and ims.seen == []


async def test_forbidden_patch_gets_the_gateways_400_and_get_goes_straight_through(
    start_nginx: NginxFactory, make_gateway: GatewayFactory, ims: Recorder, ca_file: str
) -> None:
    gateway = await make_gateway(ims.url, upstream={"ca_file": ca_file})
    nginx = await start_nginx(gateway.url, ims.url)
    forbidden = b'[{"op": "replace", "path": "/__os_type", "value": "Windows"}]'

    refused = await raw_request(nginx, request_bytes("PATCH", "/v2/images/abc", headers=V21, body=forbidden))
    assert refused.status == 400
    error = json.loads(refused.body)["error"]
    assert error["code"] == "IMSGW.0403" and "__os_type" in error["message"]
    assert refused.headers["X-Request-Id"] == error["request_id"]
    assert ims.seen == []

    listed = await raw_request(nginx, request_bytes("GET", "/v2/images/abc"))
    assert listed.status == 200
    [seen] = ims.seen
    assert (seen.method, seen.raw_path) == ("GET", "/v2/images/abc")
    # The gateway stamps a request id on all it forwards and answers: this one never met it.
    assert "X-Request-Id" not in seen.headers and "X-Request-Id" not in listed.headers

    allowed = await raw_request(nginx, request_bytes("PATCH", "/v2/images/abc", headers=V21, body=PATCH_BODY))
    assert allowed.status == 200
    patched = ims.seen[-1]
    assert (patched.method, patched.body) == ("PATCH", PATCH_BODY)
    assert patched.headers["X-Request-Id"] == allowed.headers["X-Request-Id"]
