"""deploy/grafana/ims-gateway.json: importable as is, and showing what the issue asks for.
(test_prometheus_scrape evaluates every one of its expressions against real data.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy.promql import (
    GRAFANA_VARIABLES,
    concrete,
    dashboard_expressions,
    rule_expressions,
)
from tests.deploy.support import DEPLOY

DASHBOARD = json.loads((DEPLOY / "grafana" / "ims-gateway.json").read_text())
PANELS = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
EXPRESSIONS = [expression.expr for expression in dashboard_expressions(DASHBOARD)]
RECORDED = {expression.where for expression in rule_expressions(sorted((DEPLOY / "prometheus").glob("*.rules.yml")), "record")}


def test_identity_and_datasource_variable() -> None:
    assert DASHBOARD["uid"] == "ims-gateway" and DASHBOARD["title"] == "ims-gateway"
    [variable] = DASHBOARD["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("panel", PANELS, ids=lambda panel: panel["title"])
def test_panel_queries_the_datasource_variable_with_unique_ref_ids(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    targets = panel["targets"]
    assert targets and all(target["datasource"] == panel["datasource"] for target in targets)
    assert len({target["refId"] for target in targets}) == len(targets)
    assert panel["description"]


def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
    grid = panel["gridPos"]
    return {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}


def test_panels_fit_the_24_column_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert not cells(panel) & taken, f"{panel['title']} overlaps another panel"
        taken |= cells(panel)


def test_only_grafanas_range_variables_are_used() -> None:
    for expr in EXPRESSIONS:
        concrete(expr)
    with pytest.raises(ValueError, match=r"\$job"):
        concrete('up{job="$job"}')
    assert set(GRAFANA_VARIABLES) == {"__rate_interval", "__interval", "__range"}


def test_every_recorded_series_the_dashboard_reads_is_recorded() -> None:
    read = {name for expr in EXPRESSIONS for name in re.findall(r"\b\w+:\w+:\w+\b", expr)}
    assert read and read <= RECORDED


# What the dashboard must show -> a pattern one of its expressions matches.
REQUIRED = {
    "deprecated traffic by shape": r"sum by \(shape\) \(rate\(ims_gateway_deprecated_calls_total",
    "share still on v2.0": r"job:ims_gateway_deprecated_calls_v20:ratio_rate1h",
    "top clients on v2.0": r"topk\(\d+, sum by \(client\) .*ims_gateway_deprecated_client_calls_total\{shape=\"v2\.0\"\}",
    "ops by attribute class": r"by \(attribute_class, op\) .*ims_gateway_deprecated_operations_total",
    "rejections by reason": r"by \(reason\) .*ims_gateway_deprecated_rejections_total",
    "upstream latency p50": r"histogram_quantile\(0\.50, .*ims_gateway_upstream_duration_seconds_bucket",
    "upstream latency p90": r"histogram_quantile\(0\.90, .*ims_gateway_upstream_duration_seconds_bucket",
    "upstream latency p99": r"histogram_quantile\(0\.99, .*ims_gateway_upstream_duration_seconds_bucket",
    "errors": r"ims_gateway_upstream_errors_total",
    "5xx": r"status_class=~\"4xx\|5xx\|aborted\"",
    "in-flight": r"ims_gateway_requests_in_flight",
    "bytes in": r"ims_gateway_request_body_bytes_total",
    "bytes out": r"ims_gateway_response_body_bytes_total",
}


@pytest.mark.parametrize(("topic", "pattern"), REQUIRED.items(), ids=list(REQUIRED))
def test_dashboard_shows(topic: str, pattern: str) -> None:
    assert any(re.search(pattern, expr) for expr in EXPRESSIONS), f"no panel shows {topic}"
