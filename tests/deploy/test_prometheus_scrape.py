"""A real Prometheus scraping a running gateway: every PromQL expression of the dashboard
and of the recording rules parses and returns data, after traffic of every kind.

One gateway (a subprocess in front of its embedded emulator) and one Prometheus (1 s
scrape and rule evaluation, the shipped rule files loaded) serve the whole module. The
gateway's v2.0 sunset is past but not enforced, so v2.0 calls still pass and the sunset
alert has something to see.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.telemetry.families import BUILD_INFO, SUNSET
from tests.deploy.promql import (
    Expression,
    concrete,
    dashboard_expressions,
    rule_expressions,
)
from tests.deploy.support import (
    DEPLOY,
    Service,
    clean_env,
    free_port,
    gateway_argv,
    http_get,
    wait_until,
)

pytestmark = pytest.mark.e2e

DASHBOARD = DEPLOY / "grafana" / "ims-gateway.json"
RULE_FILES = sorted((DEPLOY / "prometheus").glob("*.rules.yml"))
JOB = "ims-gateway"
# The dashboard's job and namespace variables as its defaults set them (namespace: All).
SELECTED = {"job": JOB, "namespace": ".*"}
V20_SUNSET = "2024-01-01T00:00:00Z"
V20_SUNSET_UNIX = 1704067200  # date -u -d 2024-01-01T00:00:00Z +%s
DASHBOARD_EXPRESSIONS = list(dashboard_expressions(json.loads(DASHBOARD.read_text())))
RECORDING_EXPRESSIONS = rule_expressions(RULE_FILES, "record")
ALERT_EXPRESSIONS = rule_expressions(RULE_FILES, "alert")

V20 = "application/openstack-images-v2.0-json-patch"
V21 = "application/openstack-images-v2.1-json-patch"


@dataclass(frozen=True)
class Stack:
    gateway: str
    admin: str
    prometheus: str


def call(base: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def patch(base: str, image: str, content_type: str, body: bytes | str, client: str) -> int:
    data = body.encode() if isinstance(body, str) else body
    return call(base, "PATCH", f"/v2/images/{image}", data, {"Content-Type": content_type, "User-Agent": client})[0]


def drive_traffic(base: str, round_: int) -> None:
    """Every kind of request, each checked to have done what it is here for."""
    status, created = call(
        base, "POST", "/v2/images",
        json.dumps({"name": f"deploy-{round_}", "container_format": "bare", "disk_format": "raw"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201, created
    image = json.loads(created)["id"]
    data = bytes(range(256)) * 1024
    assert call(base, "PUT", f"/v2/images/{image}/file", data, {"Content-Type": "application/octet-stream"})[0] == 204
    assert call(base, "GET", f"/v2/images/{image}/file") == (200, data)
    assert call(base, "GET", "/v2/images")[0] == 200
    assert call(base, "GET", f"/v2/images/{image}")[0] == 200

    glance, terraform = "python-glanceclient/4.1.0 keystoneauth1/5.0", "terraform-provider-huaweicloud/1.60.0"
    assert patch(base, image, V21, '[{"op": "replace", "path": "/name", "value": "v21"}]', glance) == 200
    assert patch(base, image, V20, '[{"replace": "/name", "value": "v20"}]', terraform) == 200
    assert patch(base, image, V20, '[{"add": "/owner_team", "value": "ops"}]', terraform) == 200
    assert patch(base, image, V20, '[{"add": "/owner_team", "value": "again"}]', terraform) == 409
    assert patch(base, image, V21, '[{"op": "replace", "path": "/__os_type", "value": "Windows"}]', glance) == 400
    assert patch(base, image, V20, '[{"replace": "/min_disk", "value": 40}]', terraform) == 400
    assert patch(base, image, V21, '[{"op": "replace", "path": "/name"', glance) == 400
    assert patch(base, image, "application/json", '[{"op": "replace", "path": "/name", "value": "x"}]', "curl/8.0") == 415
    assert patch(base, image, V21, '[{"op": "remove", "path": "/owner_team"}]', glance) == 200


def query(prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer = http_get(url)
    assert answer is not None, f"Prometheus at {prometheus} is not answering"
    return json.loads(answer[1])


def latest(prometheus: str, expr: str) -> float | None:
    """The newest sample timestamp of ``expr``'s series, or None while there is none."""
    result = query(prometheus, f"max(timestamp({expr}))").get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


def wait_past(prometheus: str, expr: str, moment: float, what: str) -> None:
    wait_until(lambda: True if (seen := latest(prometheus, expr)) is not None and seen > moment else None, what)


