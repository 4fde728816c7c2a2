"""A bounded soak: 200 concurrent keep-alive clients, mixed PATCH v2.0/v2.1, GET and image
downloads, through a gateway process in front of an emulator process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from tests.reliability.conftest import (
    REPO,
    ConnectionClosed,
    RawConnection,
    SpawnGateway,
    build_request,
    fetch,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENTS = 200
# 60 s is the example; 30 s keeps the whole reliability suite within its CI share.
DURATION = 30.0
WARM_UP = 5.0
RSS_DRIFT = 0.10
IMAGES = 20
IMAGE_BYTES = 256 * 1024


# What the emulator command prints once it listens, with the port it got for port 0.
_SERVING = re.compile(r"(?:Running|listening) on (http://127\.0\.0\.1:\d+)")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[str]:
    log_path = tmp_path / "emulator.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "emulator", "--listen", "127.0.0.1:0"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while (serving := _SERVING.search(log_path.read_text(errors="replace"))) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        yield serving[1]
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def create_images(emulator: str) -> list[str]:
    ids = []
    for n in range(IMAGES):
        body = json.dumps({"name": f"soak-{n}", "container_format": "bare", "disk_format": "raw"}).encode()
        created = await fetch(emulator + "/v2/images", "POST", {"Content-Type": "application/json"}, body)
        assert created.status == 201, created
        image_id = created.json()["id"]
        uploaded = await fetch(
            f"{emulator}/v2/images/{image_id}/file", "PUT", {"Content-Type": "application/octet-stream"}, b"i" * IMAGE_BYTES
        )
        assert uploaded.status == 204, uploaded
        ids.append(image_id)
    return ids


def mix(rng: random.Random, image: str, client: int, serial: int) -> tuple[str, bytes, int]:
    """(kind, request, the status it must get)."""
    token = {"X-Auth-Token": "tok-soak"}
    roll = rng.random()
    path = f"/v2/images/{image}"
    if roll < 0.35:
        body = json.dumps([{"op": "replace", "path": "/name", "value": f"v21-{client}-{serial}"}]).encode()
        return "patch v2.1", build_request("PATCH", path, {**token, "Content-Type": V21_MEDIA_TYPE}, body), 200
    if roll < 0.50:
        body = json.dumps([{"replace": "/name", "value": f"v20-{client}-{serial}"}]).encode()
        return "patch v2.0", build_request("PATCH", path, {**token, "Content-Type": V20_MEDIA_TYPE}, body), 200
    if roll < 0.60:
        # An add the gateway checks against the image first (a GET, then the PATCH).
        key = f"/k{client}x{serial}"
        body = json.dumps([{"add": key, "value": str(serial)}, {"remove": key}]).encode()
        return "patch v2.0 add", build_request("PATCH", path, {**token, "Content-Type": V20_MEDIA_TYPE}, body), 200
    if roll < 0.65:
        body = json.dumps([{"op": "replace", "path": "/__os_type", "value": "Windows"}]).encode()
        return "patch refused", build_request("PATCH", path, {**token, "Content-Type": V21_MEDIA_TYPE}, body), 400
    if roll < 0.90:
        return "get", build_request("GET", path, token), 200
    return "download", build_request("GET", path + "/file", token), 200


async def test_200_keep_alive_clients_for_a_bounded_soak(emulator: str, spawn_gateway: SpawnGateway) -> None:
    images = await create_images(emulator)
    gateway = spawn_gateway(emulator, logging={"access_log": False})
    latencies: list[float] = []
    kinds: Counter[str] = Counter()
    unexpected: list[tuple[str, object]] = []
    rss: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + DURATION

    async def client(number: int) -> None:
        rng = random.Random(number)
        connection = RawConnection(gateway.url)
        serial = 0
        try:
            while loop.time() < deadline:
                serial += 1
                kind, data, expected = mix(rng, rng.choice(images), number, serial)
                sent = time.perf_counter()
                try:
                    response = await connection.request(data)
                except ConnectionClosed as exc:
                    unexpected.append((kind, exc))
                    continue
                latencies.append(time.perf_counter() - sent)
                kinds[kind] += 1
                if response.status != expected or (kind == "download" and len(response.body) != IMAGE_BYTES):
                    unexpected.append((kind, (response.status, response.body[:200])))
        finally:
            await connection.close()

    async def sample_rss() -> None:
        await asyncio.sleep(WARM_UP)
        rss["warm"] = gateway.rss_bytes()

    await asyncio.gather(sample_rss(), *(client(n) for n in range(CLIENTS)))
    elapsed = loop.time() - started
    rss["end"] = gateway.rss_bytes()
    latencies.sort()
    total = len(latencies)
    p50, p99 = latencies[total // 2], latencies[int(total * 0.99)]
    print(
        f"\nload: {CLIENTS} keep-alive clients for {elapsed:.0f} s: {total} requests ({total / elapsed:.0f}/s), "
        f"{dict(kinds)}; p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; {len(unexpected)} unexpected; "
        f"RSS warm {rss['warm'] / 2**20:.1f} MiB, end {rss['end'] / 2**20:.1f} MiB "
        f"({(rss['end'] - rss['warm']) / rss['warm']:+.1%})"
    )
    assert unexpected == []
    assert all(kinds[kind] > 0 for kind in ("patch v2.1", "patch v2.0", "patch v2.0 add", "patch refused", "get", "download"))
    assert rss["end"] <= rss["warm"] * (1 + RSS_DRIFT)
    assert gateway.process.poll() is None
    assert "Traceback" not in gateway.log()
