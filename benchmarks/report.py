"""Results of a run, as a Markdown table with every path's ratio to the aiohttp floor."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Sequence

FLOOR = "aiohttp floor"
GATEWAY = "ims-gateway, 1 worker"  # as shipped: info logging, access log, metrics and report on, uvloop
ACCESS_LOG_OFF = "ims-gateway, 1 worker, access log off"
QUIET = "ims-gateway, 1 worker, access log and metrics off"
ASYNCIO = "ims-gateway, 1 worker, asyncio's loop"
SQLITE = "ims-gateway, 1 worker, report in SQLite"
REDIS = "ims-gateway, 1 worker, report in Redis"
RESIGNING = "ims-gateway, 1 worker, holding the signing key"
# The rates workloads measure these too; the streaming ones only the gateway as shipped.
VARIANTS = (ACCESS_LOG_OFF, QUIET, ASYNCIO, SQLITE, REDIS, RESIGNING)
# The report stores are measured on the image PATCHes only: the only requests that feed them.
STORES = (SQLITE, REDIS)
# The signed workloads are measured on these paths only, and the key holder on nothing else.
SIGNED_PATHS = (FLOOR, GATEWAY, RESIGNING)


@dataclasses.dataclass
class Result:
    """One workload on one path: the medians over the repetitions."""

    workload: str
    path: str
    rate: float  # requests/s or MB/s
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu: float | None = None  # proxy CPU µs per request, or s per GiB
    peak_rss_mib: float | None = None
    errors: int = 0
    # The floor's rate measured just before and just after this path (rates workloads):
    # the other load on the machine moves both alike, so the ratio is taken to this.
    floor_rate: float | None = None


def median_result(samples: Sequence[Result]) -> Result:
    def middle(values: Iterable[float | None]) -> float | None:
        present = [value for value in values if value is not None]
        return statistics.median(present) if present else None

    first = samples[0]
    return Result(
        first.workload,
        first.path,
        statistics.median(sample.rate for sample in samples),
        middle(sample.p50_ms for sample in samples),
        middle(sample.p99_ms for sample in samples),
        middle(sample.cpu for sample in samples),
        max((sample.peak_rss_mib for sample in samples if sample.peak_rss_mib is not None), default=None),
        sum(sample.errors for sample in samples),
        # The median of the per-sample ratios, as a floor rate: rate / floor_rate is that ratio.
        _floor_for_median_ratio(samples),
    )


def _floor_for_median_ratio(samples: Sequence[Result]) -> float | None:
    ratios = [s.rate / s.floor_rate for s in samples if s.floor_rate]
    if not ratios:
        return None
    return statistics.median(s.rate for s in samples) / statistics.median(ratios)


def find(results: Sequence[Result], workload: str, path: str) -> Result | None:
    return next((r for r in results if r.workload == workload and r.path == path), None)


def ratio(results: Sequence[Result], result: Result) -> float | None:
    """The result's rate over the floor's: the floor of its own neighbourhood when it has one."""
    if result.path == FLOOR:
        return 1.0
    if result.floor_rate:
        return result.rate / result.floor_rate
    floor = find(results, result.workload, FLOOR)
    return result.rate / floor.rate if floor and floor.rate else None


def _number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def rates_table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| workload | path | × floor | req/s | p50 ms | p99 ms | proxy CPU µs/req | proxy peak RSS MiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        errors = f" ({r.errors} socket errors)" if r.errors else ""
        lines.append(
            f"| {r.workload} | {r.path}{errors} | **{_number(ratio(results, r), 2)}** | {_number(r.rate)} "
            f"| {_number(r.p50_ms, 2)} | {_number(r.p99_ms, 2)} | {_number(r.cpu)} | {_number(r.peak_rss_mib, 1)} |"
        )
    return lines


def streaming_table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| transfer | path | × floor | MB/s | proxy CPU s/GiB | proxy peak RSS MiB |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.workload} | {r.path} | **{_number(ratio(results, r), 2)}** | {_number(r.rate)} "
            f"| {_number(r.cpu, 2)} | {_number(r.peak_rss_mib, 1)} |"
        )
    return lines


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool | None  # None: not measured in this run


def _ratio_target(results: Sequence[Result], workload: str, minimum: float) -> Target:
    gateway = find(results, workload, GATEWAY)
    value = ratio(results, gateway) if gateway else None
    return Target(
        f"{workload}, as shipped ≥ {minimum}× floor",
        _number(value, 2) + "×" if value is not None else "not measured",
        None if value is None else value >= minimum,
    )


RATE_TARGETS = {"PATCH v2.0": 1.2, "PATCH v2.1": 1.2, "PATCH forbidden": 3.0, "GET image": 1.0}
STREAM_TARGET = 0.9
WORKERS_TARGET = 1.6


def targets(
    rates: Sequence[Result], streams: Sequence[Result], big: Sequence[Result], rss_limit: float, workers: str | None = None
) -> list[Target]:
    """Issue 14's targets, as measured in this run."""
    found = [_ratio_target(rates, workload, minimum) for workload, minimum in RATE_TARGETS.items()]
    for result in streams:
        if result.path == GATEWAY:
            found.append(_ratio_target(streams, result.workload, STREAM_TARGET))
            rss = result.peak_rss_mib
            found.append(Target(f"{result.workload}, peak RSS ≤ {rss_limit:.0f} MiB", f"{_number(rss, 1)} MiB", rss is not None and rss <= rss_limit))
    if workers:
        one, many = find(rates, "PATCH forbidden", GATEWAY), find(rates, "PATCH forbidden", workers)
        if one and many and one.rate:
            scale = many.rate / one.rate
            found.append(Target(f"PATCH forbidden, {workers.removeprefix('ims-gateway, ')} ≥ {WORKERS_TARGET}× 1 worker", f"{scale:.2f}×", scale >= WORKERS_TARGET))
    for result in big:
        direction = result.workload.split()[0]
        small = next((s for s in streams if s.path == GATEWAY and s.workload.split()[0] == direction), None)
        if small and small.peak_rss_mib is not None and result.peak_rss_mib is not None:
            same = result.peak_rss_mib <= small.peak_rss_mib * 1.1 + 2
            found.append(
                Target(
                    f"{result.workload}: peak RSS flat in the size (vs {small.workload})",
                    f"{result.peak_rss_mib:.1f} vs {small.peak_rss_mib:.1f} MiB",
                    same,
                )
            )
    return found


