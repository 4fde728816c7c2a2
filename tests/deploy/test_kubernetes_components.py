"""deploy/kubernetes' optional components and deploy/examples/production, rendered with the
real kubectl: the ServiceMonitor (Prometheus Operator only) and the signing Secret, each
added by an overlay the way an operator writes one, and the production example with its
registry, tag and namespace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import DEPLOY
from tests.deploy.test_kubernetes import (
    PROMETHEUS_JOB,
    Doc,
    by_kind,
    container_port,
    one,
    pod_labels,
    render,
    selects,
    settings_of,
)

BASE = DEPLOY / "kubernetes"
COMPONENTS = BASE / "components"


def overlay(directory: Path, **kustomization: object) -> list[Doc]:
    """Render an overlay written in ``directory`` on the base (kustomize wants relative paths)."""
    document = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **kustomization}
    document["resources"] = [os.path.relpath(BASE, directory), *document.get("resources", [])]  # type: ignore[misc]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(document))
    return render(directory)


def component(directory: Path, name: str) -> str:
    return os.path.relpath(COMPONENTS / name, directory)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    directory = tmp_path_factory.mktemp("monitored")
    return overlay(directory, components=[component(directory, "servicemonitor")])


@pytest.mark.parametrize("name", sorted(path.name for path in COMPONENTS.iterdir()))
def test_every_component_is_a_component_listing_its_own_manifests(name: str) -> None:
    kustomization = yaml.safe_load((COMPONENTS / name / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    manifests = {path.name for path in (COMPONENTS / name).glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization.get("resources", [])) == manifests


# -- ServiceMonitor ------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_base_has_no_service_monitor_and_the_component_adds_only_it(monitored: list[Doc]) -> None:
    base = render(BASE)
    assert not by_kind(base, "ServiceMonitor")
    added = [doc for doc in monitored if doc not in base]
    assert [(doc["apiVersion"], doc["kind"]) for doc in added] == [("monitoring.coreos.com/v1", "ServiceMonitor")]


@pytest.mark.e2e
def test_service_monitor_scrapes_metrics_on_the_admin_port(monitored: list[Doc], tmp_path: Path) -> None:
    monitor = one(monitored, "ServiceMonitor")
    [service] = [
        service for service in by_kind(monitored, "Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    ]  # fmt: skip
    assert service["metadata"]["name"] == "ims-gateway-admin"
    assert selects(service["spec"]["selector"], pod_labels(monitored))
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    target = {port["name"]: port for port in service["spec"]["ports"]}[endpoint["port"]]["targetPort"]
    assert container_port(monitored, target) == settings_of(monitored, tmp_path).server.admin_listen.port
    # The job the rules and the dashboard select.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == PROMETHEUS_JOB
