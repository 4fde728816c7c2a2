"""`ims-gateway serve --workers N`: the supervisor, and real workers behind one listener."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway import config
from gateway.patch.parser import V21_MEDIA_TYPE
from gateway.service import workers
from gateway.telemetry.counts import read_counts
from gateway.telemetry.families import REQUESTS as REQUESTS_FAMILY
from gateway.telemetry.metrics import PUBLISH_SECONDS, SHARE_DIRECTORY
from testing.paths import REPO
from tests.conftest import Recorder, Seen, make_settings

pytestmark = pytest.mark.e2e


# A stand-in worker: records its start, optionally dies at once the first time, and on
# SIGTERM exits with the code it is told to.
FAKE_WORKER = """
import os, signal, sys, time
from pathlib import Path
starts, first_exit, term_exit, inherited = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[-1]
try:  # exactly one worker, the first to get here, is the one that dies
    os.close(os.open(f"{starts}.first", os.O_CREAT | os.O_EXCL))
    first = True
except FileExistsError:
    first = False
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


def all_ready(supervisor: workers.Supervisor, starts: Path) -> bool:
    """Every live worker has written its start line (its SIGTERM handler is in place)."""
    ready = {int(line.split()[0]) for line in started(starts)}
    return all(process.pid in ready for process in supervisor.workers.values())


async def until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the workers' shared report file goes (never the real home of whoever runs the tests)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "ims-gateway"


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
    await until(lambda: len(started(starts)) == 3 and len(supervisor.workers) == 2 and all_ready(supervisor, starts))
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


async def test_a_state_directory_that_cannot_be_made_stops_the_start_with_a_clear_message(
    tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "a-file"))
    command, starts = fake_worker(tmp_path)
    assert await workers.Supervisor(settings, command, 2).run() == 2
    assert "cannot make the directory of the workers' shared migration report" in caplog.text
    assert "set report.store" in caplog.text
    assert started(starts) == []


@pytest.mark.parametrize(
    ("store", "told"),
    [("", "sqlite://{state}/report.sqlite"), ("memory", None), ("redis://redis:6379/0", None)],
)
def test_the_workers_are_told_the_shared_file_only_when_no_store_is_configured(
    state_directory: Path, store: str, told: str | None
) -> None:
    settings = make_settings(upstream={"url": "http://ims"}, server={"workers": 2}, report={"store": store})
    environment = workers.report_store_environment(settings, dict(os.environ))
    assert environment.get(workers.REPORT_STORE) == (told.format(state=state_directory) if told else None)
    assert state_directory.is_dir() == bool(told)


