"""CPU per request, measured in one process: for A/B comparisons while optimising.

wrk, nginx and the proxy share this machine's cores with whatever else runs, and
requests/s follows the scheduler as much as the proxy. Here a canned upstream, the
proxy under test and a raw HTTP/1.1 client share one event loop: the process's CPU time
per request is the proxy's cost plus a constant (the client and the upstream), so the
difference between two variants is the difference in their cost.

    python -m benchmarks.cost --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable

from aiohttp import web

from benchmarks import floor, loads
from benchmarks.servers import IMAGE_JSON
from gateway import config
from gateway.edge.server import GatewayRunner
from gateway.service.app import build_app, runner_options
from gateway.telemetry import logs

ANSWER = (
    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(IMAGE_JSON)}\r\n\r\n{IMAGE_JSON}"
).encode()


class CannedUpstream(asyncio.Protocol):
    """Answers every request head with the example image; counts nothing, checks nothing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(ANSWER)


async def drive(port: int, request: bytes, count: int, connections: int) -> None:
    """``count`` requests over ``connections`` keep-alive connections, one at a time on each."""
    per_connection = count // connections

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per_connection):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.lower().find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            await reader.readexactly(length)
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))


def raw_request(call: loads.Call) -> bytes:
    headers = "Host: bench\r\nX-Auth-Token: bench-token\r\n"
    if call.content_type:
        headers += f"Content-Type: {call.content_type}\r\n"
    body = call.body.encode()
    if body:
        headers += f"Content-Length: {len(body)}\r\n"
    return f"{call.method} {loads.IMAGE_PATH} HTTP/1.1\r\n{headers}\r\n".encode() + body


async def measure(make_runner: Callable[[str], web.BaseRunner], call: loads.Call, count: int, connections: int) -> float:
    """CPU µs per request for the proxy ``make_runner`` builds in front of the canned upstream."""
    loop = asyncio.get_running_loop()
    upstream = await loop.create_server(CannedUpstream, "127.0.0.1", 0)
    upstream_url = f"http://127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
    runner = make_runner(upstream_url)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    request = raw_request(call)
    try:
        await drive(port, request, min(count, 2000), connections)  # warm-up: pools, caches
        gc.collect()
        started = time.process_time()
        await drive(port, request, count, connections)
        return (time.process_time() - started) / count * 1e6
    finally:
        await runner.cleanup()
        upstream.close()


def gateway_runner(**sections: dict[str, object]) -> Callable[[str], web.BaseRunner]:
    def make(upstream_url: str) -> web.BaseRunner:
        raw: dict[str, dict[str, object]] = {"upstream": {"url": upstream_url}}
        for name, table in sections.items():
            raw[name] = {**raw.get(name, {}), **table}
        settings = config.build(raw)
        return GatewayRunner(build_app(settings), **runner_options(settings))

    return make


def floor_runner(upstream_url: str) -> web.BaseRunner:
    return web.AppRunner(floor.build_app(upstream_url), access_log=None, auto_decompress=False)


VARIANTS: dict[str, Callable[[str], web.BaseRunner]] = {
    "aiohttp floor": floor_runner,
    "ims-gateway": gateway_runner(),
    "ims-gateway, metrics off": gateway_runner(metrics={"enabled": False}),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is shown")
    parser.add_argument("--workloads", default="PATCH,GET", help="comma-separated words picking workloads")
    args = parser.parse_args()
    # As shipped: info, the access log and the per-call lines on, formatted and written by
    # the log thread (to a file nobody reads, as a log collector would take them).
    with tempfile.TemporaryFile("w") as log_file:
        logs.configure("info", access_log=True, stream=log_file)
        try:
            run(args)
        finally:
            logs.stop()


def run(args: argparse.Namespace) -> None:
    calls = [call for call in loads.CALLS if any(word in call.name for word in args.workloads.split(","))]
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for call in calls:
            for name, make in VARIANTS.items():
                cost = asyncio.run(measure(make, call, args.requests, args.connections))
                results.setdefault((call.name, name), []).append(cost)
    print("| workload | variant | CPU µs/request (client and upstream included) | spread |")
    print("|---|---|--:|--:|")
    for (workload, name), costs in results.items():
        print(f"| {workload} | {name} | {statistics.median(costs):.0f} | {min(costs):.0f}–{max(costs):.0f} |")


if __name__ == "__main__":
    main()
