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
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gateway.service.cli import main
from testing.paths import REPO
from testing.ports import refusing_port, started_ports

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


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# The emulator's start line (aiohttp's): the port it got (it is started on port 0).
EMULATOR_LISTENING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


class Process:
    """The real command, its output (stdout and stderr) collected by a thread as it comes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args], env={**env, "PYTHONUNBUFFERED": "1"}, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    def output(self) -> str:
        return "".join(self._lines)

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (found := pattern.search(self.output())) is None:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no line matching {pattern.pattern!r} in {timeout} s:\n{self.output()}"
            time.sleep(0.02)
        return found

    def listening(self) -> tuple[int, int]:
        """The gateway's traffic and admin ports, from its start line (both are bound by then)."""
        return started_ports(self.output, self.proc)

    def emulator_port(self) -> int:
        return int(self.wait_for_line(EMULATOR_LISTENING)[1])

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.output()


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
    assert "argument --listen: 'nowhere': expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080" in result.stderr


def test_serve_without_an_upstream_starts_the_emulator_and_says_so(processes: list[Process]) -> None:
    process = Process(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], clean_env())
    processes.append(process)
    port, admin = process.listening()
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
    emulator = Process(["emulator", "--listen", "127.0.0.1:0"], clean_env())
    processes.append(emulator)
    emulator_port = emulator.emulator_port()
    config = tmp_path / "gateway.toml"
    # The file's addresses and upstream lose to the flag and the environment: were they
    # used, the gateway would listen on port 1 (not a port of its own) and forward there.
    config.write_text('[server]\nlisten = "127.0.0.1:1"\nadmin_listen = "127.0.0.1:1"\n[upstream]\nurl = "http://127.0.0.1:1"\n')
    gateway = Process(
        ["serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        clean_env(IMS_GATEWAY_UPSTREAM_URL=f"http://127.0.0.1:{emulator_port}", IMS_GATEWAY_SERVER_ADMIN_LISTEN="127.0.0.1:0"),
    )
    processes.append(gateway)
    port, admin = gateway.listening()
    assert 1 not in (port, admin)
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
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n'
        f'tls_cert = "{cert_file}"\ntls_key = "{key_file}"\n'
    )
    process = Process(["serve", "--config", str(config)], clean_env())
    processes.append(process)
    port, _ = process.listening()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    status, headers, _ = request("GET", f"https://127.0.0.1:{port}/v2/images", context=context)
    assert status == 200
    assert headers["X-Request-Id"].startswith("req-")
    assert f"listening on https://127.0.0.1:{port}" in process.stop()


def test_the_emulator_command(processes: list[Process]) -> None:
    process = Process(["emulator", "--listen", "127.0.0.1:0"], clean_env())
    processes.append(process)
    port = process.emulator_port()
    status, _, body = request("GET", f"http://127.0.0.1:{port}/v2/images?limit=1")
    assert status == 200
    assert json.loads(body)["images"] == []
    # On its own, the emulator keeps aiohttp's access log: one line per request.
    assert len([line for line in process.stop().splitlines() if '"GET /v2/images?limit=1 HTTP/1.1" 200' in line]) == 1


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
    process = Process(
        ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        clean_env(IMS_GATEWAY_LOGGING_ACCESS_LOG=access_log),
    )
    processes.append(process)
    port, admin = process.listening()
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
    process = Process(
        ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        clean_env(IMS_GATEWAY_SERVER_EVENT_LOOP=choice),
    )
    processes.append(process)
    port, admin = process.listening()
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


# -- what an operator meets first: a busy port, Ctrl-C, the logs, the help, /metrics -----


