"""Instructions per request, counted by callgrind: a measure this shared machine cannot blur.

wrk's requests/s and even CPU seconds per request move by ±20 % between runs here, more
than most changes to the hot path are worth. valgrind's callgrind counts the instructions
a process executes, the same count for the same code and inputs whatever else runs: one
number per workload and path, repeatable to about 0.1 %. Each path (the floor, the gateway
as shipped, the levers off) runs under callgrind in front of the nginx upstream; a
keep-alive client sends ``--warm-up`` requests, the counters are zeroed, ``--requests``
more are sent and counted (every thread of the process: the log writer's included).

    python -m benchmarks.instructions                      # every workload, about 4 minutes
    python -m benchmarks.instructions --workloads forbidden --paths "floor,1 worker"

"× floor" is the floor's count over the path's: what the requests/s ratio would be if a
request's time were its instructions. It leaves out the kernel (system calls) and the
memory system, so it says which variant executes less, not the final ratio: ``make bench``
measures that. Needs Debian's valgrind and nginx (installed when missing, as root).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import loads, servers
from benchmarks.cost import drive, raw_request
from benchmarks.report import ACCESS_LOG_OFF, FLOOR, GATEWAY, QUIET
from benchmarks.run import VARIANT_ENV, chosen, require_tools, revision, slug

CANNED = "aiohttp's server, a canned 400"
# The paths and the gateway's environment in each, as make bench starts them (None: not
# the gateway). The canned answer is a refusal: measured on the refused PATCH only.
PATHS: Mapping[str, Mapping[str, str] | None] = {
    FLOOR: None,
    GATEWAY: {},
    ACCESS_LOG_OFF: VARIANT_ENV[ACCESS_LOG_OFF],
    QUIET: VARIANT_ENV[QUIET],
    CANNED: None,
}
CANNED_WORKLOAD = "PATCH forbidden"
CONNECTIONS = 4


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests counted per workload and path (default 1000)")
    parser.add_argument("--warm-up", type=int, default=400, help="requests sent first and not counted (default 400)")
    parser.add_argument("--workloads", default="", help="comma-separated words: only the workloads whose name has one")
    parser.add_argument("--paths", default="", help="comma-separated words: only the paths whose name has one")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="paths counted at once (default: nproc)")
    args = parser.parse_args()
    if args.requests < 1 or args.warm_up < 0 or args.jobs < 1:
        parser.error("--requests and --jobs must be at least 1, --warm-up at least 0")
    return args


def command(path: str, port: int, upstream_url: str) -> list[str]:
    if path == FLOOR:
        return servers.floor_command(port, upstream_url)
    if path == CANNED:
        return [sys.executable, "-m", "benchmarks.canned", "--listen", f"127.0.0.1:{port}"]
    return servers.gateway_command(port, upstream_url)


def totals(dump: Path) -> int | None:
    """The instruction count of one callgrind dump file; None while it is not whole yet."""
    try:
        text = dump.read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return None


def count(call: loads.Call, path: str, env: Mapping[str, str] | None, upstream_url: str, args: argparse.Namespace, workdir: Path) -> float:
    """Instructions per request of ``path`` for ``call``, every thread of the process counted."""
    port = servers.free_port()
    name = f"{slug(call.name)}-{slug(path)}"
    out = workdir / f"{name}.callgrind"
    log = workdir / f"{name}.log"
    environment = {**os.environ, **servers.gateway_environment(workdir / f"{name}-state", env)}
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*valgrind, *command(path, port, upstream_url)], stdout=output, stderr=subprocess.STDOUT, cwd=servers.REPO, env=environment
        )
    try:
        servers.wait_listening(port, process, timeout=180)
        request = raw_request(call)
        asyncio.run(drive(port, request, max(args.warm_up, CONNECTIONS), CONNECTIONS))
        subprocess.run(["callgrind_control", "--zero", str(process.pid)], check=True, capture_output=True)
        requests: int = max(args.requests // CONNECTIONS, 1) * CONNECTIONS
        asyncio.run(drive(port, request, requests, CONNECTIONS))
        subprocess.run(["callgrind_control", "--dump", str(process.pid)], check=True, capture_output=True)
        dump = out.with_name(out.name + ".1")  # the first dump asked for; the process writes it
        deadline = time.monotonic() + 60
        while (counted := totals(dump)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"callgrind wrote no whole dump to {dump.name} within 60 s")
            time.sleep(0.2)
        return counted / requests
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        output_tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{path} under callgrind: {exc}; its output ended:\n{output_tail}") from None
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def render(results: Mapping[tuple[str, str], float], paths: list[str], workloads: list[str]) -> str:
    header = "| workload | " + " | ".join(f"{path} (k) | × floor" if path != FLOOR else f"{path} (k)" for path in paths) + " |"
    rule = "|---|" + "|".join("--:|--:" if path != FLOOR else "--:" for path in paths) + "|"
    rows = [header, rule]
    for workload in workloads:
        floor = results.get((workload, FLOOR))
        cells = []
        for path in paths:
            value = results.get((workload, path))
            cells.append("—" if value is None else f"{value / 1000:.0f}")
            if path != FLOOR:
                cells.append(f"{floor / value:.2f}" if floor and value else "—")
        rows.append(f"| {workload} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main() -> int:
    args = arguments()
    require_tools(("valgrind", "nginx"))
    calls = [call for call in loads.CALLS if chosen(call.name, args.workloads)]
    paths = [path for path in PATHS if chosen(path, args.paths)]
    if not calls or not paths:
        raise SystemExit("no workload or no path chosen: see --workloads and --paths")
    with servers.spool() as area, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        upstream = servers.upstream(workdir, area)
        try:
            jobs = [(call, path) for call in calls for path in paths if path != CANNED or call.name == CANNED_WORKLOAD]
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                futures = {job: pool.submit(count, job[0], job[1], PATHS[job[1]], upstream.url, args, workdir) for job in jobs}
                results = {(call.name, path): future.result() for (call, path), future in futures.items()}
        finally:
            upstream.stop()
    print(f"instructions per request (k), {args.requests} requests each, callgrind; git {revision()}\n")
    print(render(results, paths, [call.name for call in calls]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
