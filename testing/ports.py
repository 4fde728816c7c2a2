"""Loopback ports a test holds for as long as it relies on them.

A port found free and then closed can be taken before it is used: by another test's
client connection (the kernel hands the same ephemeral range to outgoing connections), by
another engineer's server on a shared machine. A test that means "nothing listens here"
or "the upstream never answers" holds a socket on the port for as long as that must stay
true; a server started for a test binds port 0 and says which port it got.

    with refusing_port() as port:      # connect: ECONNREFUSED, every time
    with unanswered_port() as port:    # connect: no answer at all (the handshake never completes)
    listener = reusable_listener()     # listen, stop listening (refused), listen again: one port
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port on which every connection is refused, held until the block ends.

    The socket is bound and never listens: the kernel answers a SYN with a reset, and no
    other socket can bind the port meanwhile (this one has no SO_REUSEADDR).
    """
    with socket.socket() as held:
        held.bind((LOOPBACK, 0))
        yield held.getsockname()[1]


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port on which a connection attempt gets no answer until the block ends.

    A listener with a backlog of 0 never accepts; one connection, completed before the
    block starts, fills its accept queue. Linux drops every further SYN while the queue is
    full (no SYN-ACK, no reset), so a client's connect neither succeeds nor fails: only
    its own timeout ends it. Nothing here depends on timing.
    """
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Blocking, so the queue is full before anything else connects.
        with socket.create_connection((LOOPBACK, port), timeout=10):
            yield port


def reusable_listener(backlog: int = 1024) -> socket.socket:
    """A listening loopback socket whose port stays this socket's while it stops and starts listening.

    ``stop_listening`` makes new connections refused; ``listener.listen()`` takes them
    again, on the same port. Bound to port 0, Linux would give the port back when the
    socket leaves the LISTEN state (an automatically chosen port is not locked), so the
    port is found with a first socket and bound by number with a second one.
    """
    with socket.socket() as finder:
        finder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        finder.bind((LOOPBACK, 0))
        listener = socket.socket()
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(finder.getsockname())  # both reuse the address and neither listens: allowed
        except BaseException:
            listener.close()
            raise
    listener.listen(backlog)
    return listener


def stop_listening(listener: socket.socket) -> None:
    """Refuse new connections from now on; connections waiting in the queue are reset.

    On Linux ``shutdown(SHUT_RD)`` takes a listening socket out of the LISTEN state and
    leaves it bound, so ``listen()`` serves the same port again.
    """
    listener.shutdown(socket.SHUT_RD)




# A gateway's start line, logged once both listeners are bound: the ports it got.
GATEWAY_STARTED = re.compile(r"listening on https?://127\.0\.0\.1:(\d+) \(admin on http://127\.0\.0\.1:(\d+)\)")


def started_ports(output: Callable[[], str], process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 30.0) -> tuple[int, int]:
    """The (traffic, admin) ports a gateway started on port 0 says it listens on.

    ``output`` reads what the process has written so far (its log file, its collected pipe).
    """
    deadline = time.monotonic() + timeout
    while (found := GATEWAY_STARTED.search(output())) is None:
        assert process.poll() is None, f"the gateway exited with {process.returncode}:\n{output()}"
        assert time.monotonic() < deadline, f"no start line in {timeout} s:\n{output()}"
        time.sleep(0.02)
    return int(found[1]), int(found[2])


__all__ = ["GATEWAY_STARTED", "LOOPBACK", "refusing_port", "reusable_listener", "started_ports", "stop_listening", "unanswered_port"]
