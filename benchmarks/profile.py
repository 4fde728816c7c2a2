"""Profile ims-gateway (1 worker) under one wrk workload with py-spy.

    .venv/bin/pip install py-spy     # for profiling only; not a dependency of the gateway
    python -m benchmarks.profile "PATCH v2.0" --seconds 10

Writes bench-results/profile-<workload>.txt: the functions where the gateway spends its
time, with and without what they call (py-spy's sampling, native frames excluded).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from benchmarks import loads, servers

_LINE = re.compile(r":\d+\)$")


# Where a sample's innermost frame is, by file: the share of the CPU each part takes.
COMPONENTS = (
    ("socket writes and reads (system calls)", ("_SelectorSocketTransport.write", "sock_recv", "_read_ready", "selectors.py")),
    ("logging (on the loop and in the writer thread)", ("gateway/telemetry/logs.py", "logging/")),
    ("metrics and the migration report", ("gateway/telemetry/", "prometheus_client/")),
    ("PATCH parsing, policy, rewrite", ("gateway/patch/", "json/")),
    ("upstream client (own pool, httptools)", ("gateway/edge/pool.py", "httptools")),
    ("aiohttp client", ("aiohttp/client", "aiohttp/connector.py", "aiohttp/payload.py", "yarl/")),
    ("aiohttp server, request and response objects", ("aiohttp/",)),
    ("other gateway code", ("gateway/",)),
    ("asyncio event loop", ("asyncio/",)),
)


def component(frame: str) -> str:
    return next((name for name, marks in COMPONENTS if any(mark in frame for mark in marks)), "other")


def components(samples: Path) -> str:
    """Self time by component (innermost frame), in percent of all samples."""
    shares: collections.Counter[str] = collections.Counter()
    for line in samples.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        shares[component(stack.split(";")[-1])] += int(weight)
    total = sum(shares.values())
    return "\n".join(f"{100 * n / total:6.1f}  {name}" for name, n in shares.most_common()) + "\n"


def top(samples: Path, count: int = 40) -> str:
    """Self and total sample counts per function from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples_seen = 0
    for line in samples.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        samples_seen += int(weight)
        own[frames[-1]] += int(weight)
        for frame in set(frames):
            total[frame] += int(weight)
    lines = [f"{samples_seen} samples", "", "self %  function"]
    lines += [f"{100 * n / samples_seen:6.1f}  {frame}" for frame, n in own.most_common(count)]
    lines += ["", "total %  function (with what it calls)"]
    lines += [f"{100 * n / samples_seen:6.1f}  {frame}" for frame, n in total.most_common(count)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=[call.name for call in loads.CALLS])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--floor", action="store_true", help="profile the aiohttp floor instead, to compare")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment for the gateway")
    parser.add_argument("--out", type=Path, default=servers.REPO / "bench-results")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    call = next(call for call in loads.CALLS if call.name == args.workload)
    slug = call.name.lower().replace(" ", "-").replace(".", "") + ("-floor" if args.floor else "")
    workdir = args.out / f"profile-{slug}"
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(item.split("=", 1) for item in args.env)
    with servers.spool() as area:
        upstream = servers.upstream(workdir, area)
        gateway = servers.floor(workdir, upstream) if args.floor else servers.gateway("gateway-1", workdir, upstream, env=env)
        try:
            loads.check_call(gateway.url, call, 200 if args.floor else call.gateway_status)
            loads.wrk(gateway.url, call, connections=args.connections, seconds=1)
            collapsed = workdir / "collapsed.txt"
            recorder = subprocess.Popen(
                [spy, "record", "--format", "raw", "--rate", "250", "--duration", str(args.seconds),
                 "--output", str(collapsed), "--pid", str(gateway.process.pid), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )
            load = threading.Thread(target=loads.wrk, args=(gateway.url, call), kwargs={"connections": args.connections, "seconds": args.seconds})
            load.start()
            recorder.wait()
            load.join()
        finally:
            gateway.stop()
            upstream.stop()
    summary = "self %  component\n" + components(collapsed) + "\n" + top(collapsed)
    (args.out / f"profile-{slug}.txt").write_text(summary)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
