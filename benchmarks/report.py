"""Results of a run, as a Markdown table with every path's ratio to the aiohttp floor."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Sequence

FLOOR = "aiohttp floor"
GATEWAY = "ims-gateway, 1 worker"
METRICS_OFF = "ims-gateway, 1 worker, metrics off"


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
    )


def find(results: Sequence[Result], workload: str, path: str) -> Result | None:
    return next((r for r in results if r.workload == workload and r.path == path), None)


def ratio(results: Sequence[Result], result: Result) -> float | None:
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
        f"{workload}, 1 worker ≥ {minimum}× floor",
        _number(value, 2) + "×" if value is not None else "not measured",
        None if value is None else value >= minimum,
    )


def targets(rates: Sequence[Result], streams: Sequence[Result], big: Sequence[Result], rss_limit: float) -> list[Target]:
    found = [
        _ratio_target(rates, "PATCH v2.0", 1.2),
        _ratio_target(rates, "PATCH v2.1", 1.2),
        _ratio_target(rates, "PATCH forbidden", 3.0),
    ]
    for result in streams:
        if result.path == GATEWAY:
            found.append(_ratio_target(streams, result.workload, 0.9))
            rss = result.peak_rss_mib
            found.append(Target(f"{result.workload}, 1 worker peak RSS ≤ {rss_limit:.0f} MiB", f"{_number(rss, 1)} MiB", rss is not None and rss <= rss_limit))
    for workload in ("PATCH v2.0", "PATCH v2.1"):
        on, off = find(rates, workload, GATEWAY), find(rates, workload, METRICS_OFF)
        if on and off:
            cost = 1 - on.rate / off.rate
            found.append(Target(f"{workload}: metrics cost ≤ 10% of req/s", f"{cost:.1%}", cost <= 0.10))
    for result in big:
        direction = result.workload.split()[0]
        small = next((s for s in streams if s.path == GATEWAY and s.workload.split()[0] == direction), None)
        if small and small.peak_rss_mib is not None and result.peak_rss_mib is not None:
            same = result.peak_rss_mib <= small.peak_rss_mib * 1.1 + 2
            found.append(
                Target(
                    f"{result.workload}, 1 worker: peak RSS same as {small.workload}",
                    f"{result.peak_rss_mib:.1f} vs {small.peak_rss_mib:.1f} MiB",
                    same,
                )
            )
    return found


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
