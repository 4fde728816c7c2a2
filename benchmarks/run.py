"""One benchmark run: start every path, measure every workload, write and print the tables.

    python -m benchmarks                 # the full run (about 24 minutes on 2 cores)
    python -m benchmarks --quick         # a short run to check the suite itself
    python -m benchmarks --only streaming --size-mib 1024 --big   # issue 2's streaming check, 4 GiB too

Paths are measured interleaved: for each workload the floor runs before the first path and
after every path, and each path's ratio is to the mean of the floor runs just before and
just after it, so that load from other processes on the machine (it is shared) weighs on
both sides of the ratio alike. Compare a path with the floor of the same run only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from benchmarks import loads, report, servers
from benchmarks.report import (
    ACCESS_LOG_OFF,
    ASYNCIO,
    FLOOR,
    GATEWAY,
    QUIET,
    REDIS,
    RESIGNING,
    SIGNED_PATHS,
    SQLITE,
    STORES,
    VARIANTS,
    Result,
)
from testing.report_stores import RedisServer, store_environment

GIB = 1024**3
RSS_LIMIT_MIB = 64.0
VARIANT_ENV = {
    ACCESS_LOG_OFF: {"IMS_GATEWAY_LOGGING_ACCESS_LOG": "false"},
    QUIET: {"IMS_GATEWAY_LOGGING_ACCESS_LOG": "false", "IMS_GATEWAY_METRICS_ENABLED": "false"},
    ASYNCIO: {"IMS_GATEWAY_SERVER_EVENT_LOOP": "asyncio"},
}
DIRECT = "direct to nginx upstream"
NGINX = "nginx reverse proxy"
DOWNLOAD_ID = "bench-download"
UPLOAD_ID = "bench-upload"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("rates", "streaming"), help="run one half of the suite")
    parser.add_argument("--paths", help="comma-separated words: measure only the paths whose name has one (e.g. floor,1 worker)")
    parser.add_argument("--workloads", help="comma-separated words: measure only the workloads whose name has one (e.g. v2.0,forbidden)")
    parser.add_argument("--quick", action="store_true", help="2 s runs and 256 MiB transfers: check the suite, not the gateway")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per workload and path (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every wrk measurement, report medians (default 1)")
    parser.add_argument("--size-mib", type=int, default=1024, help="bytes each way in the streaming workloads (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="transfers per path and direction, median reported (default 3)")
    parser.add_argument("--big", action="store_true", help="also stream 4 GiB each way through ims-gateway: RSS must not grow")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="ims-gateway workers for the N-worker path (default: nproc)")
    parser.add_argument("--no-pinning", action="store_true", help="leave every process to the scheduler")
    parser.add_argument("--out", type=Path, default=servers.REPO / "bench-results", help="where results go (default bench-results/)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.size_mib, args.repeat = 2, 256, 1
    if args.no_pinning:
        os.environ[servers.NO_PINNING] = "1"
    return args


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    placement = (
        f"the proxy under test alone on CPU {servers.PROXY_CPUS[0]}, wrk, curl and the nginx upstream on CPU "
        f"{','.join(map(str, servers.DRIVER_CPUS))}, N workers on all"
        if servers.pinned(["x"], servers.PROXY_CPUS) != ["x"]
        else "no CPU pinning"
    )
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}; "
        f"{placement}; load average before the run {load}"
    )


class Paths:
    """The servers a run measures, by the name the table shows."""

    def __init__(self, workdir: Path, upstream: servers.Server) -> None:
        self.workdir = workdir
        self.upstream = upstream
        self.proxies: dict[str, servers.Server] = {}
        self.notes: list[str] = []
        self.only = ""

    def add(self, name: str, starting: Callable[[], servers.Server]) -> None:
        try:
            self.proxies[name] = starting()
        except RuntimeError as exc:
            self.notes.append(f"{name}: not measured: {str(exc).splitlines()[-1]}")
            print(f"!! {name} not started: {exc}", file=sys.stderr)

    def measured(self, *, variants: bool = True, stores: bool = False, signed: bool = False) -> list[tuple[str, str, servers.Server | None]]:
        """(name, url, proxy server or None for the direct path); ``variants``: the levers-off
        paths too; ``stores``: the report-store paths too; ``signed``: the signed-call paths only."""
        rows: list[tuple[str, str, servers.Server | None]] = [] if signed else [(DIRECT, self.upstream.url, None)]
        for name, server in self.proxies.items():
            if signed:
                wanted = name in SIGNED_PATHS
            else:
                wanted = (name not in VARIANTS or variants) and (name not in STORES or stores) and name != RESIGNING
            if wanted:
                rows.append((name, server.url, server))
        return [row for row in rows if chosen(row[0], self.only)]

    def stop(self) -> None:
        for name, server in self.proxies.items():
            code = server.stop()
            if code not in (0, -15):
                self.notes.append(f"{name} exited with {code} on SIGTERM (see {server.log})")


@contextlib.contextmanager
def started(args: argparse.Namespace, workdir: Path, area: servers.Spool) -> Iterator[Paths]:
    upstream = servers.upstream(workdir, area)
    paths = Paths(workdir, upstream)
    paths.only = args.paths or ""
    redis: RedisServer | None = None
    try:
        if args.only != "streaming" and chosen(REDIS, paths.only):
            try:
                redis = RedisServer(workdir / "redis").start()
            except (OSError, RuntimeError) as exc:
                paths.notes.append(f"{REDIS}: not measured: redis-server did not start ({str(exc).splitlines()[0]})")
        VARIANT_ENV[SQLITE] = store_environment("sqlite", workdir)
        VARIANT_ENV[RESIGNING] = {"IMS_GATEWAY_SIGNING_CREDENTIALS_FILE": str(loads.credentials_file(workdir))}
        if redis is not None:
            VARIANT_ENV[REDIS] = store_environment("redis", workdir, redis.url)
        workers = f"ims-gateway, {args.workers} workers"
        wanted = {
            NGINX: lambda: servers.nginx_proxy(workdir, upstream),
            FLOOR: lambda: servers.floor(workdir, upstream),
            GATEWAY: lambda: servers.gateway("gateway-1", workdir, upstream),
            workers: lambda: servers.gateway(f"gateway-{args.workers}", workdir, upstream, workers=args.workers),
            **{
                name: (lambda name=name: servers.gateway(f"gateway-1-{slug(name)}", workdir, upstream, env=VARIANT_ENV[name]))
                for name in VARIANTS
            },
        }
        if args.workers <= 1:
            del wanted[workers]
        if args.only == "streaming":
            for name in VARIANTS:
                del wanted[name]
        if redis is None:
            wanted.pop(REDIS, None)
        for name, starting in wanted.items():
            if chosen(name, paths.only):
                paths.add(name, starting)
        yield paths
    finally:
        paths.stop()
        upstream.stop()
        if redis is not None:
            redis.stop()


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.removeprefix("ims-gateway, 1 worker, ")).strip("-")


def chosen(name: str, only: str) -> bool:
    """Whether ``name`` has one of the comma-separated words of ``only`` (every name when empty)."""
    return not only or any(word.strip() in name for word in only.split(","))


def measure_rates(args: argparse.Namespace, paths: Paths) -> list[Result]:
    samples: dict[tuple[str, str], list[Result]] = {}
    for workload in (call for call in (*loads.CALLS, *loads.SIGNED_CALLS) if chosen(call.name, args.workloads or "")):
        call = loads.signed_now(workload)  # a signed call is signed just before it is measured
        rows = paths.measured(stores=call.name in ("PATCH v2.0", "PATCH v2.1"), signed=call.signed)
        for name, url, _ in rows:
            loads.check_call(url, call, call.expected_status(name))
        floor = next((row for row in rows if row[0] == FLOOR), None)
        others = [row for row in rows if row[0] != FLOOR]

        def measure(row: tuple[str, str, servers.Server | None], call: loads.Call = call) -> Result:
            name, url, proxy = row
            loads.wrk(url, call, connections=args.connections, seconds=1)  # warm-up: pools, caches
            pids = proxy.pids() if proxy else []
            servers.reset_peak_rss(pids)
            cpu_before = servers.cpu_seconds(pids)
            rate = loads.wrk(url, call, connections=args.connections, seconds=args.seconds)
            cpu = (servers.cpu_seconds(pids) - cpu_before) / rate.requests * 1e6 if proxy else None
            sample = Result(call.name, name, rate.per_second, rate.p50_ms, rate.p99_ms, cpu, servers.peak_rss_mib(pids) if proxy else None, rate.errors)
            samples.setdefault((call.name, name), []).append(sample)
            print(f"  {call.name:16} {name:48} {rate.per_second:9.0f} req/s  p99 {rate.p99_ms:6.2f} ms", flush=True)
            return sample

        for _ in range(args.rounds):
            before = measure(floor) if floor else None
            for row in others:
                sample = measure(row)
                after = measure(floor) if floor else None
                if before and after:
                    sample.floor_rate = (before.rate + after.rate) / 2
                before = after
    return [report.median_result(group) for group in samples.values()]


def measure_streaming(args: argparse.Namespace, paths: Paths, area: servers.Spool, size: int, only_gateway: bool = False) -> list[Result]:
    label = f"{size / GIB:g} GiB" if size >= GIB else f"{size // 1024**2} MiB"
    download_path = area.download(DOWNLOAD_ID, size)
    upload_path = f"/v2/images/{UPLOAD_ID}/file"
    source = area.source(size)
    rows = [row for row in paths.measured(variants=False) if not only_gateway or row[0] in (GATEWAY, DIRECT)]
    results = []
    for direction in ("download", "upload"):
        for name, url, proxy in rows:
            samples = []
            for _ in range(args.repeat):
                pids = proxy.pids() if proxy else []
                servers.reset_peak_rss(pids)
                cpu_before = servers.cpu_seconds(pids)
                if direction == "download":
                    transfer = loads.download(url, download_path, size)
                else:
                    transfer = loads.upload(url, upload_path, source)
                    stored = area.www / upload_path.lstrip("/")
                    if stored.stat().st_size != size:
                        raise RuntimeError(f"upload via {name}: the upstream stored {stored.stat().st_size} of {size} bytes")
                    area.discard_uploads(UPLOAD_ID)
                cpu = (servers.cpu_seconds(pids) - cpu_before) / (size / GIB) if proxy else None
                samples.append(Result(f"{direction} {label}", name, transfer.mb_per_second, cpu=cpu, peak_rss_mib=servers.peak_rss_mib(pids) if proxy else None))
                print(f"  {direction} {label:8} {name:40} {transfer.mb_per_second:8.0f} MB/s  RSS {_show(samples[-1].peak_rss_mib)} MiB", flush=True)
            results.append(report.median_result(samples))
    source.unlink()
    return results


def _show(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def render(args: argparse.Namespace, when: str, host: str, rates: list[Result], streams: list[Result], big: list[Result], notes: list[str]) -> str:
    lines = [f"# ims-gateway benchmark, {when}", "", f"Machine: {host}.", ""]
    workers = f"ims-gateway, {args.workers} workers"
    found = [target for target in report.targets(rates, streams, big, RSS_LIMIT_MIB, workers) if target.met is not None]
    levers = report.levers_table(rates)
    if levers:
        lines += [
            "## Requests/s as shipped and with each lever off, × the aiohttp floor measured just before and after",
            "",
            *levers,
            "",
        ]
    if found:
        lines += ["## Targets (issue 14), measured in this run", "", *report.targets_table(found), ""]
    stores = report.stores_table(rates)
    if stores:
        lines += ["## The migration report's stores on the image PATCH path (issue 17), × the floor", "", *stores, ""]
    signed = report.signing_table(rates)
    if signed:
        lines += ["## AK/SK signed image PATCHes (issue 13), × the floor, and ÷ the same PATCH unsigned", "", *signed, ""]
    if rates:
        lines += [
            f"## Requests/s: wrk, {args.connections} connections, {args.seconds} s per path, median of {args.rounds}",
            "",
            *report.rates_table(rates),
            "",
        ]
    scaling = report.scaling_table([*rates, *streams], f"ims-gateway, {args.workers} workers")
    if scaling:
        lines += ["## Scaling over workers", "", *scaling, ""]
    if streams or big:
        lines += [
            f"## Streaming: curl, one transfer at a time, median of {args.repeat}",
            "",
            *report.streaming_table([*streams, *big]),
            "",
        ]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def _missing_tools(tools: tuple[str, ...]) -> list[str]:
    return [tool for tool in tools if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())]


def require_tools(tools: tuple[str, ...] = ("nginx", "wrk", "curl")) -> None:
    """The Debian tools a benchmark drives: installed with apt-get when missing and running as root, else a clear exit."""
    missing = _missing_tools(tools)
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {', '.join(missing)} with apt-get", flush=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=False)
        missing = _missing_tools(tools)
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (Debian, as root: apt-get install {' '.join(missing)})")


def main() -> int:
    args = arguments()
    require_tools()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    stamp = when.replace(" ", "T").replace(":", "")
    workdir = (args.out / stamp).resolve()
    workdir.mkdir(parents=True)
    host = machine()
    print(f"{host}\nresults in {workdir}", flush=True)
    rates: list[Result] = []
    streams: list[Result] = []
    big: list[Result] = []
    with servers.spool() as area, started(args, workdir, area) as paths:
        if args.only != "streaming":
            rates = measure_rates(args, paths)
        if args.only != "rates":
            streams = measure_streaming(args, paths, area, args.size_mib * 1024**2)
            if args.big:
                big = measure_streaming(args, paths, area, 4 * GIB, only_gateway=True)
        notes = paths.notes
    notes += [
        "ims-gateway as shipped: logging at info with the access log and the per-call lines "
        f"(to its log file), metrics and the migration report on, uvloop; git {revision()}"
    ]
    text = render(args, when, host, rates, streams, big, notes)
    (workdir / "results.md").write_text(text)
    (workdir / "results.json").write_text(json.dumps([asdict(r) for r in [*rates, *streams, *big]], indent=2))
    shutil.copyfile(workdir / "results.md", args.out / "latest.md")
    print("\n" + text)
    return 0


def revision() -> str:
    finished = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=servers.REPO)
    return finished.stdout.strip() or "unknown"
