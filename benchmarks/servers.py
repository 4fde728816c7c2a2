"""The processes a benchmark run starts: nginx (upstream and anchor), the floor, ims-gateway.

Each one is a child process on a fixed loopback port, started and stopped by the run, and
observed through /proc: CPU time and peak RSS over the whole process tree.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent
IMAGE_JSON = json.dumps(json.loads((HERE / "image.json").read_text()), separators=(",", ":"))
IMAGE_ID = json.loads(IMAGE_JSON)["id"]
TICKS = os.sysconf("SC_CLK_TCK")
# The proxy under test gets a CPU of its own; the load generator and the upstream share the
# others. Left to the scheduler, who lands next to whom swung requests/s by a third.
CPUS = sorted(os.sched_getaffinity(0))
NO_PINNING = "IMS_BENCH_NO_PINNING"
PROXY_CPUS = CPUS[-1:]
DRIVER_CPUS = CPUS[:-1] or CPUS


def pinned(command: list[str], cpus: list[int]) -> list[str]:
    """``command`` run on ``cpus`` only (with its threads and children), when there is a choice."""
    taskset = shutil.which("taskset")
    if taskset is None or len(CPUS) < 2 or cpus == CPUS or os.environ.get(NO_PINNING):
        return command
    return [taskset, "-c", ",".join(map(str, cpus)), *command]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args!r} is not listening on {port} after {timeout} s")


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def process_tree(pid: int) -> list[int]:
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += _children(current)
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes (the threads included)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def reset_peak_rss(pids: list[int]) -> None:
    """Make VmHWM restart from the current RSS (Linux: clear_refs 5)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mib(pids: list[int]) -> float:
    """The largest VmHWM among the processes: each worker's memory is what must stay flat."""
    peak = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak / 1024


@dataclasses.dataclass
class Server:
    """One started process listening on ``port``."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start(
    name: str,
    command: list[str],
    port: int,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    cpus: list[int] = PROXY_CPUS,
) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            pinned(command, cpus), stdout=output, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
        )
    server = Server(name, process, port, log)
    try:
        wait_listening(port, process)
    except RuntimeError:
        server.stop()
        raise RuntimeError(f"{name} did not start; its output:\n{log.read_text()[-3000:]}") from None
    return server


def _render(template: str, values: Mapping[str, object]) -> str:
    text = (HERE / "nginx" / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    return text


def nginx(name: str, template: str, workdir: Path, cpus: list[int], **values: object) -> Server:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    (workdir / "tmp").mkdir(exist_ok=True)
    port = free_port()
    conf = workdir / f"{name}.conf"
    conf.write_text(_render(template, {"DIR": workdir, "PORT": port, **values}))
    command = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / f"{name}-error.log")]
    return start(name, command, port, workdir, cpus=cpus)


@dataclasses.dataclass
class Spool:
    """tmpfs space for the upstream: the download files and the uploads it receives."""

    root: Path

    @property
    def www(self) -> Path:
        return self.root / "www"

    def download(self, image_id: str, size: int) -> str:
        """A sparse file of ``size`` bytes served at /v2/images/{image_id}/file."""
        path = self.www / "v2" / "images" / image_id / "file"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            handle.truncate(size)
        return f"/v2/images/{image_id}/file"

    def source(self, size: int) -> Path:
        """A sparse local file of ``size`` bytes for the client to upload."""
        path = self.root / f"upload-source-{size}"
        with path.open("wb") as handle:
            handle.truncate(size)
        return path

    def discard_uploads(self, image_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.www / "v2" / "images" / image_id / "file").unlink()


@contextlib.contextmanager
def spool() -> Iterator[Spool]:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    root = base / f"ims-gateway-bench-{os.getpid()}"
    (root / "tmp").mkdir(parents=True)
    (root / "www").mkdir()
    try:
        yield Spool(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def upstream(workdir: Path, area: Spool) -> Server:
    return nginx("upstream", "upstream.conf", workdir, DRIVER_CPUS, SPOOL=area.root, IMAGE_JSON=IMAGE_JSON)


def nginx_proxy(workdir: Path, upstream_server: Server) -> Server:
    return nginx("nginx-proxy", "proxy.conf", workdir, PROXY_CPUS, UPSTREAM_PORT=upstream_server.port)


def floor_command(port: int, upstream_url: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.floor", "--listen", f"127.0.0.1:{port}", "--upstream", upstream_url]


def floor(workdir: Path, upstream_server: Server) -> Server:
    port = free_port()
    return start("floor", floor_command(port, upstream_server.url), port, workdir)


def gateway_command(port: int, upstream_url: str, workers: int = 1) -> list[str]:
    command = [
        sys.executable, "-m", "gateway", "serve",
        "--upstream", upstream_url,
        "--listen", f"127.0.0.1:{port}",
        "--admin-listen", f"127.0.0.1:{free_port()}",
    ]
    if workers != 1:
        command += ["--workers", str(workers)]
    return command


def gateway_environment(state: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The gateway's environment: ``env`` and a state directory of the run's own (where
    --workers N share a SQLite migration report)."""
    return {"XDG_STATE_HOME": str(state), **(env or {})}


def gateway(name: str, workdir: Path, upstream_server: Server, *, workers: int = 1, env: Mapping[str, str] | None = None) -> Server:
    """ims-gateway as shipped: info logging, the access log and the per-call lines on, to its log file."""
    port = free_port()
    command = gateway_command(port, upstream_server.url, workers)
    environment = gateway_environment(workdir / "state", env)
    # N workers are given every CPU: that is what scaling means on this machine.
    return start(name, command, port, workdir, environment, cpus=PROXY_CPUS if workers == 1 else CPUS)