@pytest.fixture
def busy() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("args", "environment", "named"),
    [
        (["--listen", "127.0.0.1:{busy}", "--admin-listen", "127.0.0.1:{free}"], {}, "--listen"),
        (["--listen", "127.0.0.1:{free}"], {"IMS_GATEWAY_SERVER_ADMIN_LISTEN": "127.0.0.1:{busy}"}, "server.admin_listen"),
        (["emulator", "--listen", "127.0.0.1:{busy}"], {}, "--listen"),
        (
            ["serve", "--workers", "2", "--upstream", "http://127.0.0.1:1", "--admin-listen", "127.0.0.1:{free}"],
            {"IMS_GATEWAY_SERVER_LISTEN": "127.0.0.1:{busy}"}, "server.listen",
        ),
        (["--workers", "2", "--upstream", "http://127.0.0.1:1", "--listen", "127.0.0.1:{free}", "--admin-listen", "127.0.0.1:{busy}"], {}, "--admin-listen"),
    ],
    ids=["listen", "admin_listen", "emulator", "workers-listen", "workers-admin"],
)  # fmt: skip
def test_a_port_in_use_is_one_line_naming_the_setting_and_exit_2(
    busy: int, tmp_path: Path, args: list[str], environment: dict[str, str], named: str
) -> None:
    free = free_port()
    fill = {"busy": busy, "free": free}
    env = clean_env(XDG_STATE_HOME=str(tmp_path), **{k: v.format(**fill) for k, v in environment.items()})
    started = time.monotonic()
    result = run([arg.format(**fill) for arg in args], env)
    # Nothing else: no traceback, no emulator or worker started (their lines), no unclosed session.
    assert result.stderr == f"ims-gateway: cannot listen on 127.0.0.1:{busy} ({named}): address already in use\n"
    assert result.returncode == 2
    assert result.stdout == ""
    assert time.monotonic() - started < 10
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", free))  # the other listener was closed again


@pytest.mark.parametrize(("signum", "delay", "within"), [(signal.SIGINT, 5.0, (0.0, 2.5)), (signal.SIGTERM, 1.0, (1.0, 10.0))])
def test_ctrl_c_stops_at_once_while_sigterm_keeps_the_drain_delay(
    processes: list[Process], signum: signal.Signals, delay: float, within: tuple[float, float]
) -> None:
    process = Process(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], clean_env(IMS_GATEWAY_SERVER_DRAIN_DELAY=str(delay)))
    processes.append(process)
    port, admin = process.listening()
    assert request("GET", f"http://127.0.0.1:{port}/v2/images")[0] == 200
    started = time.monotonic()
    process.proc.send_signal(signum)
    assert process.proc.wait(timeout=30) == 0
    assert within[0] <= time.monotonic() - started < within[1]
    output = process.stop()
    if signum == signal.SIGINT:
        assert "SIGINT: draining: new connections are refused now (server.drain_delay is for SIGTERM)" in output
    else:
        assert f"SIGTERM: draining: /readyz fails now, new connections are refused in {delay:g} s" in output


def test_one_log_line_per_request_with_the_built_in_emulator(processes: list[Process]) -> None:
    process = Process(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], clean_env())
    processes.append(process)
    port, admin = process.listening()
    assert request("GET", f"http://127.0.0.1:{admin}/readyz")[0] == 200  # the readiness check reaches the emulator too
    for n in range(3):
        assert request("GET", f"http://127.0.0.1:{port}/v2/images", headers={"X-Request-Id": f"one-{n}"})[0] == 200
    lines = process.stop().splitlines()
    assert [line for line in lines if "aiohttp.access" in line] == []
    for n in range(3):
        assert len([line for line in lines if f"one-{n}" in line]) == 1
    assert len([line for line in lines if " ims_gateway.access " in line]) == 3


def deprecated_calls(output: str) -> list[dict[str, object]]:
    return [json.loads(line.partition(" ims_gateway.deprecated ")[2]) for line in output.splitlines() if " ims_gateway.deprecated " in line]


