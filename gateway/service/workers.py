"""Worker processes: ``ims-gateway serve --workers N``.

The parent binds the gateway and admin listeners once and starts N workers, each a whole
gateway (``ims-gateway serve`` with the same file, environment and flags). Where the
system has SO_REUSEPORT (Linux) the parent only reserves the gateway's address and each
worker listens on a socket of its own there: the kernel spreads new connections evenly
over the workers, where one shared socket lets whichever worker wakes first take most of
them (with keep-alive, for as long as the connections last). The admin listener is one
inherited socket. Binding in the parent works with port 0. The parent serves no traffic; it:

- makes PROMETHEUS_MULTIPROC_DIR a fresh directory for the run (or empties the one it is
  given), where every worker leaves its numbers, so that /metrics, from whichever worker
  answers it, adds up the counts of all workers;
- with no ``report.store`` configured, gives the workers one SQLite file for the
  migration report (``report.sqlite`` in the state directory, kept across restarts), so
  that /deprecations shows one report whichever worker answers;
- forwards SIGTERM/SIGINT to every worker, which drains as a single process does, and
  exits 0 once all of them exited 0 (1 otherwise); forwards SIGHUP (reload);
- restarts a worker that dies, logging its exit; if workers die more than
  ``MAX_DEATHS`` times within ``DEATH_WINDOW`` seconds it stops the others and exits 1,
  so that a crash loop surfaces to the process manager instead of hiding behind restarts.

Workers are in their own session, so a terminal's Ctrl-C reaches them once, through the
parent; a worker whose parent disappears drains and exits (see ``watch_parent``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.config.loader import ENV_PREFIX
from gateway.config.schema import Address, Settings
from gateway.service import listening
from gateway.telemetry import counts
from gateway.telemetry.metrics import SHARE_DIRECTORY
from gateway.telemetry.stores import spec

log = logging.getLogger("ims_gateway.workers")

INHERIT_FLAG = "--inherit-sockets"
MAX_DEATHS = 5
DEATH_WINDOW = 60.0
# After the drain a worker is given this much more before it is killed.
EXIT_GRACE = 10.0
PARENT_CHECK_SECONDS = 1.0


BACKLOG = 1024
REUSE_PORT = hasattr(socket, "SO_REUSEPORT")


def bind(address: Address, backlog: int = BACKLOG, *, reserve: bool = False) -> socket.socket:
    """A listening socket the workers inherit; with ``reserve`` (and SO_REUSEPORT), a socket
    that only holds the address, for each worker to listen beside it (``own_listener``)."""
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if reserve and REUSE_PORT:
        # SO_REUSEPORT would let this bind share a port another server listens on (an old
        # gateway still running) and split its traffic: a plain bind first, which fails then.
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
            sockaddr = probe.getsockname()  # port 0: the one the system chose
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reserve and REUSE_PORT:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        if not (reserve and REUSE_PORT):
            sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def own_listener(reserved: socket.socket, backlog: int = BACKLOG) -> socket.socket:
    """This worker's listener at a reserved address (SO_REUSEPORT); a listening socket as is."""
    if reserved.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        return reserved  # no SO_REUSEPORT here: every worker accepts on the one socket
    own = socket.socket(reserved.family, reserved.type, reserved.proto)
    try:
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.bind(reserved.getsockname())
        own.listen(backlog)
    except OSError:
        own.close()
        raise
    reserved.close()
    return own


def inherited(spec: str) -> tuple[socket.socket, socket.socket]:
    """The gateway and admin listeners a worker was started with (``--inherit-sockets L,A``)."""
    listen_fd, admin_fd = (int(fd) for fd in spec.split(","))
    return own_listener(socket.socket(fileno=listen_fd)), socket.socket(fileno=admin_fd)


def metrics_directory(environ: dict[str, str]) -> tuple[Path, bool]:
    """(the directory, whether the parent made it): a leftover file would add old counts."""
    given = environ.get(SHARE_DIRECTORY)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        counts.clear(path)
        return path, False
    return Path(tempfile.mkdtemp(prefix="ims-gateway-metrics-")), True


REPORT_STORE = ENV_PREFIX + "REPORT_STORE"


def report_store_environment(settings: Settings, environ: dict[str, str]) -> dict[str, str]:
    """What the workers are told of the report store: the shared file when none is configured.

    Its directory is made here, so that one that cannot be is a clear error before any worker starts.
    """
    if settings.report.store:
        return {}
    shared = spec.effective(spec.StoreSpec(spec.SQLITE), settings.server.workers, environ)
    if shared.path is None:
        return {}
    shared.path.parent.mkdir(parents=True, exist_ok=True)
    return {REPORT_STORE: shared.shown}


