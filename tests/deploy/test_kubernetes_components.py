"""deploy/kubernetes' optional components and deploy/examples/production, rendered with the
real kubectl: the ServiceMonitor (Prometheus Operator only) and the signing Secret, each
added by an overlay the way an operator writes one, and the production example with its
registry, tag and namespace."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from gateway import __version__
from gateway.config.generation import read_credentials
from tests.deploy.support import DEPLOY
from tests.deploy.test_kubernetes import (
    PROMETHEUS_JOB,
    Doc,
    by_kind,
    container,
    container_port,
    mounted_files,
    one,
    pod_labels,
    render,
    selects,
    settings_of,
)

BASE = DEPLOY / "kubernetes"
COMPONENTS = BASE / "components"
PRODUCTION = DEPLOY / "examples" / "production"
CREDENTIALS = "# the keys signed clients use\nAKEXAMPLE1:SKexample1\nAKEXAMPLE2:SKexample2\n"
SIGNING_SECRET = "ims-gateway-signing"


def overlay(directory: Path, **kustomization: object) -> list[Doc]:
    """Render an overlay written in ``directory`` on the base (kustomize wants relative paths)."""
    document = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, directory)], **kustomization,
    }  # fmt: skip
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(document))
    return render(directory)


def component(directory: Path, name: str) -> str:
    return os.path.relpath(COMPONENTS / name, directory)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    directory = tmp_path_factory.mktemp("monitored")
    return overlay(directory, components=[component(directory, "servicemonitor")])


@pytest.fixture(scope="module")
def signing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signing")


@pytest.fixture(scope="module")
def signed(signing_dir: Path) -> list[Doc]:
    """The base with components/signing and the Secret made as its comment says."""
    (signing_dir / "signing-credentials.txt").write_text(CREDENTIALS)
    return overlay(
        signing_dir,
        components=[component(signing_dir, "signing")],
        secretGenerator=[{"name": SIGNING_SECRET, "files": ["credentials=signing-credentials.txt"]}],
    )


@pytest.fixture(scope="module")
def production() -> list[Doc]:
    return render(PRODUCTION)


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


# -- signing Secret ------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_pod_verifies_and_resigns_with_the_keys_of_the_secret(signed: list[Doc], tmp_path: Path) -> None:
    settings = settings_of(signed, tmp_path)
    assert settings.signing.credentials_file.endswith("/etc/ims-gateway-signing/credentials")
    assert Path(settings.signing.credentials_file).read_text() == CREDENTIALS
    keys = read_credentials(settings.signing.credentials_file)
    assert dict(keys) == {"AKEXAMPLE1": "SKexample1", "AKEXAMPLE2": "SKexample2"}


@pytest.mark.e2e
def test_the_credentials_come_from_the_secret_never_a_config_map(signed: list[Doc]) -> None:
    [variable] = [item for item in container(signed)["env"] if item["name"] == "IMS_GATEWAY_SIGNING_CREDENTIALS_FILE"]
    secret_file = mounted_files(signed)[variable["value"]]
    assert secret_file == CREDENTIALS
    assert all("AKEXAMPLE1" not in str(doc) for doc in by_kind(signed, "ConfigMap"))
    [secret] = by_kind(signed, "Secret")
    assert secret["metadata"]["name"].startswith(SIGNING_SECRET + "-") and secret["type"] == "Opaque"


@pytest.mark.e2e
def test_the_credentials_are_readable_by_the_gateway_alone_and_follow_a_rotation(signed: list[Doc]) -> None:
    pod = one(signed, "Deployment", "ims-gateway")["spec"]["template"]["spec"]
    [volume] = [volume for volume in pod["volumes"] if "secret" in volume]
    [mount] = [mount for mount in container(signed)["volumeMounts"] if mount["name"] == volume["name"]]
    assert mount["readOnly"] is True
    # kubelet updates a Secret volume in place, except under a subPath; the gateway re-reads
    # the file on reload.
    assert "subPath" not in mount
    mode = volume["secret"]["defaultMode"]
    security = pod["securityContext"]
    # The files are root-owned with group fsGroup: the non-root gateway reads them through
    # its group, and nobody else can.
    assert security["fsGroup"] == security["runAsGroup"] and security["runAsUser"] != 0
    assert mode & stat.S_IRGRP and not mode & (stat.S_IRWXO | stat.S_IWGRP | stat.S_IXGRP)


@pytest.mark.e2e
def test_without_the_signing_component_signed_requests_pass_unverified(tmp_path: Path) -> None:
    base = render(BASE)
    assert settings_of(base, tmp_path).signing.credentials_file == ""
    assert not by_kind(base, "Secret")


# -- deploy/examples/production --------------------------------------------------------------


@pytest.mark.e2e
def test_production_runs_the_image_from_the_registry_at_this_version(production: list[Doc]) -> None:
    kustomization = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text())
    [image] = kustomization["images"]
    assert container(production)["image"] == f"{image['newName']}:{__version__}"
    assert image["newName"].startswith("registry.example.com/")


@pytest.mark.e2e
def test_production_puts_everything_in_its_namespace_with_the_service_monitor(production: list[Doc]) -> None:
    [namespace] = by_kind(production, "Namespace")
    name = namespace["metadata"]["name"]
    for doc in production:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == name, (doc["kind"], doc["metadata"]["name"])
    assert one(production, "ServiceMonitor")["metadata"]["namespace"] == name


@pytest.mark.e2e
def test_production_forwards_to_its_regions_ims(production: list[Doc], tmp_path: Path) -> None:
    settings = settings_of(production, tmp_path)
    base_url = settings_of(render(BASE), tmp_path / "base").upstream.url
    assert settings.upstream.url.startswith("https://ims.") and settings.upstream.url != base_url
    assert by_kind(production, "ConfigMap"), "the env ConfigMap is merged, not replaced"
    assert settings.server.listen.host == "0.0.0.0"


@pytest.mark.e2e
@pytest.mark.parametrize("kustomization", ["kubernetes", "examples/production", "examples/report-in-redis"])
def test_deploy_copied_on_its_own_renders_the_same(kustomization: str, tmp_path: Path) -> None:
    """An operator copies deploy/ into their own repository: nothing in it may need the rest of this one."""
    copy = tmp_path / "their-repository" / "deploy"
    shutil.copytree(DEPLOY, copy)
    assert render(copy / kustomization) == render(DEPLOY / kustomization)
