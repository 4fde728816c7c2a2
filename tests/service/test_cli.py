"""The ims-gateway command as an operator runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gateway.service.cli import main
from testing.paths import REPO

pytestmark = pytest.mark.e2e

SHIPPED = REPO / "config" / "gateway.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMS_GATEWAY_")}
    env.update(extra)
    return env


def wait_for(url: str, context: ssl.SSLContext | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class Process:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            output, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        return output


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def test_check_config_accepts_the_shipped_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(SHIPPED)]) == 0
    assert capsys.readouterr().out == f"{SHIPPED}: OK\n"


def test_check_config_names_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[upstream]\nur = "x"\nconnect_timeout = 0\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"ims-gateway: invalid configuration in {bad}:" in err
    assert "  - upstream.ur: unknown key (known: url," in err
    assert "  - upstream.connect_timeout: 0 is not allowed: expected a number > 0" in err
    assert "Traceback" not in err


def test_check_config_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_serve_refuses_bad_settings_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--upstream", "http://x"],
        env=clean_env(IMS_GATEWAY_UPSTREAM_POOL_SIZE="zero"), cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "IMS_GATEWAY_UPSTREAM_POOL_SIZE: 'zero' is not allowed: expected a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flag_values_are_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--listen", "nowhere"], env=clean_env(), cwd=REPO,
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "argument --listen: 'nowhere': HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080" in result.stderr


def test_serve_without_an_upstream_starts_the_emulator_and_says_so(processes: list[Process]) -> None:
    port, admin = free_port(), free_port()
    process = Process(["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"], clean_env())
    processes.append(process)
    wait_for(f"http://127.0.0.1:{admin}/healthz")
    status, _, body = request(
        "POST", f"http://127.0.0.1:{port}/v2/images",
        json.dumps({"name": "cli", "container_format": "bare", "disk_format": "raw"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 201
    image = json.loads(body)
    status, _, body = request(
        "PATCH", f"http://127.0.0.1:{port}/v2/images/{image['id']}",
        b'[{"replace": "/name", "value": "renamed"}]',
        {"Content-Type": "application/openstack-images-v2.0-json-patch"},
    )
    assert (status, json.loads(body)["name"]) == (200, "renamed")
    status, _, _ = request("GET", f"http://127.0.0.1:{admin}/readyz")
    assert status == 200
    output = process.stop()
    assert process.proc.returncode == 0
    assert "started the built-in IMS emulator at http://127.0.0.1:" in output
    assert f"listening on http://127.0.0.1:{port}" in output


def test_flags_override_the_environment_which_overrides_the_file(
    processes: list[Process], tmp_path: Path
) -> None:
    emulator_port = free_port()
    emulator = Process(["emulator", "--listen", f"127.0.0.1:{emulator_port}"], clean_env())
    processes.append(emulator)
    wait_for(f"http://127.0.0.1:{emulator_port}/v2/images")
    port, admin, unused = free_port(), free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{unused}"\n[upstream]\nurl = "http://127.0.0.1:1"\n')
    gateway = Process(
        ["serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        clean_env(IMS_GATEWAY_UPSTREAM_URL=f"http://127.0.0.1:{emulator_port}", IMS_GATEWAY_SERVER_ADMIN_LISTEN=f"127.0.0.1:{admin}"),
    )
    processes.append(gateway)
    wait_for(f"http://127.0.0.1:{admin}/healthz")
    status, _, body = request("GET", f"http://127.0.0.1:{port}/v2/images")
    assert status == 200
    assert json.loads(body)["images"] == []
    output = gateway.stop()
    assert f"forwarding to http://127.0.0.1:{emulator_port}" in output
    assert "built-in IMS emulator" not in output


def test_https_listener_from_the_config_file(processes: list[Process], tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port, admin = free_port(), free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
        f'tls_cert = "{cert_file}"\ntls_key = "{key_file}"\n'
    )
    process = Process(["serve", "--config", str(config)], clean_env())
    processes.append(process)
    wait_for(f"http://127.0.0.1:{admin}/healthz")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    status, headers, _ = request("GET", f"https://127.0.0.1:{port}/v2/images", context=context)
    assert status == 200
    assert headers["X-Request-Id"].startswith("req-")
    assert f"listening on https://127.0.0.1:{port}" in process.stop()


def test_the_emulator_command(processes: list[Process]) -> None:
    port = free_port()
    process = Process(["emulator", "--listen", f"127.0.0.1:{port}"], clean_env())
    processes.append(process)
    wait_for(f"http://127.0.0.1:{port}/v2/images")
    status, _, body = request("GET", f"http://127.0.0.1:{port}/v2/images?limit=1")
    assert status == 200
    assert json.loads(body)["images"] == []


def test_console_script_and_module_are_the_same_program() -> None:
    script = Path(sys.executable).parent / "ims-gateway"
    if not script.exists():
        pytest.skip("the console script is installed by `make install`")
    by_script = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    by_module = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, timeout=30)
    assert by_script.stdout == by_module.stdout
    assert by_script.stdout.startswith("ims-gateway ")


@pytest.mark.parametrize(("access_log", "expected"), [("true", True), ("false", False)])
def test_the_access_log_can_be_turned_off(processes: list[Process], access_log: str, expected: bool) -> None:
    port, admin = free_port(), free_port()
    process = Process(
        ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        clean_env(IMS_GATEWAY_LOGGING_ACCESS_LOG=access_log),
    )
    processes.append(process)
    wait_for(f"http://127.0.0.1:{admin}/healthz")
    status, headers, _ = request("GET", f"http://127.0.0.1:{port}/v2/images", headers={"X-Request-Id": "access-1"})
    assert status == 200
    output = process.stop()
    access_lines = [line for line in output.splitlines() if "ims_gateway.access" in line]
    assert bool(access_lines) is expected
    if expected:
        assert re.search(r"ims_gateway\.access 127\.0\.0\.1 GET images 200 \d+\.\d{6} access-1$", access_lines[0])


@pytest.mark.parametrize(("choice", "loop"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_the_event_loop_is_the_configured_one(processes: list[Process], choice: str, loop: str) -> None:
    pytest.importorskip("uvloop")
    port, admin = free_port(), free_port()
    process = Process(
        ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"],
        clean_env(IMS_GATEWAY_SERVER_EVENT_LOOP=choice),
    )
    processes.append(process)
    wait_for(f"http://127.0.0.1:{admin}/healthz")
    status, _, _ = request("GET", f"http://127.0.0.1:{port}/v2/images")
    assert status == 200
    output = process.stop()
    assert f"; event loop: {loop}\n" in output


def test_uvloop_named_but_not_installed_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else find_spec(name, *a))
    config = tmp_path / "gateway.toml"
    config.write_text('[server]\nevent_loop = "uvloop"\n')
    assert main(["check-config", str(config)]) == 2
    assert "uvloop is not installed (pip install 'ims-gateway[uvloop]')" in capsys.readouterr().err
    config.write_text('[server]\nevent_loop = "tokio"\n')
    assert main(["check-config", str(config)]) == 2
    assert "one of auto, uvloop, asyncio" in capsys.readouterr().err
