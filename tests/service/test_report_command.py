"""`ims-gateway report`: the migration report in a terminal, from each store, and every way it cannot be read."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.service.cli import main
from gateway.telemetry.stores.base import Bounds
from gateway.telemetry.stores.redis_store import RedisStore
from gateway.telemetry.stores.sqlite_store import SqliteStore
from testing.paths import REPO
from testing.ports import refusing_port, started_ports
from testing.report_stores import RedisServer
from tests.telemetry.report_calls import batch, call

NOW = time.time()
HEADINGS = "CLIENT               ADDRESS   PROJECT  CALLS  SHAPES          OUTCOMES                  LAST SEEN             BY"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [name for name in os.environ if name.startswith("IMS_GATEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def config(tmp_path: Path, report: str = "", server: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[server]\n{server}\n[report]\n{report}\n")
    return path


def some_calls(replica: str = "pod-a"):  # type: ignore[no-untyped-def]
    return batch(
        "b1", replica,
        call(NOW - 60, client="python-glanceclient", project="p1"),
        call(NOW - 50, client="python-glanceclient", project="p1", shape="v2.1", outcome="forwarded"),
        call(NOW - 40, client="terraform", project=None, user_agent="=HYPERLINK(\"http://x\")", outcome="rejected"),
    )  # fmt: skip


@pytest.fixture
def sqlite_report(tmp_path: Path) -> Path:
    path = tmp_path / "report.sqlite"
    store = SqliteStore(path, 5.0)
    store.apply_now(some_calls(), Bounds(NOW, 1000, 86400.0))
    store.close_now()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["report", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_table_from_a_sqlite_store(tmp_path: Path, sqlite_report: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--config", str(config(tmp_path, f'store = "sqlite://{sqlite_report}"')))
    assert (code, err) == (0, "")
    head, blank, headings, first, second = out.splitlines()
    assert head.startswith(
        f"Clients still using PATCH /v2/images/{{image_id}}: every gateway sharing this store, as each replica last flushed; "
        f"store sqlite://{sqlite_report}; generated "
    )
    assert head.endswith("; 2 of at most 1000 entries, 0 evicted, 0 expired (retention 30d).")
    assert (blank, headings) == ("", HEADINGS)
    assert first.split()[:8] == ["python-glanceclient", "10.0.0.1", "p1", "2", "v2.0", "1,", "v2.1", "1"]
    assert first.endswith("pod-a") and second.startswith("terraform ")


def test_json_is_the_deprecations_document(tmp_path: Path, sqlite_report: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "--config", str(config(tmp_path, f'store = "sqlite://{sqlite_report}"')))
    document = json.loads(out)
    assert code == 0
    assert [(e["client"], e["count"], e["last_seen_by"]) for e in document["clients"]] == [
        ("python-glanceclient", 2, "pod-a"),
        ("terraform", 1, "pod-a"),
    ]
    assert document["store"] == {
        "type": "sqlite", "location": f"sqlite://{sqlite_report}", "answered": True, "problem": None,
        "flushed_at": None, "pending_calls": 0, "dropped_calls": 0,
    }  # fmt: skip
    assert [replica["replica"] for replica in document["replicas"]] == ["pod-a"]


def test_csv_has_one_row_per_entry_and_no_cell_a_spreadsheet_would_run(
    tmp_path: Path, sqlite_report: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "--csv", "--config", str(config(tmp_path, f'store = "sqlite://{sqlite_report}"')))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2
    assert rows[0]["client"] == "python-glanceclient" and rows[0]["shapes"] == "v2.0=1;v2.1=1" and rows[0]["count"] == "2"
    assert rows[1]["user_agent"] == "'=HYPERLINK(\"http://x\")" and rows[1]["project_id"] == ""


def test_the_workers_shared_file_is_read_when_no_store_is_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "state" / "ims-gateway" / "report.sqlite"
    store = SqliteStore(shared, 5.0)
    store.apply_now(some_calls(), Bounds(NOW, 1000, 86400.0))
    store.close_now()
    code, out, _ = run(capsys, "--json", "--config", str(config(tmp_path, server='workers = 2\n[upstream]\nurl = "http://ims"')))
    assert code == 0 and json.loads(out)["store"]["location"] == f"sqlite://{shared}"


def test_a_sqlite_file_that_is_not_there_is_exit_1_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.sqlite"
    code, out, err = run(capsys, "--config", str(config(tmp_path, f'store = "sqlite://{missing}"')))
    assert (code, out) == (1, "")
    assert err == f"ims-gateway report: cannot read sqlite://{missing}: no such file: {missing}\n"
    assert not missing.exists()


def test_a_file_that_is_not_a_report_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.sqlite"
    other.write_bytes(b"not a database at all" * 100)
    code, _, err = run(capsys, "--config", str(config(tmp_path, f'store = "sqlite://{other}"')))
    assert code == 1 and err.startswith(f"ims-gateway report: cannot read sqlite://{other}: ") and err.count("\n") == 1


def test_a_redis_that_does_not_answer_is_exit_1_without_its_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with refusing_port() as port:  # held: no server can start listening there meanwhile
        code, _, err = run(capsys, "--config", str(config(tmp_path, f'store = "redis://:hunter2@127.0.0.1:{port}/0"\nstore_timeout = 2.0')))
    assert code == 1
    assert err.startswith(f"ims-gateway report: cannot read redis://:***@127.0.0.1:{port}/0: ConnectionError") and err.count("\n") == 1
    assert "hunter2" not in err


def test_a_bad_configuration_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--config", str(config(tmp_path, 'store = "nowhere"')))
    assert code == 2 and "report.store" in err


def test_json_and_csv_at_once_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", "--json", "--csv"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_memory_store_with_no_gateway_running_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with refusing_port() as port:  # held: no gateway can start listening there meanwhile
        code, out, err = run(capsys, "--config", str(config(tmp_path, server=f'admin_listen = "0.0.0.0:{port}"')))
    url = f"http://127.0.0.1:{port}/deprecations"
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"ims-gateway report: report.store is memory: reading the running gateway's {url} (its own calls only)",
        f"ims-gateway report: no gateway answered at {url}: [Errno 111] Connection refused",
    ]


@pytest.mark.e2e
def test_the_memory_store_is_read_from_the_running_gateway(tmp_path: Path) -> None:
    # Both listeners on port 0; the gateway's start line says which ports it got, and the
    # report command is told the admin one as an operator would (the environment).
    settings = config(tmp_path, server='listen = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\ndrain_delay = 0.0')
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMS_GATEWAY_")}
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(settings)],
            cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        listen, admin = started_ports(lambda: log_path.read_text(errors="replace"), gateway)
        env["IMS_GATEWAY_SERVER_ADMIN_LISTEN"] = f"127.0.0.1:{admin}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{listen}/v2/images/nope", method="PATCH", data=b'[{"replace": "/name", "value": "x"}]',
            headers={"Content-Type": "application/openstack-images-v2.0-json-patch", "User-Agent": "openstacksdk/3.0"},
        )  # fmt: skip
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as answered:  # the emulator has no such image
            answered.close()
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "report", "--config", str(settings)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        gateway.terminate()
        gateway.wait(30)
    assert result.returncode == 0, result.stderr
    assert f"reading the running gateway's http://127.0.0.1:{admin}/deprecations" in result.stderr
    assert "this gateway process since it started; store memory" in result.stdout
    assert result.stdout.splitlines()[3].startswith("openstacksdk  127.0.0.1")


@pytest.mark.e2e
def test_a_redis_store_is_read_directly(tmp_path: Path, redis_server: RedisServer) -> None:
    async def write() -> None:
        store = RedisStore(redis_server.url, 5.0)
        await store.apply(some_calls("pod-b"), Bounds(NOW, 1000, 86400.0))
        await store.close()

    asyncio.run(write())
    settings = config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMS_GATEWAY_")}
    env["IMS_GATEWAY_REPORT_STORE"] = redis_server.url
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "report", "--json", "--config", str(settings)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    document = json.loads(result.stdout)
    assert [(e["client"], e["count"], e["last_seen_by"]) for e in document["clients"]] == [
        ("python-glanceclient", 2, "pod-b"),
        ("terraform", 1, "pod-b"),
    ]
    assert document["store"]["location"] == redis_server.url
