"""Plain numbers per family and label values, and the Prometheus view made of them at scrape time.

A request adds to dictionaries of numbers and does nothing else; prometheus-client sees
them only through ``Collector``, when something reads the registry. Only series a request
(or the configuration) has touched exist: nothing is exported at zero that nothing counted.

With several worker processes (``serve --workers N``) each worker writes its numbers to a
file of a shared directory about once a second and when it stops; whichever worker is
scraped adds its own live numbers to everyone else's files. Counters and histograms of a
worker that died stay counted; its gauges are dropped (``forget_gauges``).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from gateway.telemetry.families import DURATION_BUCKETS, FAMILIES, Combine, Family, Kind

Labels = tuple[str, ...]
# Prometheus writes bucket bounds as Go formats floats: 0.005, 1.0, 3600.0.
_BUCKET_BOUNDS: Final = (*(repr(float(bound)) for bound in DURATION_BUCKETS), "+Inf")
_BY_NAME: Final = {family.name: family for family in FAMILIES}


class Histogram:
    """One histogram series: a count per bucket (not cumulative) and the sum of observations."""

    __slots__ = ("buckets", "sum")

    def __init__(self, buckets: list[int] | None = None, total: float = 0.0) -> None:
        self.buckets = buckets if buckets is not None else [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = total

    def observe(self, seconds: float) -> None:
        # A bucket's bound is inclusive: 0.005 s belongs to le="0.005".
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.sum += seconds

    def add(self, other: Histogram) -> None:
        self.buckets = [mine + theirs for mine, theirs in zip(self.buckets, other.buckets, strict=True)]
        self.sum += other.sum


class Counts:
    """What one process counted: ``values[family][labels]`` (counters, gauges) and ``histograms``."""

    __slots__ = ("histograms", "values")

    def __init__(self) -> None:
        self.values: dict[Family, defaultdict[Labels, float]] = {
            family: defaultdict(float) for family in FAMILIES if family.kind is not Kind.HISTOGRAM
        }
        self.histograms: dict[Family, defaultdict[Labels, Histogram]] = {
            family: defaultdict(Histogram) for family in FAMILIES if family.kind is Kind.HISTOGRAM
        }

    def document(self, *, gauges: bool) -> dict[str, Any]:
        """A JSON-able copy: counters and histograms, or only the gauges."""
        document: dict[str, Any] = {}
        for family, series in self.values.items():
            if series and (family.kind is Kind.GAUGE) == gauges:
                document[family.name] = [[list(labels), value] for labels, value in series.items()]
        if not gauges:
            for family, histograms in self.histograms.items():
                if histograms:
                    document[family.name] = [[list(labels), h.buckets, h.sum] for labels, h in histograms.items()]
        return document

    def merge_document(self, document: dict[str, Any], combine_gauges: bool) -> None:
        """Add a worker's document to these numbers (its gauges combined as each family says)."""
        for name, rows in document.items():
            family = _BY_NAME.get(name)
            if family is None:
                continue  # written by another version of the gateway
            if family.kind is Kind.HISTOGRAM:
                for labels, buckets, total in rows:
                    self.histograms[family][tuple(labels)].add(Histogram(list(buckets), float(total)))
                continue
            series = self.values[family]
            for labels, value in rows:
                key = tuple(labels)
                if family.kind is Kind.COUNTER:
                    series[key] += value
                elif combine_gauges and key in series:
                    series[key] = _combine(family.combine, series[key], value)
                else:
                    series[key] = value

    def copy(self) -> Counts:
        copied = Counts()
        copied.merge_document(self.document(gauges=False), combine_gauges=False)
        copied.merge_document(self.document(gauges=True), combine_gauges=False)
        return copied


def _combine(how: Combine, first: float, second: float) -> float:
    if how is Combine.MAX:
        return max(first, second)
    if how is Combine.MIN:
        return min(first, second)
    return first + second


def families_of(counts: Counts) -> Iterator[Metric]:
    """The Prometheus families of ``counts``, in declaration order, without _created series."""
    for family in FAMILIES:
        if family.kind is Kind.HISTOGRAM:
            histograms = counts.histograms[family]
            if histograms:
                yield _histogram(family, histograms)
            continue
        series = counts.values[family]
        if not series:
            continue
        metric: CounterMetricFamily | GaugeMetricFamily
        if family.kind is Kind.COUNTER:
            metric = CounterMetricFamily(family.full_name, family.help, labels=family.labels)
        else:
            metric = GaugeMetricFamily(family.full_name, family.help, labels=family.labels)
        for labels, value in series.items():
            metric.add_metric(labels, value)
        yield metric


def _histogram(family: Family, histograms: dict[Labels, Histogram]) -> HistogramMetricFamily:
    metric = HistogramMetricFamily(family.full_name, family.help, labels=family.labels)
    for labels, histogram in histograms.items():
        cumulative, buckets = 0, []
        for bound, count in zip(_BUCKET_BOUNDS, histogram.buckets, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        metric.add_metric(labels, buckets, histogram.sum)
    return metric


class Collector:
    """prometheus-client's custom collector: the view of ``counts`` (and of the other workers').

    ``before`` runs first at every collection (the metrics fold their tally into ``counts``).
    """

    def __init__(self, counts: Counts, share: WorkerShare | None = None, before: Callable[[], None] | None = None) -> None:
        self.counts = counts
        self.share = share
        self.before = before

    def collect(self) -> Iterable[Metric]:
        if self.before is not None:
            self.before()
        if self.share is None:
            return families_of(self.counts)
        return families_of(self.share.everyone(self.counts))


class WorkerShare:
    """The directory where the workers of one ``serve --workers N`` leave their numbers."""

    COUNTS = "ims-gateway-counts-{pid}.json"
    GAUGES = "ims-gateway-gauges-{pid}.json"

    def __init__(self, directory: Path, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = pid if pid is not None else os.getpid()

    def publish(self, counts: Counts) -> None:
        """Write this worker's numbers (atomically: a reader never sees half a file)."""
        _write(self.directory / self.COUNTS.format(pid=self.pid), counts.document(gauges=False))
        _write(self.directory / self.GAUGES.format(pid=self.pid), counts.document(gauges=True))

    def everyone(self, own: Counts) -> Counts:
        """This worker's live numbers plus every other worker's last published ones."""
        total = own.copy()
        for path in sorted(self.directory.glob("ims-gateway-*.json")):
            if path.name in (self.COUNTS.format(pid=self.pid), self.GAUGES.format(pid=self.pid)):
                continue
            document = _read(path)
            if document is not None:
                total.merge_document(document, combine_gauges=True)
        return total


def forget_gauges(directory: Path, pid: int) -> None:
    """Drop a dead worker's gauges; its counters and histograms stay counted."""
    with contextlib.suppress(FileNotFoundError):
        (directory / WorkerShare.GAUGES.format(pid=pid)).unlink()


def clear(directory: Path) -> None:
    """Remove every worker's numbers: a directory reused for a new run must not add old counts."""
    for leftover in directory.glob("ims-gateway-*.json"):
        leftover.unlink()


def read_counts(path: Path) -> Counts:
    """One worker's published file (tests and tools)."""
    counts = Counts()
    counts.merge_document(_read(path) or {}, combine_gauges=False)
    return counts


def _write(path: Path, document: dict[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, separators=(",", ":")))
    os.replace(partial, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # removed meanwhile, or not ours
    return document if isinstance(document, dict) else None
