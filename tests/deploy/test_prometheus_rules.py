"""deploy/prometheus: every rule file passes `promtool check rules`, every unit test file
passes `promtool test rules`, every alert and recording rule is covered by one, and every
metric they read is one the gateway exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.telemetry.families import SUNSET
from tests.deploy.promql import EXPORTED, metric_names, rule_expressions
from tests.deploy.support import DEPLOY

PROMETHEUS_DIR = DEPLOY / "prometheus"
RULE_FILES = sorted(PROMETHEUS_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
RECORDED = {expression.where for expression in rule_expressions(RULE_FILES, "record")}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule with a ``kind`` key (alert or record) across the rule files."""
    return [rule for path in RULE_FILES for group in load(path)["groups"] for rule in group["rules"] if kind in rule]


def unit_tests() -> list[dict[str, Any]]:
    return [test for path in TEST_FILES for test in load(path)["tests"]]


def test_there_are_rule_and_test_files() -> None:
    assert [path.name for path in RULE_FILES] == ["alerts.rules.yml", "recording.rules.yml"]
    assert TEST_FILES


@pytest.mark.e2e
@pytest.mark.parametrize("path", RULE_FILES, ids=[path.name for path in RULE_FILES])
def test_promtool_check_rules(system_tools: dict[str, str], path: Path) -> None:
    result = subprocess.run([system_tools["promtool"], "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("path", TEST_FILES, ids=[path.name for path in TEST_FILES])
def test_promtool_test_rules(system_tools: dict[str, str], path: Path) -> None:
    result = subprocess.run(
        [system_tools["promtool"], "test", "rules", path.name], capture_output=True, text=True, timeout=120, cwd=path.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout


@pytest.mark.parametrize("alert", [rule["alert"] for rule in rules("alert")])
def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not(alert: str) -> None:
    cases = [case for test in unit_tests() for case in test.get("alert_rule_test", []) if case["alertname"] == alert]
    assert any(case.get("exp_alerts") for case in cases), f"no unit test sees {alert} fire"
    assert any(not case.get("exp_alerts") for case in cases), f"no unit test sees {alert} stay quiet"


@pytest.mark.parametrize("record", [rule["record"] for rule in rules("record")])
def test_every_recording_rule_has_a_unit_test_of_its_values(record: str) -> None:
    checked = [
        case for test in unit_tests() for case in test.get("promql_expr_test", [])
        if re.search(rf"(?<![\w:]){re.escape(record)}(?![\w:])", case["expr"]) and case.get("exp_samples")
    ]
    assert checked, f"no promql_expr_test checks {record}"


@pytest.mark.parametrize("rule", rules("alert"), ids=lambda rule: rule["alert"])
def test_alerts_carry_a_severity_and_a_summary(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in ("critical", "warning")
    assert rule["annotations"]["summary"]


def test_down_alerts_select_the_job_the_deployment_scrapes_as() -> None:
    expressions = {rule["alert"]: rule["expr"] for rule in rules("alert")}
    assert 'up{job="ims-gateway"}' in expressions["IMSGatewayDown"]
    assert 'up{job="ims-gateway"}' in expressions["IMSGatewayAbsent"]


@pytest.mark.parametrize("rule", [*rules("record"), *rules("alert")], ids=lambda rule: rule.get("record") or rule["alert"])
def test_rules_read_only_metrics_the_gateway_exports_or_the_rules_record(rule: dict[str, Any]) -> None:
    read = metric_names(rule["expr"])
    assert read, "a rule about the gateway reads one of its metrics"
    assert read <= EXPORTED | RECORDED | {"up"}, f"not exported: {sorted(read - EXPORTED - RECORDED - {'up'})}"


def test_unit_tests_feed_only_series_the_gateway_exports_or_the_rules_record() -> None:
    fed = {name for test in unit_tests() for series in test["input_series"] for name in metric_names(series["series"])}
    assert fed and fed <= EXPORTED | RECORDED | {"up"}, sorted(fed - EXPORTED - RECORDED - {"up"})


def test_the_sunset_alert_reads_the_gateways_sunset_not_a_constant() -> None:
    [rule] = [rule for rule in rules("alert") if rule["alert"] == "IMSGatewayV20TrafficAfterSunset"]
    assert f'{SUNSET.full_name}{{shape="v2.0"}}' in rule["expr"]
    assert not re.search(r"vector\(\s*[\d.]", rule["expr"]), "a copied date goes stale when the configuration changes"