@pytest.mark.parametrize(("mode", "status", "enforced"), [("enforce", 400, True), ("observe", 200, False)])
def test_the_call_line_says_whether_its_outcome_was_enforced(
    processes: list[Process], mode: str, status: int, enforced: bool
) -> None:
    process = Process(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], clean_env(IMS_GATEWAY_PATCH_MODE=mode))
    processes.append(process)
    port, admin = process.listening()
    image = json.loads(request("POST", f"http://127.0.0.1:{port}/v2/images", b'{"name": "x"}', {"Content-Type": "application/json"})[2])
    answered, _, _ = request(
        "PATCH", f"http://127.0.0.1:{port}/v2/images/{image['id']}", b'[{"op": "add", "path": "/__os_type", "value": "Linux"}]',
        {"Content-Type": "application/openstack-images-v2.1-json-patch", "X-Request-Id": "forbidden-1"},
    )  # fmt: skip
    assert answered == status
    (call,) = deprecated_calls(process.stop())
    # The fields scripts parse today are unchanged; "enforced" tells a 200 "rejected" apart.
    assert {k: call[k] for k in ("request_id", "mode", "outcome", "reason", "status", "enforced")} == {
        "request_id": "forbidden-1", "mode": mode, "outcome": "rejected", "reason": "forbidden_attribute",
        "status": status, "enforced": enforced,
    }  # fmt: skip


def test_an_unreachable_upstream_makes_readyz_log_a_short_reason(processes: list[Process]) -> None:
    with refusing_port() as closed:
        unreachable_upstream_logs_a_short_reason(processes, closed)


def unreachable_upstream_logs_a_short_reason(processes: list[Process], closed: int) -> None:
    process = Process(
        ["--upstream", f"http://127.0.0.1:{closed}", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], clean_env()
    )
    processes.append(process)
    port, admin = process.listening()
    status, _, body = request("GET", f"http://127.0.0.1:{admin}/readyz")
    assert (status, json.loads(body)["status"]) == (503, "upstream unreachable")
    warnings = [line for line in process.stop().splitlines() if " WARNING " in line]
    assert len(warnings) == 1
    assert warnings[0].endswith(f"upstream refused: GET http://127.0.0.1:{closed}: The upstream refused the connection or could not be reached.")
    assert "ConnectionKey" not in warnings[0] and "Error(" not in warnings[0]


def metric_samples(text: str) -> list[tuple[str, float]]:
    samples = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples.append((name, float(value)))
    return samples


def test_metrics_after_a_few_requests_have_no_created_or_untouched_zero_series(processes: list[Process]) -> None:
    process = Process(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], clean_env())
    processes.append(process)
    port, admin = process.listening()
    base = f"http://127.0.0.1:{port}/v2/images"
    image = json.loads(request("POST", base, b'{"name": "m"}', {"Content-Type": "application/json"})[2])
    for body in (b'[{"replace": "/name", "value": "n"}]', b'[{"replace": "/status", "value": "active"}]'):
        request("PATCH", f"{base}/{image['id']}", body, {"Content-Type": "application/openstack-images-v2.0-json-patch"})
    for _ in range(3):
        request("GET", base)
    _, _, body = request("GET", f"http://127.0.0.1:{admin}/metrics")
    text = body.decode()
    assert "_created" not in text
    zeros = [name for name, value in metric_samples(text) if name.startswith("ims_gateway_") and value == 0]
    # A bucket below a request's duration is 0 and a finished route's in-flight gauge is 0: both were touched.
    assert [name for name in zeros if "_bucket{" not in name and not name.startswith("ims_gateway_requests_in_flight{")] == []
    assert 'ims_gateway_deprecated_rejections_total{mode="enforce",reason="forbidden_attribute",shape="v2.0"} 1.0' in text
    assert 'route="image_patch"' in text and 'method="DELETE"' not in text
    process.stop()


