"""The README's walk-through, run as a reader pastes it: bash and curl against `serve`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from testing.paths import README, REPO
from testing.ports import started_ports

pytestmark = pytest.mark.e2e


def walk_through() -> str:
    """The first sh block of the README's 'Try it' section."""
    section = README.read_text().split("\n## Try it\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("\n```", 1)[0]


def test_the_walk_through_works_as_written(tmp_path: Path) -> None:
    curl = shutil.which("curl")
    assert curl, "curl is needed (.ci/system-packages installs it)"
    script = walk_through()
    first = script.splitlines()[0]
    assert first == "GW=http://127.0.0.1:8080 ADMIN=http://127.0.0.1:9090", "the block starts by naming both listeners"
    # The gateway exactly as `make run` starts it, on ports of its own: port 0, read back from its start line.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMS_GATEWAY_")}
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(REPO / "config" / "gateway.toml"),
             "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        port, admin = started_ports(lambda: log_path.read_text(errors="replace"), process)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "the gateway did not become ready"
            time.sleep(0.1)
        pasted = script.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("127.0.0.1:9090", f"127.0.0.1:{admin}")
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", pasted], capture_output=True, text=True, timeout=60)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^HTTP/1.1 200 OK", out, re.MULTILINE)
    assert '"name": "renamed"' in out
    refusal = next(json.loads(line) for line in out.splitlines() if line.startswith('{"error"'))
    assert refusal["error"]["code"] == "IMSGW.0403"
    assert "__os_type" in refusal["error"]["message"]
    report = next(json.loads(line) for line in out.splitlines() if line.startswith('{"generated_at"'))
    assert [entry["client"] for entry in report["clients"]] == ["curl"]
    assert 'ims_gateway_deprecated_calls_total{mode="enforce",outcome="rewritten",shape="v2.0"} 1.0' in out
    assert 'ims_gateway_deprecated_calls_total{mode="enforce",outcome="rejected",shape="v2.1"} 1.0' in out
