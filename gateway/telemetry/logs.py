"""Log lines leave the event loop through a queue; a thread formats and writes them in batches.

A ``logging.info`` call on the loop costs 10-15 µs (a LogRecord, the handler's lock, the
formatting, one write per line), as much as the gateway's whole decision on a refused
PATCH. Once ``configure`` has run:

- every ordinary record goes through ``logging.handlers.QueueHandler`` to ``Writer``;
- the lines written once per request (the access log, the per-call line of an image PATCH)
  go through ``OffLoop``: the loop hands the writer a tuple, and the writer's thread renders
  and formats it.

Every ``FLUSH_SECONDS`` the thread takes whatever is queued, formats it with the one format
(``FORMAT``) and writes it to the stream in one call. A stream that blocks (a full pipe
nobody reads) stalls the thread, never the loop; past ``MAX_PENDING`` waiting lines, new
ones are dropped and their number is logged once the stream takes lines again. A process
killed outright loses at most the last ``FLUSH_SECONDS`` of lines.

Without ``configure`` (tests, the gateway embedded in another program) ``OffLoop`` logs
through ``logging`` as usual, so the lines reach whatever handlers the program set up.
"""

from __future__ import annotations

import atexit
import collections
import logging
import logging.handlers
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Final, TypeAlias

FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
FLUSH_SECONDS: Final = 0.05
MAX_PENDING: Final = 100_000

Render: TypeAlias = Callable[[tuple[Any, ...]], str]
# (time.time() when handed over, logger name, render, its arguments)
Entry: TypeAlias = tuple[float, str, Render, tuple[Any, ...]]

log = logging.getLogger("ims_gateway.logs")


class Writer:
    """The thread that formats and writes every log line, in batches."""

    def __init__(self, stream: IO[str], *, interval: float = FLUSH_SECONDS, max_pending: int = MAX_PENDING) -> None:
        self.stream = stream
        self.interval = interval
        self.max_pending = max_pending
        self.formatter = logging.Formatter(FORMAT)
        self.dropped = 0
        self._pending: collections.deque[Entry | logging.LogRecord] = collections.deque()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ims-gateway-log-writer", daemon=True)
        # The time prefix of the second last formatted: most lines of a batch share it.
        self._second = -1
        self._stamp = ""

    # -- the event loop's side: a deque append, nothing else ------------------------

    def put(self, item: Entry | logging.LogRecord) -> None:
        pending = self._pending
        if len(pending) >= self.max_pending:
            self.dropped += 1
            return
        pending.append(item)

    put_nowait = put  # what logging.handlers.QueueHandler calls

    # -- the thread's side ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued and end the thread; idempotent."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        else:
            self.flush()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Format and write everything queued, in one write."""
        pending = self._pending
        lines = []
        while True:
            try:
                item = pending.popleft()
            except IndexError:
                break
            lines.append(self._format(item))
        dropped, self.dropped = self.dropped, 0
        if dropped:
            lines.append(self._line(time.time(), "WARNING", log.name, f"dropped {dropped} log lines: the log output did not keep up"))
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe, closed file): nothing to do
            pass

    def _format(self, item: Entry | logging.LogRecord) -> str:
        try:
            if isinstance(item, logging.LogRecord):
                return self.formatter.format(item) + "\n"
            at, name, render, args = item
            return self._line(at, "INFO", name, render(args))
        except Exception as exc:  # a line that cannot be rendered must not stop the others
            return self._line(time.time(), "ERROR", log.name, f"cannot format a log line: {type(exc).__name__}: {exc}")

    def _line(self, at: float, level: str, name: str, message: str) -> str:
        second = int(at)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.formatter.default_time_format, time.localtime(at))
        return f"{self._stamp},{int((at - second) * 1000):03d} {level} {name} {message}\n"


class _Installed:
    """The writer of this process, once configure() has run."""

    writer: Writer | None = None


class OffLoop:
    """A logger for a line written once per request: rendered and written by the writer's thread.

    ``info(render, *args)`` costs a tuple and a deque append on the loop; ``render(args)``
    makes the message later, in the thread. Levels still apply: the logger's own
    (``logging.getLogger(name).setLevel``) decides whether the line is written at all.
    """

    __slots__ = ("logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.logger = logging.getLogger(name)

    def info(self, render: Render, *args: Any) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        writer = _Installed.writer
        if writer is None:
            self.logger.info("%s", render(args))
        else:
            writer.put((time.time(), self.name, render, args))


def configure(level: str, access_log: bool = True, stream: IO[str] | None = None) -> Writer:
    """Send every log line of this process through one writer thread to ``stream`` (stderr).

    Replaces whatever handlers the root logger had; the writer is stopped (its lines
    written) at exit, or by ``stop()``.
    """
    if _Installed.writer is not None:
        stop()
    writer = Writer(stream if stream is not None else sys.stderr)
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(writer))  # type: ignore[arg-type]
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("ims_gateway.access").setLevel(logging.NOTSET if access_log else logging.WARNING)
    writer.start()
    _Installed.writer = writer
    atexit.unregister(stop)
    atexit.register(stop)  # at exit: what is queued, then logging on the calling thread again
    return writer


def stop() -> None:
    """Write every queued line and go back to logging on the calling thread."""
    writer = _Installed.writer
    if writer is None:
        return
    _Installed.writer = None
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler, logging.handlers.QueueHandler):
            root.removeHandler(handler)
    writer.stop()
    fallback = logging.StreamHandler(writer.stream)
    fallback.setFormatter(writer.formatter)
    root.addHandler(fallback)


_ACCESS_LINE: Final = "%s %s %s %d %.6f %s"


class AccessLog:
    """One line per request: client address, method, route class, status, seconds, request id."""

    __slots__ = ("_log",)

    def __init__(self) -> None:
        self._log = OffLoop("ims_gateway.access")

    def write(self, remote: str | None, method: str, route: str, status: int, seconds: float, request_id: str) -> None:
        self._log.info(_ACCESS_LINE.__mod__, remote, method, route, status, seconds, request_id)


__all__ = ["FORMAT", "AccessLog", "OffLoop", "Writer", "configure", "stop"]
