"""The workloads: request/s ones driven by wrk, bulk transfers driven by curl.

Each workload first sends one request and checks its answer, so that a broken path can
never be reported as a fast one.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import json
import shutil
import subprocess
from pathlib import Path

from benchmarks.servers import DRIVER_CPUS, HERE, IMAGE_ID, pinned
from gateway.edge import signing

IMAGE_PATH = f"/v2/images/{IMAGE_ID}"
V20 = "application/openstack-images-v2.0-json-patch"
V21 = "application/openstack-images-v2.1-json-patch"


@dataclasses.dataclass(frozen=True)
class Call:
    """One kind of small request, sent over and over by wrk."""

    name: str
    method: str
    content_type: str
    body: str
    # What the gateway answers; every other path forwards and gets the upstream's 200.
    gateway_status: int = 200
    # Extra request headers, sent as they are (a signed call's Host, X-Sdk-Date, Authorization...).
    headers: tuple[tuple[str, str], ...] = ()
    # Signed with SIGNING_KEY by ``signed_now`` just before it is measured (X-Sdk-Date must be fresh).
    signed: bool = False

    def expected_status(self, path_name: str) -> int:
        return self.gateway_status if path_name.startswith("ims-gateway") else 200


CALLS = (
    Call("PATCH v2.0", "PATCH", V20, '[{"replace": "/name", "value": "bench"}, {"replace": "/__description", "value": "x"}]'),
    Call("PATCH v2.1", "PATCH", V21, '[{"op": "replace", "path": "/name", "value": "bench"}, {"op": "add", "path": "/custom_key", "value": "x"}]'),
    Call("PATCH forbidden", "PATCH", V21, '[{"op": "replace", "path": "/min_ram", "value": 1024}]', gateway_status=400),
    Call("GET image", "GET", "", ""),
)

# AK/SK signed image PATCHes, as Huawei Cloud's SDKs send them: measured on the floor, on the
# gateway as shipped (an unlisted key: passed through, v2.0 unrewritten) and on a gateway that
# holds the key (verified, rewritten to v2.1, re-signed for the upstream's Host).
SIGNING_KEY = ("BENCHACCESSKEY0000001", "bench-secret-key-not-a-real-one-000000000")
SIGNED_HOST = "ims.bench.example"
SIGNED_CALLS = (
    dataclasses.replace(CALLS[0], name="PATCH v2.0, AK/SK signed", signed=True),
    dataclasses.replace(CALLS[1], name="PATCH v2.1, AK/SK signed", signed=True),
)


def signed_now(call: Call) -> Call:
    """``call`` with its signature made now (the gateway refuses a date older than 15 minutes)."""
    if not call.signed:
        return call
    now = datetime.datetime.now(datetime.UTC)
    made = signing.sign(
        call.method, SIGNED_HOST, IMAGE_PATH, [], [("Content-Type", call.content_type), ("X-Project-Id", "bench-project")],
        call.body.encode(), *SIGNING_KEY, now=lambda: now,
    )
    return dataclasses.replace(call, headers=tuple(made.headers))


def credentials_file(directory: Path) -> Path:
    """The key file of the gateway that re-signs: the one key the signed calls use."""
    path = directory / "signing-credentials"
    path.write_text(f"{SIGNING_KEY[0]}:{SIGNING_KEY[1]}\n")
    path.chmod(0o600)
    return path


@dataclasses.dataclass(frozen=True)
class Rate:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def check_call(url: str, call: Call, expected: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {"X-Auth-Token": "bench-token"}
        if call.content_type:
            headers["Content-Type"] = call.content_type
        headers.update(call.headers)
        connection.request(call.method, IMAGE_PATH, body=call.body.encode() or None, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != expected:
        raise RuntimeError(f"{call.name} via {url}: status {response.status}, expected {expected}: {body[:300]!r}")
    document = json.loads(body)
    if expected == 200 and document.get("id") != IMAGE_ID:
        raise RuntimeError(f"{call.name} via {url}: not the image: {body[:300]!r}")


def wrk(url: str, call: Call, *, connections: int, seconds: int, threads: int = 1) -> Rate:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    command = [
        binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(HERE / "patch.lua"), url + IMAGE_PATH, "--", call.method, call.content_type, call.body,
        "\n".join(f"{name}: {value}" for name, value in call.headers),
    ]
    finished = subprocess.run(pinned(command, DRIVER_CPUS), capture_output=True, text=True, check=True)
    line = next(line for line in finished.stdout.splitlines() if line.startswith("BENCH "))
    summary = json.loads(line.removeprefix("BENCH "))
    return Rate(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        errors=summary["socket_errors"],
    )


@dataclasses.dataclass(frozen=True)
class Transfer:
    size: int
    seconds: float

    @property
    def mb_per_second(self) -> float:
        return self.size / self.seconds / 1e6


def _curl(arguments: list[str]) -> tuple[int, int, float]:
    binary = shutil.which("curl")
    if binary is None:
        raise RuntimeError("curl is not installed (Debian: apt-get install curl)")
    command = [binary, "-sS", "-o", "/dev/null", "-H", "Expect:", "-H", "X-Auth-Token: bench-token", *arguments]
    finished = subprocess.run(pinned(command, DRIVER_CPUS), capture_output=True, text=True, check=True)
    status, size, seconds = finished.stdout.split()
    return int(status), int(size), float(seconds)


def download(url: str, path: str, size: int) -> Transfer:
    status, received, seconds = _curl(["-w", "%{http_code} %{size_download} %{time_total}", url + path])
    if status != 200 or received != size:
        raise RuntimeError(f"download via {url}: status {status}, {received} of {size} bytes")
    return Transfer(size, seconds)


def upload(url: str, path: str, source: Path) -> Transfer:
    size = source.stat().st_size
    status, sent, seconds = _curl(["-T", str(source), "-w", "%{http_code} %{size_upload} %{time_total}", url + path])
    if status not in (201, 204) or sent != size:
        raise RuntimeError(f"upload via {url}: status {status}, {sent} of {size} bytes")
    return Transfer(size, seconds)