def prometheus_config(directory: Path, admin: str) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [admin]}]}],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def stack(system_tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("prometheus")
    listen, admin, web = (f"127.0.0.1:{free_port()}" for _ in range(3))
    env = clean_env(
        IMS_GATEWAY_SERVER_DRAIN_DELAY="0",
        IMS_GATEWAY_DEPRECATION_V20_SUNSET_AT=V20_SUNSET,
        IMS_GATEWAY_DEPRECATION_V20_REFUSE_AFTER_SUNSET="false",
    )
    gateway = Service(gateway_argv(listen, admin), directory / "gateway.log", env=env)
    prometheus = Service(
        [
            system_tools["prometheus"],
            f"--config.file={prometheus_config(directory, admin)}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={web}",
            "--log.level=warn",
        ],
        directory / "prometheus.log",
    )
    running = Stack(f"http://{listen}", f"http://{admin}", f"http://{web}")
    try:
        wait_until(lambda: gateway.check_running() or http_get(f"{running.admin}/healthz"), "the gateway")
        wait_until(lambda: prometheus.check_running() or http_get(f"{running.prometheus}/-/ready"), "Prometheus")
        # Round 1 creates every labelled series; round 2, scraped after it, makes the rates move.
        drive_traffic(running.gateway, 1)
        wait_past(running.prometheus, f'up{{job="{JOB}"}} == 1', time.time() + 1, "a scrape after round 1")
        drive_traffic(running.gateway, 2)
        after = time.time() + 2
        wait_past(running.prometheus, f'up{{job="{JOB}"}}', after, "scrapes after round 2")
        for record in {expression.where for expression in RECORDING_EXPRESSIONS}:
            wait_past(running.prometheus, record, after, f"the recording rule {record}")
        yield running
    except BaseException:
        print(gateway.output(), prometheus.output(), sep="\n")
        raise
    finally:
        prometheus.stop()
        gateway.stop()


def test_every_file_has_expressions() -> None:
    assert len(DASHBOARD_EXPRESSIONS) >= 15 and len(RECORDING_EXPRESSIONS) >= 10 and len(ALERT_EXPRESSIONS) >= 6


def test_the_gateway_is_scraped_up(stack: Stack) -> None:
    [series] = query(stack.prometheus, f'up{{job="{JOB}"}}')["data"]["result"]
    assert series["value"][1] == "1"


# The gateway exports no series it never counted. The traffic here makes no upstream
# error (the embedded emulator does not fail), so panels that show only those have no
# data yet, as they would on a healthy gateway; every other expression must have data.
ONLY_AFTER_AN_UPSTREAM_ERROR = "ims_gateway_upstream_errors_total"


def assert_returns_data(stack: Stack, expression: Expression) -> None:
    answer = query(stack.prometheus, concrete(expression.expr, **SELECTED))
    assert answer["status"] == "success", answer
    mentioned = expression.expr.count("ims_gateway_")
    if mentioned and mentioned == expression.expr.count(ONLY_AFTER_AN_UPSTREAM_ERROR):
        assert answer["data"]["result"] == [], f"{expression.where}: data without any upstream error"
        return
    assert answer["data"]["result"], f"{expression.where}: no data for {concrete(expression.expr)}"


@pytest.mark.parametrize("expression", DASHBOARD_EXPRESSIONS, ids=lambda expression: expression.where)
def test_dashboard_expression_returns_data(stack: Stack, expression: Expression) -> None:
    assert_returns_data(stack, expression)


@pytest.mark.parametrize("selected", [{"job": "other-job"}, {"namespace": "other-namespace"}], ids=["job", "namespace"])
@pytest.mark.parametrize("expression", DASHBOARD_EXPRESSIONS, ids=lambda expression: expression.where)
def test_dashboard_expression_shows_nothing_for_another_job_or_namespace(
    stack: Stack, expression: Expression, selected: dict[str, str]
) -> None:
    answer = query(stack.prometheus, concrete(expression.expr, **{**SELECTED, **selected}))
    assert answer["status"] == "success", answer
    assert answer["data"]["result"] == [], f"{expression.where} shows {JOB}'s data under {selected}"


def test_the_job_variable_offers_the_scraped_job(stack: Stack) -> None:
    """What Grafana asks Prometheus for label_values(ims_gateway_build_info, job)."""
    url = f"{stack.prometheus}/api/v1/label/job/values?" + urllib.parse.urlencode({"match[]": BUILD_INFO.full_name})
    answer = http_get(url)
    assert answer is not None and json.loads(answer[1])["data"] == [JOB]


@pytest.mark.parametrize("expression", RECORDING_EXPRESSIONS, ids=lambda expression: expression.where)
def test_recording_rule_expression_returns_data(stack: Stack, expression: Expression) -> None:
    assert_returns_data(stack, expression)


@pytest.mark.parametrize("expression", ALERT_EXPRESSIONS, ids=lambda expression: expression.where)
def test_alert_expression_is_accepted_by_prometheus(stack: Stack, expression: Expression) -> None:
    # Alerts are quiet on a healthy gateway: an empty answer is right, an error is not.
    assert query(stack.prometheus, expression.expr)["status"] == "success"


def test_the_sunset_alert_fires_on_the_sunset_the_gateway_runs_with(stack: Stack) -> None:
    [sunset] = query(stack.prometheus, f'{SUNSET.full_name}{{job="{JOB}"}}')["data"]["result"]
    assert (sunset["metric"]["shape"], float(sunset["value"][1])) == ("v2.0", V20_SUNSET_UNIX)
    [alert] = [expression for expression in ALERT_EXPRESSIONS if expression.where == "IMSGatewayV20TrafficAfterSunset"]
    [firing] = query(stack.prometheus, alert.expr)["data"]["result"]
    assert firing["metric"] == {"job": JOB}
    assert float(firing["value"][1]) > 0


@pytest.mark.parametrize("content", ["a malformed ((", 'sum(rate(x[$__rate_interval]))'])
def test_a_broken_expression_fails_the_check(stack: Stack, content: str) -> None:
    answer = query(stack.prometheus, content)
    assert answer["status"] == "error"


def test_the_traffic_is_visible_in_the_shipped_ratios(stack: Stack) -> None:
    [share] = query(stack.prometheus, "job:ims_gateway_deprecated_calls_v20:ratio_rate1h")["data"]["result"]
    # Each round: 4 v2.0 calls (rewrite, add, conflicting add, forbidden) and 4 v2.1.
    assert float(share["value"][1]) == pytest.approx(0.5)
    reasons = query(stack.prometheus, "job_reason:ims_gateway_deprecated_rejections:rate5m > 0")["data"]["result"]
    assert {series["metric"]["reason"] for series in reasons} >= {"forbidden_attribute", "unsupported_media_type"}
