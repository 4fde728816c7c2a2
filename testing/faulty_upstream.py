"""A stand-in upstream that misbehaves on command, at the TCP level.

It runs its own event loop in a background thread, so that it serves a gateway running
in another process (or in the test's own loop) and keeps serving across tests. Each
request picks its behaviour with an ``X-Fault`` header (forwarded by the gateway like
any end-to-end header), falling back to ``default_fault``:

    ok               200 with a small JSON body (an image object for GET /v2/images/{id})
    status:CODE      CODE with a JSON error body (500, 503, ...)
    slow:SECONDS     wait, then answer as ok
    silent           read the request, never answer (until the peer goes away)
    reset            read the request, then reset the connection (no answer)
    reset_mid:N      start a response of 1 MiB, send N body bytes, then reset
    truncate:N       Content-Length 1 MiB, send N body bytes, then close normally
    stream:N         200 with N body bytes, sent in 64 KiB writes
    trickle:SECONDS  200 with an endless-looking body (Content-Length 1 GiB) sent in small
                     pieces every SECONDS: a download the client abandons
    sink             read the body (however long it takes) and answer 201 with its size

Every request is recorded (``requests``); every connection's end is recorded too
(``closed``), with whether the peer went away in the middle of a request body or while a
response was being sent: that is how a test sees that the gateway aborted an upstream
exchange.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testing.ports import reusable_listener, stop_listening

MIB = 1024 * 1024


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    fault: str


@dataclass
class Closed:
    """A connection's end: what it was doing when the peer went away."""

    fault: str
    stage: str  # idle, body (peer left mid request body), response (peer left mid response), done
    body_bytes: int = 0


class PeerGone(Exception):
    pass


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    fault: str = ""
    stage: str = "idle"
    body_bytes: int = 0


