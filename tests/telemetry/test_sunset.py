"""ims_gateway_sunset_timestamp_seconds: the running configuration's sunsets, as /metrics shows
them, following every reload (deploy/prometheus's sunset alert reads it)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway import config
from gateway.service.state import RUNTIME
from gateway.telemetry.counts import WorkerShare
from gateway.telemetry.metrics import Metrics
from tests.conftest import Gateway, GatewayFactory, Recorder, make_settings

NAME = "ims_gateway_sunset_timestamp_seconds"
V20_SUNSET = "2027-06-30T00:00:00Z"
V21_SUNSET = "2028-12-31T23:59:59Z"


def unix(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def scraped(http: aiohttp.ClientSession, gateway: Gateway) -> tuple[dict[str, float], str]:
    """shape -> value of every sunset series /metrics serves, and the family's HELP text."""
    async with http.get(gateway.admin_url + "/metrics", headers={"Accept-Encoding": "identity"}) as response:
        assert response.status == 200
        text = await response.text()
    [family] = [family for family in text_string_to_metric_families(text) if family.name == NAME] or [None]
    if family is None:
        return {}, ""
    assert family.type == "gauge"
    return {sample.labels["shape"]: sample.value for sample in family.samples}, family.documentation


def test_the_unix_times_here_are_the_ones_an_operator_would_compute() -> None:
    # date -u -d 2027-06-30T00:00:00Z +%s
    assert unix(V20_SUNSET) == 1814313600


async def test_no_series_without_a_configured_sunset(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(recorder.url)
    assert await scraped(http, gateway) == ({}, "")


async def test_each_configured_sunset_is_exported_by_shape(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    gateway = await make_gateway(recorder.url, deprecation={"v20_sunset_at": V20_SUNSET})
    series, documentation = await scraped(http, gateway)
    assert series == {"v2.0": 1814313600}
    assert "deprecation.v20_sunset_at" in documentation and "v21_sunset_at" in documentation
    both = await make_gateway(
        recorder.url, deprecation={"v20_sunset_at": V20_SUNSET, "v21_deprecated_at": "2025-01-01T00:00:00Z", "v21_sunset_at": V21_SUNSET}
    )
    assert (await scraped(http, both))[0] == {"v2.0": unix(V20_SUNSET), "v2.1": unix(V21_SUNSET)}


async def reload(http: aiohttp.ClientSession, gateway: Gateway, path: Path, text: str) -> int:
    path.write_text(text)
    async with http.post(gateway.admin_url + "/reload") as response:
        return response.status


async def test_the_gauge_follows_every_applied_reload_and_no_refused_one(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gateway = await make_gateway(recorder.url)
    path = tmp_path / "gateway.toml"
    flags = {"server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"}, "upstream": {"url": recorder.url}}
    gateway.app[RUNTIME].load = lambda: config.load(path, environ={}, overrides=flags)

    assert await reload(http, gateway, path, f'[deprecation]\nv20_sunset_at = "{V20_SUNSET}"\n') == 200
    assert (await scraped(http, gateway))[0] == {"v2.0": unix(V20_SUNSET)}

    # Brought forward a month: the alert must use the new date at once, with no PATCH in between.
    assert await reload(http, gateway, path, '[deprecation]\nv20_sunset_at = "2027-05-31T00:00:00Z"\n') == 200
    assert (await scraped(http, gateway))[0] == {"v2.0": unix("2027-05-31T00:00:00Z")}

    # A refused file (sunset before deprecation) changes nothing, the gauge included.
    refused = '[deprecation]\nv20_deprecated_at = "2030-01-01T00:00:00Z"\nv20_sunset_at = "2029-01-01T00:00:00Z"\n'
    assert await reload(http, gateway, path, refused) == 400
    assert (await scraped(http, gateway))[0] == {"v2.0": unix("2027-05-31T00:00:00Z")}

    # The sunset taken out of the file: no series, so the alert cannot fire on a stale date.
    assert await reload(http, gateway, path, "[deprecation]\n") == 200
    assert await scraped(http, gateway) == ({}, "")


@pytest.mark.parametrize(("first", "second", "shown"), [(V20_SUNSET, "2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z"), (V20_SUNSET, "", V20_SUNSET)])
def test_with_several_workers_the_earliest_sunset_shows(tmp_path: Path, first: str, second: str, shown: str) -> None:
    """A reload reaches the workers one by one: meanwhile the earliest date any of them runs under."""
    workers = [
        Metrics(CollectorRegistry(), make_settings(deprecation={"v20_sunset_at": sunset}), share=WorkerShare(tmp_path, pid=pid))
        for pid, sunset in ((1, first), (2, second))
    ]
    workers[1].publish()
    assert workers[0].registry.get_sample_value(NAME, {"shape": "v2.0"}) == unix(shown)
