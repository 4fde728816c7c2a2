"""metrics.enabled: off, nothing is counted or reported and traffic is unchanged (the benchmark's baseline)."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.patch.parser import V21_MEDIA_TYPE
from gateway.service.state import METRICS
from tests.conftest import GatewayFactory, Recorder

RENAME = '[{"op": "replace", "path": "/name", "value": "renamed"}]'
FORBIDDEN = '[{"op": "replace", "path": "/min_ram", "value": 1}]'


@pytest.mark.parametrize(("enabled", "counted"), [(True, 3.0), (False, None)])
async def test_metrics_count_only_when_enabled(
    recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession, enabled: bool, counted: float | None
) -> None:
    gateway = await make_gateway(recorder.url, metrics={"enabled": enabled})
    answers = []
    for body in (RENAME, FORBIDDEN, RENAME):
        async with http.patch(
            gateway.url + "/v2/images/1bea47ed", data=body, headers={"Content-Type": V21_MEDIA_TYPE}
        ) as response:
            answers.append(response.status)
    assert answers == [200, 400, 200]
    assert len(recorder.seen) == 2
    metrics = gateway.app[METRICS]
    requests = [
        sample.value
        for family in metrics.registry.collect()
        if family.name == "ims_gateway_requests"
        for sample in family.samples
        if sample.name == "ims_gateway_requests_total"
    ]
    assert (sum(requests) if requests else None) == counted
    assert len(metrics.report) == (1 if enabled else 0)
    in_flight = metrics.registry.get_sample_value("ims_gateway_requests_in_flight", {"route": "image_patch"})
    assert in_flight == (0 if enabled else None)
