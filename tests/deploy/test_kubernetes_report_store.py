"""deploy/kubernetes' report store: the Redis component and the Secret the store's URL comes
from, rendered with the real kubectl (deploy/examples/report-in-redis), and the state volume
of the base for `--workers N`."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway import config
from gateway.service.cli import flag_overrides, parser
from gateway.telemetry.stores import spec
from tests.deploy.support import DEPLOY, REPO
from tests.deploy.test_kubernetes import Doc, by_kind, config_map, kubectl, one, selects

EXAMPLE = DEPLOY / "examples" / "report-in-redis"
COMPONENTS = DEPLOY / "kubernetes" / "components"
SECRET = "ims-gateway-report-store"


def render(directory: Path) -> list[Doc]:
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return render(EXAMPLE)


def deployment(docs: list[Doc], name: str) -> Doc:
    return one(docs, "Deployment", name)


def containers(docs: list[Doc], name: str) -> list[Doc]:
    containers: list[Doc] = deployment(docs, name)["spec"]["template"]["spec"]["containers"]
    return containers


def container(docs: list[Doc]) -> Doc:
    [gateway] = containers(docs, "ims-gateway")
    return gateway


def pod_labels(docs: list[Doc]) -> dict[str, str]:
    labels: dict[str, str] = deployment(docs, "ims-gateway")["spec"]["template"]["metadata"]["labels"]
    return labels


def mounted_files(docs: list[Doc]) -> dict[str, str]:
    pod = deployment(docs, "ims-gateway")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    files = {}
    for mount in container(docs)["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        if source:
            for key, content in one(docs, "ConfigMap", source["name"])["data"].items():
                files[f"{mount['mountPath'].rstrip('/')}/{key}"] = content
    return files


def secret_ref(container_doc: Doc, variable: str) -> dict[str, str]:
    [found] = [item for item in container_doc.get("env", []) if item["name"] == variable]
    reference: dict[str, str] = found["valueFrom"]["secretKeyRef"]
    return reference


def secret(docs: list[Doc]) -> Doc:
    [found] = [doc for doc in by_kind(docs, "Secret") if doc["metadata"]["name"].startswith(SECRET + "-")]
    return found


def secret_value(docs: list[Doc], key: str) -> str:
    data = secret(docs)
    return data.get("stringData", {}).get(key) or base64.b64decode(data["data"][key]).decode()


@pytest.mark.parametrize("path", sorted(COMPONENTS.rglob("*.yaml")), ids=lambda path: str(path.relative_to(COMPONENTS)))
def test_every_component_file_parses(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs and all({"apiVersion", "kind"} <= doc.keys() for doc in docs)


def test_the_redis_component_lists_every_manifest_in_its_directory() -> None:
    kustomization = yaml.safe_load((COMPONENTS / "redis" / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert set(kustomization["resources"]) == {p.name for p in (COMPONENTS / "redis").glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.e2e
def test_the_gateway_takes_the_store_url_from_the_secret(rendered: list[Doc]) -> None:
    reference = secret_ref(container(rendered), "IMS_GATEWAY_REPORT_STORE")
    assert reference == {"name": secret(rendered)["metadata"]["name"], "key": "url"}
    assert secret(rendered)["type"] == "Opaque"
    assert "IMS_GATEWAY_REPORT_STORE" not in config_map(rendered, "ims-gateway-env")["data"], "never in a ConfigMap"


@pytest.mark.e2e
def test_the_store_url_names_the_redis_beside_the_gateway_with_its_password(rendered: list[Doc]) -> None:
    url = urlsplit(secret_value(rendered, "url"))
    service = one(rendered, "Service", "ims-gateway-redis")
    assert (url.scheme, url.hostname) == ("redis", service["metadata"]["name"])
    [port] = service["spec"]["ports"]
    assert url.port == port["port"]
    [redis] = containers(rendered, "ims-gateway-redis")
    assert {p["name"]: p["containerPort"] for p in redis["ports"]}[port["targetPort"]] == 6379
    assert selects(service["spec"]["selector"], deployment(rendered, "ims-gateway-redis")["spec"]["template"]["metadata"]["labels"])
    assert secret_ref(redis, "REDIS_PASSWORD") == {"name": secret(rendered)["metadata"]["name"], "key": "password"}
    assert url.password == secret_value(rendered, "password")
    assert redis["args"][redis["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"


@pytest.mark.e2e
def test_the_pod_starts_with_the_redis_store_and_never_shows_its_password(rendered: list[Doc], tmp_path: Path) -> None:
    gateway = container(rendered)
    args = parser().parse_args(gateway["args"])
    config_file = tmp_path / "gateway.toml"
    config_file.write_text(mounted_files(rendered)[args.config])
    env = {item["name"]: item["value"] for item in gateway["env"] if "value" in item}
    for source in gateway.get("envFrom", []):
        env.update(one(rendered, "ConfigMap", source["configMapRef"]["name"])["data"])
    env["IMS_GATEWAY_REPORT_STORE"] = secret_value(rendered, "url")
    settings = config.load(config_file, environ=env, overrides=flag_overrides(args))
    store = spec.effective(spec.parse_store(settings.report.store), settings.server.workers, env)
    assert store.kind == spec.REDIS
    assert store.shown == "redis://:***@ims-gateway-redis:6379/0"


@pytest.mark.e2e
def test_only_the_gateway_pods_reach_redis(rendered: list[Doc]) -> None:
    policy = one(rendered, "NetworkPolicy", "ims-gateway-redis")
    redis_labels = deployment(rendered, "ims-gateway-redis")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"], redis_labels)
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert selects(source["podSelector"]["matchLabels"], pod_labels(rendered))
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]


@pytest.mark.e2e
def test_redis_is_no_gateway_replica_to_the_services_budget_and_autoscaler(rendered: list[Doc]) -> None:
    redis_labels = deployment(rendered, "ims-gateway-redis")["spec"]["template"]["metadata"]["labels"]
    for service in ("ims-gateway", "ims-gateway-admin"):
        assert not selects(one(rendered, "Service", service)["spec"]["selector"], redis_labels)
    assert not selects(one(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], redis_labels)
    assert one(rendered, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "ims-gateway"


@pytest.mark.e2e
def test_redis_runs_non_root_on_a_read_only_root_filesystem_with_its_data_on_a_volume(rendered: list[Doc]) -> None:
    pod = deployment(rendered, "ims-gateway-redis")["spec"]["template"]["spec"]
    [redis] = pod["containers"]
    security = redis["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert [mount["mountPath"] for mount in redis["volumeMounts"] if "emptyDir" in volumes[mount["name"]]] == ["/data"]
    assert redis["resources"]["limits"]["memory"]
    maxmemory = redis["args"][redis["args"].index("--maxmemory") + 1]
    assert re.fullmatch(r"\d+mb", maxmemory) and int(maxmemory[:-2]) < 128, "below the container's memory limit"


@pytest.mark.e2e
def test_without_the_components_the_base_renders_as_before(rendered: list[Doc]) -> None:
    base = render(DEPLOY / "kubernetes")
    assert not by_kind(base, "Secret") and not by_kind(base, "NetworkPolicy")
    assert [doc["metadata"]["name"] for doc in by_kind(base, "Deployment")] == ["ims-gateway"]
    assert "IMS_GATEWAY_REPORT_STORE" not in str(container(base)["env"])
    added = sorted(doc["kind"] for doc in rendered if doc["metadata"]["name"].startswith(("ims-gateway-redis", SECRET)))
    assert added == ["Deployment", "NetworkPolicy", "Secret", "Service"]


@pytest.mark.e2e
def test_workers_without_a_store_keep_the_report_on_a_volume_of_the_pod() -> None:
    base = render(DEPLOY / "kubernetes")
    image_env = dict(re.findall(r"(XDG_STATE_HOME)=(\S+)", (DEPLOY / "Dockerfile").read_text()))
    shared = spec.effective(spec.StoreSpec(spec.AUTO), 2, image_env)
    assert shared.path is not None and shared.path.parent == Path("/var/lib/ims-gateway")
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    volumes: dict[str, Any] = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container(base)["volumeMounts"]}
    assert "emptyDir" in mounts[str(shared.path.parent)], "the root filesystem is read-only"