def test_a_given_metrics_directory_is_emptied_and_kept(tmp_path: Path) -> None:
    (tmp_path / "ims-gateway-counts-123.json").write_text("{}")
    (tmp_path / "keep.txt").write_text("not ours")
    directory, made = workers.metrics_directory({SHARE_DIRECTORY: str(tmp_path)})
    assert (directory, made) == (tmp_path, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_without_a_metrics_directory_a_fresh_one_is_made(tmp_path: Path) -> None:
    directory, made = workers.metrics_directory({})
    try:
        assert made and directory.is_dir() and not any(directory.iterdir())
    finally:
        directory.rmdir()


@pytest.mark.parametrize(
    ("server", "upstream", "problem"),
    [
        ({"workers": 2}, {}, "server.workers: more than 1 needs upstream.url"),
        ({"workers": 0}, {"url": "http://ims"}, "server.workers: 0 is not allowed: expected a whole number >= 1"),
    ],
)
def test_workers_setting_problems_are_named(server: dict[str, int], upstream: dict[str, str], problem: str) -> None:
    with pytest.raises(config.SettingsError) as caught:
        config.build({"server": server, "upstream": upstream})
    assert any(line.startswith(problem) for line in caught.value.problems)


# ---------------------------------------------------------------- real workers in front of a recorder

SUPERVISOR_LINE = re.compile(r"(\d+) workers on (\S+) \(admin on (\S+)\)")
WORKER_LINE = re.compile(r"worker (\d+) started")
REQUESTS = "ims_gateway_requests_total"


class Workers:
    """`python -m gateway serve --workers N` as a child process, and what its log says."""

    def __init__(self, process: asyncio.subprocess.Process, metrics_dir: Path) -> None:
        self.process = process
        self.metrics_dir = metrics_dir
        self.lines: list[str] = []
        self.url = self.admin_url = ""
        self.reading: asyncio.Task[None] | None = None

    async def started(self, count: int) -> None:
        async with asyncio.timeout(60):
            while not self.url or len(self.pids()) < count:
                line = await self.process.stderr.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError("the supervisor exited:\n" + "".join(self.lines))
                self.lines.append(line.decode())
                if found := SUPERVISOR_LINE.search(self.lines[-1]):
                    self.url, self.admin_url = f"http://{found[2]}", f"http://{found[3]}"
        self.reading = asyncio.create_task(self._keep_reading())
        await self.until_serving(count)

    async def _keep_reading(self) -> None:
        while line := await self.process.stderr.readline():  # type: ignore[union-attr]
            self.lines.append(line.decode())

    def pids(self) -> list[int]:
        return [int(found[1]) for line in self.lines if (found := WORKER_LINE.search(line))]

    async def until_serving(self, count: int) -> None:
        """Every worker has said it is listening."""
        async with asyncio.timeout(60):
            while sum("listening on" in line for line in self.lines) < count:
                await asyncio.sleep(0.05)

    def log(self) -> str:
        return "".join(self.lines)

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 60)
        if self.reading is not None:
            await self.reading
        return code


@pytest.fixture
async def start_workers(tmp_path: Path) -> AsyncIterator:  # type: ignore[type-arg]
    running: list[Workers] = []

    async def start(upstream_url: str, count: int) -> Workers:
        metrics_dir = tmp_path / "metrics"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMS_GATEWAY_")}
        env.update(
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            IMS_GATEWAY_SERVER_DRAIN_DELAY="0",
            IMS_GATEWAY_LOGGING_ACCESS_LOG="false",
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "--workers", str(count), "--upstream", upstream_url,
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        gateway = Workers(process, metrics_dir)
        running.append(gateway)
        await gateway.started(count)
        return gateway

    yield start
    for gateway in running:
        if gateway.process.returncode is None:
            gateway.process.kill()
            await gateway.process.wait()
            for pid in gateway.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def send(url: str, count: int, concurrency: int = 20) -> list[int]:
    """``count`` requests, each on a new connection, ``concurrency`` at a time: GETs and PATCHes."""
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int) -> int:
            async with limit:
                if n % 2:
                    body = f'[{{"op": "replace", "path": "/name", "value": "n{n}"}}]'
                    answer = session.patch(f"{url}/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27", data=body, headers={"Content-Type": V21_MEDIA_TYPE})
                else:
                    answer = session.get(f"{url}/v2/images?limit={n}")
                async with answer as response:
                    await response.read()
                    return response.status

        return await asyncio.gather(*(one(n) for n in range(count)))


