"""deploy/prometheus: every rule file passes `promtool check rules`, every unit test file
passes `promtool test rules`, and every alert and recording rule is covered by one."""

from __future__ import annotations

import re
import subprocess
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import DEPLOY, SHIPPED_CONFIG

PROMETHEUS_DIR = DEPLOY / "prometheus"
RULE_FILES = sorted(PROMETHEUS_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
SUNSET_RULES = PROMETHEUS_DIR / "sunset.rules.yml"
SUNSET_RECORD = "ims_gateway:v20_sunset_timestamp_seconds"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule with a ``kind`` key (alert or record) across the rule files."""
    return [rule for path in RULE_FILES for group in load(path)["groups"] for rule in group["rules"] if kind in rule]


def unit_tests() -> list[dict[str, Any]]:
    return [test for path in TEST_FILES for test in load(path)["tests"]]


def test_there_are_rule_and_test_files() -> None:
    assert [path.name for path in RULE_FILES] == ["alerts.rules.yml", "recording.rules.yml", "sunset.rules.yml"]
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


@pytest.mark.parametrize("record", [rule["record"] for rule in rules("record") if rule["record"] != SUNSET_RECORD])
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


def sunset_constant() -> str:
    [rule] = [rule for group in load(SUNSET_RULES)["groups"] for rule in group["rules"]]
    assert rule["record"] == SUNSET_RECORD
    match = re.fullmatch(r"vector\((\S+)\)", rule["expr"].strip())
    assert match, f"{SUNSET_RULES.name} must record vector(<unix time>) or vector(Inf)"
    return match.group(1)


def test_sunset_constant_is_the_configured_v20_sunset() -> None:
    with SHIPPED_CONFIG.open("rb") as handle:
        configured = tomllib.load(handle).get("deprecation", {}).get("v20_sunset_at", "")
    if configured:
        assert sunset_constant() == str(int(datetime.fromisoformat(configured).timestamp()))
    else:
        assert sunset_constant() == "Inf", "no sunset is configured, so the alert must never fire"