@dataclass
class FaultyUpstream:
    default_fault: str = "ok"
    requests: list[Received] = field(default_factory=list)
    closed: list[Closed] = field(default_factory=list)
    port: int = 0
    record_bodies: bool = True
    on_request: Callable[[Received], None] | None = None

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-upstream", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        # The listening socket is the harness's own, for its whole life: ``refuse`` stops it
        # listening without letting go of the port, which nothing else can take meanwhile.
        self._listener: socket.socket | None = None
        self._connections: dict[asyncio.StreamWriter, _Connection] = {}
        self._lock = threading.Lock()

    # -- control, from any thread ------------------------------------------------------

    def start(self) -> FaultyUpstream:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> FaultyUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refuse(self) -> None:
        """Stop listening and drop every connection: new connections are refused (the port stays held)."""
        self._call(self._shutdown())

    def accept_if_refusing(self) -> None:
        """Listen again, on the same port (held all along), after ``refuse``."""
        if self._server is None:
            self._call(self._listen())

    def drop_connections(self) -> None:
        """Close every open connection (the gateway's idle pool included)."""
        self._call(self._drop())

    @property
    def open_connections(self) -> int:
        return len(self.stages())

    def stages(self) -> list[str]:
        """What each open connection is doing: idle, body (receiving a request body), response."""
        return self._call(self._stages())

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.closed.clear()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- the server, on its own loop ---------------------------------------------------

    async def _listen(self) -> None:
        if self._listener is None:
            self._listener = reusable_listener(backlog=1024)
            self.port = self._listener.getsockname()[1]
        else:
            self._listener.listen(1024)
        # The server closes its own duplicate when it stops; the port stays with _listener.
        self._server = await asyncio.start_server(self._serve, sock=self._listener.dup())

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            assert self._listener is not None
            stop_listening(self._listener)
        await self._drop()

    async def _drop(self) -> None:
        for writer in list(self._connections):
            writer.close()

    async def _stages(self) -> list[str]:
        return [connection.stage for connection in self._connections.values()]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(reader, writer)
        self._connections[writer] = connection
        try:
            while await self._one_request(connection):
                pass
        except (PeerGone, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.pop(writer, None)
            with self._lock:
                self.closed.append(Closed(connection.fault, connection.stage, connection.body_bytes))
            writer.close()

    async def _one_request(self, connection: _Connection) -> bool:
        reader = connection.reader
        connection.stage = "idle"
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        fault = headers.get("x-fault", self.default_fault)
        connection.fault = fault
        connection.stage = "body"
        connection.body_bytes = 0
        body = await self._read_body(connection, headers, keep=self.record_bodies and not fault.startswith("sink"))
        received = Received(method, path, headers, body, fault)
        with self._lock:
            self.requests.append(received)
        if self.on_request is not None:
            self.on_request(received)
        connection.stage = "response"
        keep_alive = await self._answer(connection, received)
        connection.stage = "done" if not keep_alive else "idle"
        return keep_alive

    async def _read_body(self, connection: _Connection, headers: dict[str, str], keep: bool) -> bytes:
        reader = connection.reader
        parts: list[bytes] = []
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                chunk = await reader.readexactly(size + 2)
                connection.body_bytes += size
                if keep:
                    parts.append(chunk[:-2])
            return b"".join(parts)
        remaining = int(headers.get("content-length", "0"))
        while remaining:
            chunk = await reader.read(min(remaining, 256 * 1024))
            if not chunk:
                raise PeerGone
            remaining -= len(chunk)
            connection.body_bytes += len(chunk)
            if keep:
                parts.append(chunk)
        return b"".join(parts)

    async def _answer(self, connection: _Connection, received: Received) -> bool:
        writer = connection.writer
        name, _, argument = received.fault.partition(":")
        if name == "slow":
            try:
                # Sleeping, but noticing a peer that goes away meanwhile.
                if not await asyncio.wait_for(connection.reader.read(1), float(argument)):
                    raise PeerGone
            except TimeoutError:
                pass
            name = "ok"
        if name == "ok":
            await self._respond(writer, 200, _ok_body(received))
            return True
        if name == "status":
            code = int(argument)
            await self._respond(writer, code, json.dumps({"error": {"code": f"IMG.{code}", "message": "upstream says no"}}).encode())
            return True
        if name == "sink":
            await self._respond(writer, 201, json.dumps({"received": connection.body_bytes}).encode())
            return True
        if name == "silent":
            # Until the peer goes away; a read returns b"" then.
            while await connection.reader.read(65536):
                pass
            raise PeerGone
        if name == "reset":
            _reset(writer)
            return False
        if name in ("reset_mid", "truncate"):
            writer.write(_head(200, MIB, "application/octet-stream"))
            writer.write(b"x" * int(argument))
            await writer.drain()
            await asyncio.sleep(0.05)
            if name == "reset_mid":
                _reset(writer)
            else:
                writer.close()
            return False
        if name == "stream":
            size = int(argument)
            writer.write(_head(200, size, "application/octet-stream"))
            sent = 0
            block = b"s" * 65536
            while sent < size:
                piece = block[: size - sent]
                writer.write(piece)
                sent += len(piece)
                await writer.drain()
            return True
        if name == "trickle":
            writer.write(_head(200, 1024 * MIB, "application/octet-stream"))
            while True:
                writer.write(b"t" * 1024)
                await writer.drain()
                if writer.transport.is_closing():
                    raise PeerGone
                # Between pieces, noticing at once a peer that goes away (a long interval costs nothing).
                try:
                    if not await asyncio.wait_for(connection.reader.read(65536), float(argument)):
                        raise PeerGone
                except TimeoutError:
                    pass
        raise ValueError(f"unknown fault {received.fault!r}")

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        writer.write(_head(status, len(body), "application/json") + body)
        await writer.drain()


def _head(status: int, length: int, content_type: str) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
        f"X-Openstack-Request-Id: req-upstream\r\n\r\n"
    ).encode()


def _ok_body(received: Received) -> bytes:
    if received.method == "GET" and received.path.startswith("/v2/images/"):
        image_id = received.path.rsplit("/", 1)[-1]
        return json.dumps({"id": image_id, "name": "image", "status": "active", "visibility": "private", "team": "a"}).encode()
    return json.dumps({"method": received.method, "size": len(received.body)}).encode()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll until ``predicate`` holds; False if it still does not after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()
