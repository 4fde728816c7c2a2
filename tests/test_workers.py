"""`ims-gateway serve --workers N`: the supervisor, and real workers behind one listener."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import pytest

from gateway import settings as settings_module, workers
from tests.conftest import make_settings

# A stand-in worker: records its start, optionally dies at once the first time, and on
# SIGTERM exits with the code it is told to.
FAKE_WORKER = """
import os, signal, sys, time
from pathlib import Path
starts, first_exit, term_exit, inherited = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[-1]
first = not starts.exists()
signal.signal(signal.SIGTERM, (lambda *_: sys.exit(term_exit)) if term_exit >= 0 else signal.SIG_IGN)
with starts.open("a") as log:
    log.write(f"{os.getpid()} {inherited}\\n")
if first and first_exit >= 0:
    sys.exit(first_exit)
while True:
    time.sleep(0.05)
"""


def fake_worker(tmp_path: Path, *, first_exit: int = -1, term_exit: int = 0) -> tuple[list[str], Path]:
    script = tmp_path / "worker.py"
    script.write_text(FAKE_WORKER)
    starts = tmp_path / "starts"
    return [sys.executable, str(script), str(starts), str(first_exit), str(term_exit)], starts


def started(starts: Path) -> list[str]:
    return starts.read_text().splitlines() if starts.exists() else []


async def until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture
def settings():  # type: ignore[no-untyped-def]
    return make_settings(upstream={"url": "http://127.0.0.1:9"}, server={"drain_timeout": 5.0})


async def test_every_worker_gets_both_inherited_listeners(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    command, starts = fake_worker(tmp_path)
    supervisor = workers.Supervisor(settings, command, 3)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: len(started(starts)) == 3)
    supervisor.request_stop(signal.SIGTERM)
    assert await running == 0
    specs = {line.split()[1] for line in started(starts)}
    assert len(specs) == 1
    assert all(fd.isdigit() for fd in specs.pop().split(","))


async def test_a_dead_worker_is_replaced_and_the_stop_is_still_clean(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    command, starts = fake_worker(tmp_path, first_exit=3)
    supervisor = workers.Supervisor(settings, command, 2)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: len(started(starts)) == 3 and len(supervisor.workers) == 2)
    supervisor.request_stop(signal.SIGTERM)
    assert await running == 0
    assert supervisor.workers == {}


async def test_a_crash_loop_stops_the_supervisor_with_exit_1(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    supervisor = workers.Supervisor(settings, [sys.executable, "-c", "raise SystemExit(3)"], 2)
    assert await asyncio.wait_for(supervisor.run(), 30) == 1
    assert supervisor.workers == {}


async def test_a_worker_failing_its_drain_makes_the_exit_non_zero(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    command, starts = fake_worker(tmp_path, term_exit=4)
    supervisor = workers.Supervisor(settings, command, 2)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: len(started(starts)) == 2)
    supervisor.request_stop(signal.SIGTERM)
    assert await running == 1


async def test_a_worker_that_does_not_drain_in_time_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "EXIT_GRACE", 0.2)
    settings = make_settings(upstream={"url": "http://127.0.0.1:9"}, server={"drain_timeout": 0.0})
    command, starts = fake_worker(tmp_path, term_exit=-1)
    supervisor = workers.Supervisor(settings, command, 1)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: len(started(starts)) == 1)
    pid = int(started(starts)[0].split()[0])
    supervisor.request_stop(signal.SIGTERM)
    assert await running == 1
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


async def test_the_port_is_closed_once_stopped(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    command, starts = fake_worker(tmp_path)
    supervisor = workers.Supervisor(settings, command, 1)
    running = asyncio.create_task(supervisor.run())
    await until(lambda: len(started(starts)) == 1)
    port = supervisor.listeners[0].getsockname()[1]
    supervisor.request_stop(signal.SIGTERM)
    assert await running == 0
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_given_metrics_directory_is_emptied_and_kept(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "keep.txt").write_text("not ours")
    directory, made = workers.metrics_directory({workers.MULTIPROC_DIR: str(tmp_path)})
    assert (directory, made) == (tmp_path, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_without_a_metrics_directory_a_fresh_one_is_made(tmp_path: Path) -> None:
    directory, made = workers.metrics_directory({})
    try:
        assert made and directory.is_dir() and not any(directory.iterdir())
    finally:
        directory.rmdir()


def test_a_dead_workers_live_gauges_are_dropped_and_its_counters_kept(tmp_path: Path) -> None:
    for name in ("gauge_livesum_7.db", "gauge_liveall_7.db", "gauge_livesum_8.db", "counter_7.db", "gauge_max_7.db"):
        (tmp_path / name).write_bytes(b"")
    workers.mark_dead(tmp_path, 7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_7.db", "gauge_livesum_8.db", "gauge_max_7.db"]


@pytest.mark.parametrize(
    ("server", "upstream", "problem"),
    [
        ({"workers": 2}, {}, "server.workers: more than 1 needs upstream.url"),
        ({"workers": 0}, {"url": "http://ims"}, "server.workers: 0 is not allowed: expected a whole number >= 1"),
    ],
)
def test_workers_setting_problems_are_named(server: dict[str, int], upstream: dict[str, str], problem: str) -> None:
    with pytest.raises(settings_module.SettingsError) as caught:
        settings_module.build({"server": server, "upstream": upstream})
    assert any(line.startswith(problem) for line in caught.value.problems)
