"""One migration report for a fleet: gateway processes sharing a real redis-server.

Each gateway here is `python -m gateway serve`, as an operator runs it; Redis is Debian's,
started by the test on a free loopback port, then paused, stopped and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from testing.paths import REPO
from testing.report_stores import RedisServer, store_environment
from tests.conftest import Recorder

pytestmark = pytest.mark.e2e

LISTENING = re.compile(r"listening on http://(\S+) \(admin on http://(\S+)\)")
CALLS = "ims_gateway_deprecated_calls_total"
# Well under report.store_timeout (2 s): an answer that waited for the store would show.
ANSWER_BOUND = 1.0


class GatewayProcess:
    """`python -m gateway serve` in front of ``upstream``; its log in a file."""

    def __init__(self, directory: Path, upstream: str, env: dict[str, str]) -> None:
        self.log_path = directory / f"gateway-{time.monotonic_ns()}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("IMS_GATEWAY_")}
        self.env = {**base, "IMS_GATEWAY_SERVER_DRAIN_DELAY": "0", "IMS_GATEWAY_LOGGING_ACCESS_LOG": "false", **env}
        self.argv = [sys.executable, "-m", "gateway", "serve", "--upstream", upstream, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        self.process: asyncio.subprocess.Process | None = None
        self.url = self.admin_url = ""

    async def start(self) -> GatewayProcess:
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, cwd=REPO, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        async with asyncio.timeout(30):
            while not (found := LISTENING.search(self.log())):
                if self.process.returncode is not None:
                    raise AssertionError(f"the gateway exited:\n{self.log()}")
                await asyncio.sleep(0.05)
        self.url, self.admin_url = f"http://{found[1]}", f"http://{found[2]}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 60)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


Start = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def start_gateway(tmp_path: Path, recorder: Recorder) -> AsyncIterator[Start]:
    started: list[GatewayProcess] = []

    async def start(**env: str) -> GatewayProcess:
        gateway = GatewayProcess(tmp_path, recorder.url, env)
        started.append(gateway)
        return await gateway.start()

    yield start
    for gateway in started:
        await gateway.kill()


def redis_env(redis: RedisServer, tmp_path: Path, replica: str, **more: str) -> dict[str, str]:
    return {**store_environment("redis", tmp_path, redis.url), "IMS_GATEWAY_REPORT_REPLICA": replica, **more}


async def patch(http: aiohttp.ClientSession, gateway: GatewayProcess, n: int, project: str = "") -> tuple[int, float]:
    """One image PATCH, v2.0 or v2.1 by ``n``: (status, seconds)."""
    v20 = n % 3 != 0
    body = '[{"replace": "/name", "value": "x"}]' if v20 else '[{"op": "replace", "path": "/name", "value": "x"}]'
    headers = {
        "Content-Type": V20_MEDIA_TYPE if v20 else V21_MEDIA_TYPE,
        "User-Agent": ("python-glanceclient/4.1.0", "terraform-provider-huaweicloud/1.60")[n % 2],
        "X-Project-Id": project or f"project-{n % 4}",
    }
    started = time.perf_counter()
    async with http.patch(f"{gateway.url}/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27", data=body, headers=headers) as response:
        await response.read()
        return response.status, time.perf_counter() - started


async def calls_counted(http: aiohttp.ClientSession, *gateways: GatewayProcess) -> float:
    """ims_gateway_deprecated_calls_total added up over the gateways (each counts only its own)."""
    total = 0.0
    for gateway in gateways:
        async with http.get(gateway.admin_url + "/metrics", headers={"Accept-Encoding": "identity"}) as response:
            text = await response.text()
        total += sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == CALLS)
    return total


async def metric(http: aiohttp.ClientSession, gateway: GatewayProcess, name: str, **labels: str) -> float:
    async with http.get(gateway.admin_url + "/metrics", headers={"Accept-Encoding": "identity"}) as response:
        text = await response.text()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def report(http: aiohttp.ClientSession, gateway: GatewayProcess, accept: str = "application/json") -> dict[str, Any]:
    async with http.get(gateway.admin_url + "/deprecations", headers={"Accept": accept}) as response:
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


def reported(document: dict[str, Any]) -> int:
    return sum(entry["count"] for entry in document["clients"])


def by_key(document: dict[str, Any]) -> dict[tuple[str, str | None], int]:
    return {(e["client"], e["project_id"]): e["count"] for e in document["clients"]}


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}") from None


async def test_two_gateways_sharing_redis_give_one_report_that_counts_what_metrics_count_and_outlives_them(
    start_gateway: Start, redis_server: RedisServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    first = await start_gateway(**redis_env(redis_server, tmp_path, "gw-a"))
    second = await start_gateway(**redis_env(redis_server, tmp_path, "gw-b"))
    answers = [await patch(http, (first, second)[n % 2], n) for n in range(40)]
    assert [status for status, _ in answers] == [200] * 40
    assert await calls_counted(http, first, second) == 40

    async def agreed() -> bool:
        views = [await report(http, gateway) for gateway in (first, second)]
        return all(reported(view) == 40 and view["store"]["pending_calls"] == 0 for view in views)

    await until(agreed, "both gateways to report the 40 calls from Redis")
    one, other = await report(http, first), await report(http, second)
    assert by_key(one) == by_key(other) and len(by_key(one)) == 4
    assert {e["last_seen_by"] for e in one["clients"]} == {"gw-a", "gw-b"}
    assert {r["replica"] for r in one["replicas"]} == {"gw-a", "gw-b"}
    assert one["store"]["location"] == redis_server.url and one["store"]["answered"] is True
    assert one["scope"].startswith("every gateway sharing this store")

    assert (await first.stop(), await second.stop()) == (0, 0)
    restarted = await start_gateway(**redis_env(redis_server, tmp_path, "gw-c"))
    after = await report(http, restarted)
    assert by_key(after) == by_key(one)
    assert await patch(http, restarted, 0, project="project-0") == (200, pytest.approx(0, abs=ANSWER_BOUND))
    await until(lambda: _total_is(http, restarted, 41), "the restarted gateway's call in the report")


async def _total_is(http: aiohttp.ClientSession, gateway: GatewayProcess, total: int) -> bool:
    return reported(await report(http, gateway)) == total


async def test_redis_away_changes_no_answer_and_the_report_catches_up_when_it_returns(
    start_gateway: Start, redis_server: RedisServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(**redis_env(redis_server, tmp_path, "gw-a", IMS_GATEWAY_REPORT_STORE_TIMEOUT="2"))
    answers = [await patch(http, gateway, n) for n in range(10)]
    await until(lambda: _total_is(http, gateway, 10), "the first calls in Redis")

    redis_server.pause()  # a hung store: connections accepted, never answered
    answers += [await patch(http, gateway, n) for n in range(10, 30)]
    started = time.perf_counter()
    hung = await report(http, gateway)
    assert time.perf_counter() - started < 2 + ANSWER_BOUND * 3
    assert (hung["store"]["answered"], hung["store"]["problem"]) == (False, "no answer within 2 s")
    assert reported(hung) == 30, "this process's own view meanwhile"

    redis_server.stop()  # and then down: connections refused
    answers += [await patch(http, gateway, n) for n in range(30, 50)]
    await until(lambda: _failed(http, gateway), "a failed flush")
    down = await report(http, gateway)
    assert down["store"]["answered"] is False and down["scope"].endswith("the store did not answer")

    assert [status for status, _ in answers] == [200] * 50
    slowest = max(seconds for _, seconds in answers)
    assert slowest < ANSWER_BOUND, f"an answer took {slowest:.2f} s: the request path waited for the store"

    redis_server.start()  # the same port, its data saved when it stopped
    await until(lambda: _caught_up(http, gateway, 50), "the report to catch up", timeout=40)
    back = await report(http, gateway)
    assert (back["store"]["answered"], back["store"]["problem"], back["store"]["pending_calls"]) == (True, None, 0)
    assert reported(back) == await calls_counted(http, gateway) == 50
    assert await metric(http, gateway, "ims_gateway_report_dropped_total") == 0
    # The log thread writes its lines in batches: wait for the one saying the store is back.
    async def logged_back() -> bool:
        return "answers again" in gateway.log()

    await until(logged_back, "the log line saying the store answers again", timeout=10)
    assert "migration report store" in gateway.log()
    assert "Traceback" not in gateway.log()


async def _caught_up(http: aiohttp.ClientSession, gateway: GatewayProcess, total: int) -> bool:
    document = await report(http, gateway)
    return reported(document) == total and document["store"]["pending_calls"] == 0


async def _failed(http: aiohttp.ClientSession, gateway: GatewayProcess) -> bool:
    return await metric(http, gateway, "ims_gateway_report_flushes_total", result="failure") >= 2


async def test_the_bound_and_the_retention_hold_for_the_fleet(
    start_gateway: Start, redis_server: RedisServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    env = {"IMS_GATEWAY_REPORT_MAX_CLIENTS": "3", "IMS_GATEWAY_REPORT_RETENTION": "8s"}
    first = await start_gateway(**redis_env(redis_server, tmp_path, "gw-a", **env))
    second = await start_gateway(**redis_env(redis_server, tmp_path, "gw-b", **env))
    for n in range(5):
        assert (await patch(http, (first, second)[n % 2], 1, project=f"p{n}"))[0] == 200

    async def bounded() -> bool:
        views = [await report(http, gateway) for gateway in (first, second)]
        return all(view["store"]["pending_calls"] == 0 and view["evicted"] == 2 for view in views)

    await until(bounded, "both gateways' calls flushed and the oldest evicted")
    for gateway in (first, second):
        document = await report(http, gateway)
        assert [e["project_id"] for e in document["clients"]] == ["p4", "p3", "p2"]
        assert (document["max_clients"], document["evicted"]) == (3, 2)

    async def forgotten() -> bool:
        return (await report(http, first))["clients"] == []

    await until(forgotten, "the retention to drop every entry")
    assert (await patch(http, second, 1, project="p5"))[0] == 200

    async def expired() -> bool:
        seen = await report(http, first)
        return seen["expired"] == 3 and [e["project_id"] for e in seen["clients"]] == ["p5"]

    await until(expired, "the next flush to count the expired entries")