def stores_table(results: Sequence[Result]) -> list[str]:
    """Issue 17's check: the image PATCH path with each report store, beside memory (as shipped)."""
    lines = ["| workload | report in memory (shipped) | in SQLite | in Redis |", "|---|--:|--:|--:|"]
    for workload in ("PATCH v2.0", "PATCH v2.1"):
        cells = []
        for path in (GATEWAY, SQLITE, REDIS):
            result = find(results, workload, path)
            cells.append(_number(ratio(results, result) if result else None, 2))
        if cells[1] != "—" or cells[2] != "—":
            lines.append(f"| {workload} | {' | '.join(cells)} |")
    return lines if len(lines) > 2 else []


def signing_table(results: Sequence[Result]) -> list[str]:
    """Issue 13's check: what a signature costs, against the same PATCH unsigned, each × the floor."""
    lines = [
        "| workload | unsigned, as shipped | signed, key not held: passed through | ÷ unsigned | signed, key held: verified, rewritten, re-signed | ÷ unsigned |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for workload in ("PATCH v2.0", "PATCH v2.1"):
        unsigned = find(results, workload, GATEWAY)
        base = ratio(results, unsigned) if unsigned else None
        cells = [_number(base, 2)]
        for path in (GATEWAY, RESIGNING):
            result = find(results, f"{workload}, AK/SK signed", path)
            value = ratio(results, result) if result else None
            cells += [_number(value, 2), _number(value / base if value and base else None, 2)]
        if cells[1] != "—" or cells[3] != "—":
            lines.append(f"| {workload} | {' | '.join(cells)} |")
    return lines if len(lines) > 2 else []


def levers_table(results: Sequence[Result]) -> list[str]:
    """Issue 14's table: each workload as shipped and with the levers off, × the floor."""
    columns = (GATEWAY, ACCESS_LOG_OFF, QUIET, ASYNCIO)
    lines = [
        "| workload | shipped | access log off | access log and metrics off | asyncio's loop, not uvloop | target |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for workload, minimum in RATE_TARGETS.items():
        cells = []
        for path in columns:
            result = find(results, workload, path)
            value = ratio(results, result) if result else None
            cells.append(_number(value, 2))
        if any(cell != "—" for cell in cells):
            cells[0] = f"**{cells[0]}**"
            lines.append(f"| {workload} | {' | '.join(cells)} | ≥ {minimum:g} |")
    return lines if len(lines) > 2 else []


def targets_table(found: Sequence[Target]) -> list[str]:
    lines = ["| target | measured | met |", "|---|--:|---|"]
    for target in found:
        if target.met is not None:
            lines.append(f"| {target.name} | {target.measured} | {'yes' if target.met else '**no**'} |")
    return lines


def scaling_table(results: Sequence[Result], workers: str) -> list[str]:
    """Each workload's requests/s with N workers over 1 worker."""
    lines = [f"| workload | {workers} ÷ 1 worker |", "|---|--:|"]
    for one in (r for r in results if r.path == GATEWAY):
        many = find(results, one.workload, workers)
        if many and one.rate:
            lines.append(f"| {one.workload} | {many.rate / one.rate:.2f}× |")
    return lines if len(lines) > 2 else []
