"""deploy/README.md, the kit's own page: the commands it gives work with the kit as it is.
The build and push lines name the Dockerfile and the image the production example pulls,
the scrape configuration passes promtool, and every path it names exists."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway import __version__
from tests.deploy.support import DEPLOY, REPO

README = DEPLOY / "README.md"
TEXT = README.read_text()
PRODUCTION = DEPLOY / "examples" / "production" / "kustomization.yaml"
TOOLS = ("docker", "podman")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", TEXT, re.MULTILINE | re.DOTALL)


def commands(tool: str) -> dict[str, list[str]]:
    """subcommand -> argv of each ``tool build`` / ``tool push`` line of the sh blocks."""
    found: dict[str, list[str]] = {}
    for block in blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv[:1] == [tool] and argv[1] in ("build", "push"):
                assert argv[1] not in found, f"two `{tool} {argv[1]}` lines"
                found[argv[1]] = argv
    return found


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def production_image() -> str:
    [image] = yaml.safe_load(PRODUCTION.read_text())["images"]
    return f"{image['newName']}:{image['newTag']}"


@pytest.mark.parametrize("tool", TOOLS)
def test_build_and_push_the_image_the_production_example_pulls(tool: str) -> None:
    found = commands(tool)
    assert set(found) == {"build", "push"}, f"deploy/README.md gives no `{tool} build` and `{tool} push`"
    build, push = found["build"], found["push"]
    # Run from the repository root: the Dockerfile's COPY sources are relative to the context.
    assert (REPO / option(build, "-f")).resolve() == (DEPLOY / "Dockerfile").resolve()
    assert build[-1] == "."
    assert option(build, "-t") == push[2] == production_image()
    assert production_image().endswith(f":{__version__}")


def test_the_dockerfiles_copy_sources_exist_in_the_build_context() -> None:
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository root the README builds from"


def test_the_scrape_configuration_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/system-packages installs it)")
    [configuration] = [block for block in blocks("yaml") if "scrape_configs:" in block]
    document = yaml.safe_load(configuration)
    [job] = document["scrape_configs"]
    assert job["job_name"] == "ims-gateway"
    keep = job["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["regex"] == "ims-gateway;admin;admin"
    # The rule files it names, where it says to copy them.
    for rule_file in document["rule_files"]:
        (tmp_path / rule_file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DEPLOY / "prometheus" / Path(rule_file).name, tmp_path / rule_file)
    # Debian's Prometheus is built without Kubernetes discovery (promtool rejects the key):
    # check everything else, the relabelling and the rule files, on a static target.
    assert job.pop("kubernetes_sd_configs") == [{"role": "endpoints"}]
    job["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_scrape_keeps_the_admin_service_port() -> None:
    """The relabelling's keep rule matches the labels and port name of Service ims-gateway-admin."""
    [configuration] = [block for block in blocks("yaml") if "scrape_configs:" in block]
    keep = yaml.safe_load(configuration)["scrape_configs"][0]["relabel_configs"][0]
    [admin] = [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "service.yaml").read_text()) if doc["metadata"]["name"] == "ims-gateway-admin"]
    labels = admin["metadata"]["labels"]
    values = []
    for source in keep["source_labels"]:
        if source == "__meta_kubernetes_endpoint_port_name":
            [port] = admin["spec"]["ports"]
            values.append(port["name"])
        else:
            name = source.removeprefix("__meta_kubernetes_service_label_")
            [value] = [value for key, value in labels.items() if re.sub(r"[^a-zA-Z0-9_]", "_", key) == name]
            values.append(value)
    assert re.fullmatch(keep["regex"], ";".join(values))


def test_every_path_in_the_kit_it_names_exists() -> None:
    named = set(re.findall(r"`((?:kubernetes|examples|prometheus|grafana|nginx)/[\w./-]*|Dockerfile)`", TEXT))
    assert {"Dockerfile", "kubernetes/gateway.toml", "grafana/ims-gateway.json"} <= named
    for path in named:
        assert (DEPLOY / path.rstrip("/")).exists(), f"deploy/README.md names {path}, which does not exist"
    for component in re.findall(r"^- \*\*`(\w[\w-]*)`\*\*", TEXT, re.MULTILINE):
        assert (DEPLOY / "kubernetes" / "components" / component / "kustomization.yaml").is_file(), component
    listed = set(re.findall(r"^- \*\*`(\w[\w-]*)`\*\*", TEXT, re.MULTILINE)) | set(
        re.findall(r"\*\*`(\w[\w-]*)`\*\* and \*\*`(\w[\w-]*)`\*\*", TEXT)[0]
    )
    assert listed == {path.name for path in (DEPLOY / "kubernetes" / "components").iterdir()}, "every component documented"