async def watch_parent(stop: Callable[[], None]) -> None:
    """Call ``stop`` once the parent is gone (the worker is re-parented): never serve unsupervised."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 (no event tells a process its parent died)
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    log.warning("the supervising process %d is gone: draining", parent)
    stop()


class Supervisor:
    """The parent: starts the workers, restarts the dead, stops them all on a signal."""

    def __init__(self, settings: Settings, command: Sequence[str], count: int) -> None:
        self.settings = settings
        self.command = list(command)
        self.count = count
        self.workers: dict[asyncio.Task[int], asyncio.subprocess.Process] = {}
        self.deaths: collections.deque[float] = collections.deque()
        self.stopping = asyncio.Event()
        self.failed = False
        self.listeners: list[socket.socket] = []
        self.directory = Path()
        self.argv: list[str] = []
        self.report_store: dict[str, str] = {}

    async def run(self) -> int:
        try:
            self.report_store = report_store_environment(self.settings, dict(os.environ))
        except OSError as exc:
            log.error(
                "cannot make the directory of the workers' shared migration report (%s); set report.store "
                '(e.g. "sqlite:///a/writable/path/report.sqlite", or "memory" for one report per worker) or XDG_STATE_HOME',
                exc,
            )
            return 2
        server = self.settings.server
        with listening.opening(server.listen, "server.listen"):
            self.listeners.append(bind(server.listen, reserve=True))
        try:
            with listening.opening(server.admin_listen, "server.admin_listen"):
                self.listeners.append(bind(server.admin_listen))
        except listening.CannotListen:
            self.listeners[0].close()
            raise
        if self.report_store:
            log.info("the workers share the migration report in %s", self.report_store[REPORT_STORE])
        self.directory, made = metrics_directory(dict(os.environ))
        fds = ",".join(str(sock.fileno()) for sock in self.listeners)
        self.argv = [*self.command, INHERIT_FLAG, fds]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        log.info(
            "ims-gateway supervisor %d: %d workers on %s (admin on %s), metrics in %s",
            os.getpid(), self.count, _name(self.listeners[0]), _name(self.listeners[1]), self.directory,
        )
        try:
            for _ in range(self.count):
                await self._start()
            await self._supervise()
            await self._drain()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            for sock in self.listeners:
                sock.close()
            for process in self.workers.values():
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            if made:
                shutil.rmtree(self.directory, ignore_errors=True)
        log.info("all workers stopped")
        return 1 if self.failed else 0

    async def _start(self) -> None:
        environment = {**os.environ, SHARE_DIRECTORY: str(self.directory), **self.report_store}
        fds = tuple(sock.fileno() for sock in self.listeners)
        process = await asyncio.create_subprocess_exec(*self.argv, env=environment, pass_fds=fds, start_new_session=True)
        self.workers[asyncio.ensure_future(process.wait())] = process
        log.info("worker %d started", process.pid)

    async def _supervise(self) -> None:
        """Until a stop signal: replace every worker that exits."""
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                done, _ = await asyncio.wait({*self.workers, stop}, return_when=asyncio.FIRST_COMPLETED)
                for exited in done - {stop}:
                    process = self.workers.pop(exited)
                    counts.forget_gauges(self.directory, process.pid)
                    log.error("worker %d exited with %s", process.pid, _describe(process.returncode))
                    if self._crash_looping():
                        log.error("workers died more than %d times within %.0f s: stopping", MAX_DEATHS, DEATH_WINDOW)
                        self.failed = True
                        self.stopping.set()
                        self._forward(signal.SIGTERM)
                    elif not self.stopping.is_set():
                        await self._start()
        finally:
            stop.cancel()

    async def _drain(self) -> None:
        # With the parent's copies closed, the port closes when the last worker stops listening.
        for sock in self.listeners:
            sock.close()
        if not self.workers:
            return
        server = self.settings.server
        budget = server.drain_delay + server.drain_timeout + EXIT_GRACE
        _, late = await asyncio.wait(self.workers, timeout=budget)
        for waiting in late:
            log.error("worker %d did not finish draining in %.0f s: killed", self.workers[waiting].pid, budget)
            with contextlib.suppress(ProcessLookupError):
                self.workers[waiting].kill()
        if late:
            await asyncio.wait(late)
            self.failed = True
        for process in self.workers.values():
            counts.forget_gauges(self.directory, process.pid)
            if process.returncode != 0:
                log.error("worker %d exited with %s while draining", process.pid, _describe(process.returncode))
                self.failed = True
        self.workers.clear()

    def _crash_looping(self) -> bool:
        now = time.monotonic()
        self.deaths.append(now)
        while now - self.deaths[0] > DEATH_WINDOW:
            self.deaths.popleft()
        return len(self.deaths) > MAX_DEATHS

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """What SIGTERM/SIGINT do: forward ``signum`` to every worker and wait for their drain."""
        # A second signal is forwarded too: the workers then exit at once.
        log.info("%s: stopping %d workers (each drains first)", signal.Signals(signum).name, len(self.workers))
        self.stopping.set()
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for process in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def _name(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return str(Address(host, port))


def supervise(settings: Settings, command: Sequence[str], count: int) -> int:
    """Run ``count`` workers (``command`` plus the inherited sockets) until a stop signal."""
    return asyncio.run(Supervisor(settings, command, count).run())