async def scrape(admin_url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(admin_url + "/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == REQUESTS
    )


async def settled_count(admin_url: str, expected: float) -> float:
    """requests_total once every worker's view agrees: a worker counts a request just after its
    last byte went out, and publishes its numbers to the others about once a second."""
    async with asyncio.timeout(30):
        while (counted := await scrape(admin_url)) < expected:
            await asyncio.sleep(0.05)
        if counted > expected:
            return counted
        await asyncio.sleep(PUBLISH_SECONDS + 0.5)
        # Several scrapes: the kernel hands them to different workers.
        views = {await scrape(admin_url) for _ in range(6)}
    return min(views)  # every view must have caught up by now


def counted_by_worker(metrics_dir: Path) -> dict[int, float]:
    """Each worker's own requests_total, read from the file it publishes in the shared directory."""
    return {
        int(path.stem.rsplit("-", 1)[1]): sum(read_counts(path).values[REQUESTS_FAMILY].values())
        for path in metrics_dir.glob("ims-gateway-counts-*.json")
    }


async def test_counts_from_every_worker_add_up_and_sigterm_stops_them_all(recorder: Recorder, start_workers) -> None:  # type: ignore[no-untyped-def]
    gateway = await start_workers(recorder.url, 3)
    assert await send(gateway.url, 300) == [200] * 300
    assert len(recorder.seen) == 300
    assert await settled_count(gateway.admin_url, 300) == 300
    # Each worker publishes its numbers about once a second: wait for the last round.
    async with asyncio.timeout(10):
        while sum((by_worker := counted_by_worker(gateway.metrics_dir)).values()) < 300:
            await asyncio.sleep(0.1)
    assert sum(by_worker.values()) == 300
    assert sum(1 for n in by_worker.values() if n) >= 2, by_worker
    assert set(by_worker) <= set(gateway.pids())
    assert await gateway.stop() == 0
    assert "all workers stopped" in gateway.log()
    assert all(gone(pid) for pid in gateway.pids())


async def test_sigterm_lets_a_request_in_flight_finish_on_its_worker(recorder: Recorder, start_workers) -> None:  # type: ignore[no-untyped-def]
    arrived = asyncio.Event()

    async def slowly(request: web.Request, seen: Seen) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(1.0)
        return web.json_response({"slow": True})

    recorder.respond = slowly
    gateway = await start_workers(recorder.url, 2)
    async with aiohttp.ClientSession() as session:
        answer = asyncio.ensure_future(session.get(gateway.url + "/v2/images"))
        await asyncio.wait_for(arrived.wait(), 20)
        gateway.process.send_signal(signal.SIGTERM)
        async with await answer as response:
            assert (response.status, await response.json()) == (200, {"slow": True})
    assert await asyncio.wait_for(gateway.process.wait(), 60) == 0


async def test_a_killed_worker_is_reported_and_replaced_and_its_counts_kept(recorder: Recorder, start_workers) -> None:  # type: ignore[no-untyped-def]
    gateway = await start_workers(recorder.url, 2)
    assert await send(gateway.url, 40) == [200] * 40
    assert await settled_count(gateway.admin_url, 40) == 40
    # A worker publishes its numbers about once a second: what it published before it
    # was killed stays counted (the last second of a SIGKILLed worker is lost).
    async with asyncio.timeout(10):
        while sum(counted_by_worker(gateway.metrics_dir).values()) < 40:
            await asyncio.sleep(0.1)
    victim = gateway.pids()[0]
    os.kill(victim, signal.SIGKILL)
    async with asyncio.timeout(60):
        while len(gateway.pids()) < 3:
            await asyncio.sleep(0.05)
    await gateway.until_serving(3)
    assert f"worker {victim} exited with signal SIGKILL" in gateway.log()
    assert await send(gateway.url, 40) == [200] * 40
    assert await settled_count(gateway.admin_url, 80) == 80
    assert await gateway.stop() == 0


async def test_workers_whose_supervisor_is_killed_drain_and_exit(recorder: Recorder, start_workers) -> None:  # type: ignore[no-untyped-def]
    gateway = await start_workers(recorder.url, 2)
    gateway.process.kill()
    await gateway.process.wait()
    async with asyncio.timeout(30):
        while not all(gone(pid) for pid in gateway.pids()):
            await asyncio.sleep(0.1)
    with pytest.raises(aiohttp.ClientConnectionError):
        await send(gateway.url, 1)


async def deprecations(admin_url: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as session, session.get(admin_url + "/deprecations") as response:
        assert response.status == 200
        return await response.json()  # type: ignore[no-any-return]


async def deprecated_calls(admin_url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(admin_url + "/metrics") as response:
        text = await response.text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "ims_gateway_deprecated_calls_total")


async def every_worker_reports(admin_url: str, calls: int) -> list[dict]:  # type: ignore[type-arg]
    """/deprecations until several answers in a row (the kernel hands them to different workers) count ``calls``."""
    async with asyncio.timeout(30):
        while True:
            views = [await deprecations(admin_url) for _ in range(6)]
            if all(sum(e["count"] for e in view["clients"]) == calls and view["store"]["pending_calls"] == 0 for view in views):
                return views
            await asyncio.sleep(0.2)


async def test_workers_without_a_store_share_one_report_that_counts_what_metrics_count_and_survives_a_restart(
    recorder: Recorder, start_workers, state_directory: Path  # type: ignore[no-untyped-def]
) -> None:
    gateway = await start_workers(recorder.url, 2)
    assert f"the workers share the migration report in sqlite://{state_directory}/report.sqlite" in gateway.log()
    assert await send(gateway.url, 40) == [200] * 40
    assert await settled_count(gateway.admin_url, 40) == 40
    views = await every_worker_reports(gateway.admin_url, 20)
    assert await deprecated_calls(gateway.admin_url) == 20
    assert {view["store"]["type"] for view in views} == {"sqlite"}
    assert len({tuple(sorted((e["client"], e["count"]) for e in view["clients"])) for view in views}) == 1
    assert await gateway.stop() == 0

    again = await start_workers(recorder.url, 2)
    assert await send(again.url, 4) == [200] * 4
    await every_worker_reports(again.admin_url, 22)
    assert await again.stop() == 0


def listening_sockets(port: int) -> int:
    """LISTEN sockets on 127.0.0.1:port, from /proc/net/tcp."""
    wanted = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == wanted and row.split()[3] == "0A")


@pytest.mark.skipif(not workers.REUSE_PORT, reason="SO_REUSEPORT is a Linux feature")
async def test_each_worker_listens_on_its_own_socket_and_gets_its_share(recorder: Recorder, start_workers) -> None:  # type: ignore[no-untyped-def]
    gateway = await start_workers(recorder.url, 2)
    port = int(gateway.url.rsplit(":", 1)[1])
    assert listening_sockets(port) == 2  # one per worker; the supervisor only holds the address
    assert await send(gateway.url, 200) == [200] * 200  # a new connection each
    async with asyncio.timeout(10):
        while sum((by_worker := counted_by_worker(gateway.metrics_dir)).values()) < 200:
            await asyncio.sleep(0.1)
    # The kernel spreads connections by their addresses: each worker far from none or all.
    assert all(50 <= n <= 150 for n in by_worker.values()), by_worker
    assert await gateway.stop() == 0


@pytest.mark.skipif(not workers.REUSE_PORT, reason="SO_REUSEPORT is a Linux feature")
async def test_a_port_another_server_listens_on_is_refused_not_shared(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that would share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            workers.bind(make_settings(server={"listen": f"127.0.0.1:{port}"}).server.listen, reserve=True)
        assert listening_sockets(port) == 1


def test_own_listeners_beside_a_reserved_address_share_its_connections() -> None:
    reserved = workers.bind(make_settings(server={"listen": "127.0.0.1:0"}).server.listen, reserve=True)
    port = reserved.getsockname()[1]
    duplicate = socket.socket(fileno=os.dup(reserved.fileno()))
    listeners = [workers.own_listener(reserved), workers.own_listener(duplicate)]
    try:
        assert listening_sockets(port) == 2
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        accepted = [0, 0]
        for index, listener in enumerate(listeners):
            listener.setblocking(False)
            while True:
                try:
                    listener.accept()[0].close()
                except BlockingIOError:
                    break
                accepted[index] += 1
        assert sum(accepted) == 40 and min(accepted) > 0, accepted
        for client in clients:
            client.close()
    finally:
        for listener in listeners:
            listener.close()