def test_a_forbidden_attribute_is_refused_with_the_code_scripts_match_and_the_reason_logs_use(processes: list[Process]) -> None:
    process = Process(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], clean_env())
    processes.append(process)
    port, admin = process.listening()
    image = json.loads(request("POST", f"http://127.0.0.1:{port}/v2/images", b'{"name": "r"}', {"Content-Type": "application/json"})[2])
    status, _, body = request(
        "PATCH", f"http://127.0.0.1:{port}/v2/images/{image['id']}", b'[{"op": "replace", "path": "/min_ram", "value": 1}]',
        {"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )  # fmt: skip
    error = json.loads(body)["error"]
    assert (status, error["code"], error["reason"]) == (400, "IMSGW.0403", "forbidden_attribute")
    assert list(error) == ["code", "reason", "message", "details", "request_id"]
    _, _, metrics = request("GET", f"http://127.0.0.1:{admin}/metrics")
    assert 'reason="forbidden_attribute"' in metrics.decode()
    (call,) = deprecated_calls(process.stop())
    assert call["reason"] == error["reason"]


def test_a_malformed_body_has_no_reason_field(processes: list[Process]) -> None:
    process = Process(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], clean_env())
    processes.append(process)
    port, admin = process.listening()
    status, _, body = request(
        "PATCH", f"http://127.0.0.1:{port}/v2/images/x", b"not json", {"Content-Type": "application/openstack-images-v2.1-json-patch"}
    )
    assert (status, list(json.loads(body)["error"])) == (400, ["code", "message", "request_id"])


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["serve"], ["then IMS_GATEWAY_<SECTION>_<KEY> environment variables, then these flags: the later wins", "--listen HOST:PORT", "default: 127.0.0.1:8080", "default: 127.0.0.1:9090", "server.workers; default: 1", "start the built-in emulator"]),
        (["emulator"], ["where it listens (default: 127.0.0.1:8774)", "default: none, no signature needed"]),
        (["check-config"], ["FILE        the TOML config file, e.g. config/gateway.toml", "exit 2 naming every problem"]),
    ],
)  # fmt: skip
def test_help_describes_every_argument_with_its_default(capsys: pytest.CaptureFixture[str], command: list[str], shown: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    for text in shown:
        assert " ".join(text.split()) in out


@pytest.mark.parametrize("arguments", [["serve", "--bogus"], ["--bogus"], ["serve", "--listen", "127.0.0.1:1", "extra"]])
def test_an_unknown_flag_of_serve_shows_serves_usage(capsys: pytest.CaptureFixture[str], arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(arguments)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ims-gateway serve [-h] [--config FILE]")
    assert f"ims-gateway serve: error: unrecognized arguments: {arguments[-1]}\n" in err


def test_an_unknown_flag_of_another_command_shows_its_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["emulator", "--upstream", "http://x"])
    assert capsys.readouterr().err.startswith("usage: ims-gateway emulator [-h]")


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("127.0.0.1:70000", "HOST:PORT with a port from 0 to 65535"),
        ("::1:80", "an IPv6 host in brackets, e.g. [::1]:8080"),
        ("[zz]:80", "an IPv6 address in the brackets, e.g. [::1]:8080"),
    ],
)
def test_a_bad_address_reads_as_what_is_expected(capsys: pytest.CaptureFixture[str], tmp_path: Path, listen: str, message: str) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--listen", listen])
    assert capsys.readouterr().err.endswith(f"error: argument --listen: {listen!r}: expected {message}\n")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[server]\nlisten = "{listen}"\n')
    assert main(["check-config", str(config)]) == 2
    assert f'server.listen: "{listen}" is not allowed: expected {message}\n' in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unusable_certificate_is_one_line_naming_the_settings(tmp_path: Path, workers: str) -> None:
    # A PEM block that is no certificate: the TLS library refuses it (an OSError, like a busy port).
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    env = clean_env(IMS_GATEWAY_SERVER_TLS_CERT=str(bad), IMS_GATEWAY_SERVER_TLS_KEY=str(bad), XDG_STATE_HOME=str(tmp_path))
    args = ["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--workers", workers, "--upstream", "http://127.0.0.1:1"]
    result = run(args, env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()  # one line, nothing else
    assert line.startswith("ims-gateway: cannot use the TLS certificate and key (server.tls_cert, server.tls_key): ")
    assert "cannot listen" not in result.stderr and "Traceback" not in result.stderr
    assert "worker" not in result.stderr  # refused before any worker started
