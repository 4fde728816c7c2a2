"""A tiny loopback HTTP server that records raw requests, for watching what the SDK sends.

    with CaptureServer(responses) as server:   # responses: path prefix -> (status, headers, body)
        ... point ImsClient at server.url ...
        server.requests  # list of RawRequest
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class RawRequest:
    raw: bytes
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Content-Type", "application/json")])


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 409: "Conflict", 500: "Internal Server Error", 503: "Service Unavailable"}


class CaptureServer:
    def __init__(self, replies: dict[str, Reply] | None = None) -> None:
        self.replies = replies or {}
        self.requests: list[RawRequest] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                self._handle(conn)
            except (TimeoutError, ConnectionError):
                pass

    def _handle(self, conn: socket.socket) -> None:
        buf = b""
        while True:  # keep-alive: several requests may come on one connection
            while b"\r\n\r\n" not in buf:
                if self._stop.is_set():
                    return
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
            length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
            while len(buf) < length:
                buf += conn.recv(65536)
            body, buf = buf[:length], buf[length:]
            # header bytes are UTF-8 on the wire; decode like a server that keeps unknown bytes
            headers = [(k, v.encode("latin-1").decode("utf-8", "surrogateescape")) for k, v in headers]
            self.requests.append(RawRequest(head + b"\r\n\r\n" + body, method, target, headers, body))
            reply = next((r for prefix, r in self.replies.items() if target.startswith(prefix)), Reply())
            response = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'X')}"]
            response += [f"{k}: {v}" for k, v in reply.headers]
            response += [f"Content-Length: {len(reply.body)}", "", ""]
            conn.sendall("\r\n".join(response).encode("latin-1") + reply.body)


def error_reply(status: int, code: str, message: str, request_id: str | None = "req-0123456789") -> Reply:
    headers = [("Content-Type", "application/json")]
    if request_id:
        headers.append(("X-Request-Id", request_id))
    return Reply(status, json.dumps({"error": {"code": code, "message": message}}).encode(), headers)
