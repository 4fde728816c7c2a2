"""deploy/grafana/ims-gateway.json: importable as is, and showing what the issue asks for.
(test_prometheus_scrape evaluates every one of its expressions against real data.)"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.deploy.promql import (
    EXPORTED,
    GRAFANA_VARIABLES,
    Expression,
    concrete,
    dashboard_expressions,
    metric_names,
    rule_expressions,
    selectors,
)
from tests.deploy.support import DEPLOY

DASHBOARD = json.loads((DEPLOY / "grafana" / "ims-gateway.json").read_text())
PANELS = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
TARGETS = list(dashboard_expressions(DASHBOARD))
EXPRESSIONS = [expression.expr for expression in TARGETS]
RECORDED = {expression.where for expression in rule_expressions(sorted((DEPLOY / "prometheus").glob("*.rules.yml")), "record")}
VARIABLES = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What every series a panel reads is narrowed to: the job and namespace picked at the top.
JOB, NAMESPACE = 'job=~"$job"', 'namespace=~"$namespace"'


def test_identity_and_datasource_variable() -> None:
    assert DASHBOARD["uid"] == "ims-gateway" and DASHBOARD["title"] == "ims-gateway"
    assert list(VARIABLES) == ["datasource", "job", "namespace"], "each variable may use only those before it"
    variable = VARIABLES["datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")


def label_values(variable: dict[str, Any]) -> tuple[str, str]:
    """(series selector, label) of a Prometheus ``label_values(selector, label)`` variable query."""
    query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    assert variable.get("definition", query) == query
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    assert match, query
    return match.group(1), match.group(2)


def test_job_variable_lists_the_jobs_scraping_a_gateway_and_defaults_to_the_shipped_one() -> None:
    job = VARIABLES["job"]
    assert (job["type"], job["datasource"]) == ("query", DATASOURCE)
    selector, label = label_values(job)
    # A family every gateway exports from its start (build_info), not one that needs traffic.
    assert (selector, label) == ("ims_gateway_build_info", "job") and selector in EXPORTED
    assert job["current"]["value"] == "ims-gateway" and not job["includeAll"]
    assert job["refresh"] == 2, "re-read when the time range changes: a job renamed last week still shows"


def test_namespace_variable_lists_the_namespaces_of_that_job_and_all_matches_no_namespace_too() -> None:
    namespace = VARIABLES["namespace"]
    assert (namespace["type"], namespace["datasource"]) == ("query", DATASOURCE)
    assert label_values(namespace) == (f"ims_gateway_build_info{{{JOB}}}", "namespace")
    # All must match a static scrape config's series, which have no namespace label: ".*" does, Grafana's
    # default (every listed value) would not, and with none listed would match nothing.
    assert namespace["includeAll"] and namespace["allValue"] == ".*" and namespace["multi"]
    assert namespace["current"]["value"] == ["$__all"]


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.where)
def test_every_series_a_panel_reads_is_narrowed_to_the_selected_job_and_namespace(target: Expression) -> None:
    read = selectors(target.expr)
    assert read, f"{target.where} reads no series of the gateway"
    for name, matchers in read:
        # Recorded series keep namespace (recording.rules.yml sums by namespace and job): it applies to them too.
        assert JOB in matchers and NAMESPACE in matchers, f"{target.where}: {name}{{{matchers}}}"


def test_the_narrowing_check_sees_a_series_left_unfiltered() -> None:
    assert selectors(f'a:ims_gateway_x:rate5m{{{JOB}}} / ims_gateway_y_total / sum(up{{{JOB}, {NAMESPACE}}})') == [
        ("a:ims_gateway_x:rate5m", JOB), ("ims_gateway_y_total", ""), ("up", f"{JOB}, {NAMESPACE}"),
    ]  # fmt: skip


def test_every_series_the_dashboard_reads_is_exported_or_recorded() -> None:
    read = {name for expr in EXPRESSIONS for name in metric_names(expr)}
    assert read <= EXPORTED | RECORDED | {"up"}, sorted(read - EXPORTED - RECORDED - {"up"})


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("panel", PANELS, ids=lambda panel: panel["title"])
def test_panel_queries_the_datasource_variable_with_unique_ref_ids(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == DATASOURCE
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


def test_only_grafanas_range_variables_and_the_dashboards_own_are_used() -> None:
    for expr in EXPRESSIONS:
        concrete(expr, job="ims-gateway", namespace=".*")
    with pytest.raises(ValueError, match=r"\$job"):
        concrete('up{job="$job"}')
    with pytest.raises(ValueError, match=r"\$instance"):
        concrete('up{instance="$instance"}', job="ims-gateway", namespace=".*")
    assert set(GRAFANA_VARIABLES) == {"__rate_interval", "__interval", "__range"}


def test_every_recorded_series_the_dashboard_reads_is_recorded() -> None:
    read = {name for expr in EXPRESSIONS for name in re.findall(r"\b\w+:\w+:\w+\b", expr)}
    assert read and read <= RECORDED


# What the dashboard must show -> a pattern one of its expressions matches.
REQUIRED = {
    "deprecated traffic by shape": r"sum by \(shape\) \(rate\(ims_gateway_deprecated_calls_total",
    "share still on v2.0": r"job:ims_gateway_deprecated_calls_v20:ratio_rate1h",
    "top clients on v2.0": r"topk\(\d+, sum by \(client\) .*ims_gateway_deprecated_client_calls_total\{shape=\"v2\.0\"[,}]",
    "the configured v2.0 sunset": r"ims_gateway_sunset_timestamp_seconds\{shape=\"v2\.0\"[,}]",
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
