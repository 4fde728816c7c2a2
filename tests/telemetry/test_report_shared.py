"""/deprecations from a shared store (SQLite here; Redis in tests/service/test_report_fleet.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.patch.parser import V21_MEDIA_TYPE as V21
from tests.conftest import Gateway, GatewayFactory, Recorder

RENAME = '[{"op": "replace", "path": "/name", "value": "x"}]'
FORBIDDEN = '[{"op": "replace", "path": "/__os_type", "value": "x"}]'


async def patch(http: aiohttp.ClientSession, gateway: Gateway, body: str = RENAME, project: str = "p1") -> int:
    headers = {"Content-Type": V21, "User-Agent": "python-glanceclient/4.1.0", "X-Project-Id": project}
    async with http.patch(gateway.url + "/v2/images/1bea47ed", data=body, headers=headers) as response:
        await response.read()
        return response.status


async def deprecations(http: aiohttp.ClientSession, gateway: Gateway) -> dict[str, Any]:
    async with http.get(gateway.admin_url + "/deprecations", headers={"Accept": "application/json"}) as response:
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


async def metric(http: aiohttp.ClientSession, gateway: Gateway, name: str, **labels: str) -> float:
    async with http.get(gateway.admin_url + "/metrics", headers={"Accept-Encoding": "identity"}) as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


@pytest.fixture
def report_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "report.sqlite"


async def test_the_report_is_served_from_the_file_and_flushed_once(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession, report_file: Path
) -> None:
    gateway = await make_gateway(recorder.url, report={"store": f"sqlite://{report_file}", "replica": "first"})
    assert [await patch(http, gateway) for _ in range(3)] == [200, 200, 200]
    assert await patch(http, gateway, FORBIDDEN) == 400
    document = await deprecations(http, gateway)
    [entry] = document["clients"]
    assert (entry["count"], entry["outcomes"], entry["last_seen_by"]) == (4, {"forwarded": 3, "rejected": 1}, "first")
    assert document["store"]["type"] == "sqlite" and document["store"]["answered"] is True

    async def flushed() -> bool:
        return (await deprecations(http, gateway))["store"]["flushed_at"] is not None

    await eventually(flushed)
    document = await deprecations(http, gateway)
    assert (document["clients"][0]["count"], document["store"]["pending_calls"]) == (4, 0)
    assert document["replicas"][0]["replica"] == "first"
    assert await metric(http, gateway, "ims_gateway_report_flushes_total", result="success") >= 1
    assert await metric(http, gateway, "ims_gateway_report_flushes_total", result="failure") == 0
    assert report_file.is_file()


async def test_a_restarted_gateway_keeps_the_report(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession, report_file: Path
) -> None:
    first = await make_gateway(recorder.url, report={"store": f"sqlite://{report_file}", "replica": "first"})
    assert [await patch(http, first, project=p) for p in ("p1", "p1", "p2")] == [200] * 3
    await first.server.close()  # stopping flushes what waits
    second = await make_gateway(recorder.url, report={"store": f"sqlite://{report_file}", "replica": "second"})
    assert await patch(http, second, project="p2") == 200
    document = await deprecations(http, second)
    assert [(e["project_id"], e["count"], e["last_seen_by"]) for e in document["clients"]] == [
        ("p2", 2, "second"),
        ("p1", 2, "first"),
    ]


async def test_a_store_that_cannot_be_written_changes_no_answer_and_says_so(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    gateway = await make_gateway(recorder.url, report={"store": f"sqlite://{tmp_path}/a-file/report.sqlite"})
    assert [await patch(http, gateway), await patch(http, gateway, FORBIDDEN)] == [200, 400]

    async def failed() -> bool:
        return await metric(http, gateway, "ims_gateway_report_flushes_total", result="failure") >= 1

    await eventually(failed)
    document = await deprecations(http, gateway)
    assert document["store"]["answered"] is False
    assert document["store"]["problem"].startswith("FileExistsError")
    assert document["scope"] == "this gateway process since it started: the store did not answer"
    assert [entry["count"] for entry in document["clients"]] == [2]
    assert await metric(http, gateway, "ims_gateway_report_pending_calls") == 2
    async with http.get(gateway.admin_url + "/deprecations", headers={"Accept": "text/html"}) as response:
        page = await response.text()
    assert "did not answer: FileExistsError" in page
