"""The migration report: who still calls the deprecated image PATCH, from where, doing what.

Metrics aggregate; a client owner needs specifics. Every image PATCH call
(``calls.DeprecatedCall``) is folded into a bounded table keyed by (client label, source
address, X-Project-Id), served as JSON or HTML on the admin listener's /deprecations.
This module is one process's table and the views of a report (``Snapshot``); where the
fleet's report is kept and how it is read is ``gateway.telemetry.fleet``'s.
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aiohttp import hdrs, web

from gateway.telemetry.calls import DeprecatedCall, utc

Key = tuple[str, str, str | None]

# The counters of an entry, and the prefix of each in a store's flat "prefix:value" names.
COUNTERS: Final = (
    ("shapes", "shape"), ("modes", "mode"), ("ops", "op"),
    ("attributes", "attribute"), ("outcomes", "outcome"), ("signatures", "signature"),
)  # fmt: skip
MEMORY_SCOPE: Final = "this gateway process since it started"


@dataclass(slots=True)
class Entry:
    client: str
    address: str
    project_id: str | None
    user_agent: str | None
    forwarded_for: str | None
    first_seen: float
    last_seen: float
    count: int = 0
    shapes: Counter[str] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    ops: Counter[str] = field(default_factory=Counter)
    attributes: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    signatures: Counter[str] = field(default_factory=Counter)
    access_key: str | None = None
    last_seen_by: str | None = None  # the replica that saw the latest call

    @classmethod
    def first(cls, call: DeprecatedCall, replica: str | None = None) -> Entry:
        """A new entry for ``call``'s key, with nothing counted yet (``add`` it)."""
        return cls(
            call.client, call.address, call.project_id, call.user_agent, call.forwarded_for, call.at, call.at,
            last_seen_by=replica,
        )

    @property
    def key(self) -> Key:
        return (self.client, self.address, self.project_id)

    def add(self, call: DeprecatedCall, times: int = 1) -> None:
        """Count ``call`` (``times`` alike calls, the last at ``call.at``)."""
        self.count += times
        self.last_seen = max(self.last_seen, call.at)
        self.user_agent = call.user_agent
        self.forwarded_for = call.forwarded_for
        self.shapes[call.shape] += times
        self.modes[call.mode] += times
        self.outcomes[call.outcome] += times
        for op, count in call.ops.items():
            self.ops[op] += count * times
        for attribute, count in call.attributes.items():
            self.attributes[attribute] += count * times
        if call.signature is not None:
            self.signatures[call.signature] += times
            self.access_key = call.access_key

    def document(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "user_agent": self.user_agent,
            "address": self.address,
            "forwarded_for": self.forwarded_for,
            "project_id": self.project_id,
            "count": self.count,
            "shapes": dict(self.shapes),
            "modes": dict(self.modes),
            "ops": dict(self.ops),
            "attributes": dict(self.attributes),
            "outcomes": dict(self.outcomes),
            "signatures": dict(self.signatures),
            "access_key": self.access_key,
            "first_seen": utc(self.first_seen),
            "last_seen": utc(self.last_seen),
            "last_seen_by": self.last_seen_by,
        }

    def merge(self, other: Entry) -> None:
        """Add ``other``, the same key's calls counted elsewhere (a batch, another process)."""
        self.count += other.count
        for name, _ in COUNTERS:
            getattr(self, name).update(getattr(other, name))
        self.first_seen = min(self.first_seen, other.first_seen)
        if other.last_seen >= self.last_seen:
            self.last_seen = other.last_seen
            self.user_agent, self.forwarded_for = other.user_agent, other.forwarded_for
            self.access_key = other.access_key or self.access_key
            self.last_seen_by = other.last_seen_by or self.last_seen_by

    def copy(self) -> Entry:
        copied = Entry(
            self.client, self.address, self.project_id, self.user_agent, self.forwarded_for, self.first_seen,
            self.last_seen, self.count, access_key=self.access_key, last_seen_by=self.last_seen_by,
        )  # fmt: skip
        for name, _ in COUNTERS:
            getattr(copied, name).update(getattr(self, name))
        return copied

    def counters(self) -> dict[str, int]:
        """Every counter as one flat name: {"shape:v2.0": 3, "outcome:rewritten": 2, ...}."""
        return {f"{prefix}:{value}": n for name, prefix in COUNTERS for value, n in getattr(self, name).items()}

    def count_flat(self, name: str, n: int) -> None:
        """Add ``n`` to the counter ``name`` names ("shape:v2.0"); an unknown prefix is ignored (another version's)."""
        prefix, _, value = name.partition(":")
        attribute = _COUNTER_OF.get(prefix)
        if attribute is not None and value:
            getattr(self, attribute)[value] += n


_COUNTER_OF: Final = {prefix: name for name, prefix in COUNTERS}


def most_calls_first(entries: Iterable[Entry]) -> list[Entry]:
    """Most calls first, then most recently seen."""
    return sorted(entries, key=lambda e: (-e.count, -e.last_seen))


@dataclass(slots=True)
class StoreStatus:
    """What /deprecations says of the store it was read from, and of this process's part in it."""

    kind: str  # memory, sqlite, redis
    location: str  # shown: never a password
    answered: bool = True
    problem: str | None = None
    flushed_at: float | None = None  # this process's last batch the store took
    pending_calls: int = 0  # this process's calls not in the store yet (they are in the view)
    dropped_calls: int = 0  # this process's calls that found no room while the store was away

    def document(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "location": self.location,
            "answered": self.answered,
            "problem": self.problem,
            "flushed_at": utc(self.flushed_at) if self.flushed_at is not None else None,
            "pending_calls": self.pending_calls,
            "dropped_calls": self.dropped_calls,
        }


@dataclass(slots=True)
class Snapshot:
    """A report as read at one moment: from one process's table, or from a store."""

    entries: list[Entry]  # most calls first
    generated_at: float
    scope: str
    max_clients: int
    evicted: int
    expired: int
    retention: str
    store: StoreStatus
    replicas: list[tuple[str, float]] = field(default_factory=list)  # (name, its last flush), latest first

    def document(self) -> dict[str, Any]:
        return {
            "generated_at": utc(self.generated_at),
            "scope": self.scope,
            "max_clients": self.max_clients,
            "evicted": self.evicted,
            "expired": self.expired,
            "retention": self.retention,
            "store": self.store.document(),
            "replicas": [{"replica": name, "flushed_at": utc(at)} for name, at in self.replicas],
            "clients": [entry.document() for entry in self.entries],
        }


class MigrationReport:
    """The clients one process saw using the deprecated API, at most ``max_clients`` of them.

    When full, the least recently seen entry makes room for a new one; an entry not seen for
    ``retention`` seconds is dropped when the table is next read or expired.
    """

    def __init__(
        self,
        max_clients: int,
        clock: Callable[[], float] = time.time,
        *,
        retention: float = float("inf"),
        replica: str | None = None,
    ) -> None:
        self.max_clients = max_clients
        self.clock = clock
        self.retention = retention
        self.replica = replica
        self.evicted = 0
        self.expired = 0
        self._entries: OrderedDict[Key, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, call: DeprecatedCall, times: int = 1, first_seen: float | None = None) -> None:
        """Count ``times`` alike calls, seen from ``first_seen`` (default: ``call.at``) to ``call.at``."""
        key = (call.client, call.address, call.project_id)
        entry = self._entries.get(key)
        if entry is None:
            self._make_room(self.max_clients - 1)
            entry = Entry.first(call, self.replica)
            if first_seen is not None:
                entry.first_seen = first_seen
            self._entries[key] = entry
        else:
            self._entries.move_to_end(key)
        entry.add(call, times)

    def resize(self, max_clients: int) -> None:
        self.max_clients = max_clients
        self._make_room(max_clients)

    def _make_room(self, keep: int) -> None:
        while len(self._entries) > keep:
            self._entries.popitem(last=False)
            self.evicted += 1

    def expire(self, now: float) -> None:
        """Drop the entries not seen for ``retention`` seconds (the least recently seen come first)."""
        cutoff = now - self.retention
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.last_seen > cutoff:
                break
            self._entries.popitem(last=False)
            self.expired += 1

    def entries(self) -> list[Entry]:
        """Most calls first, then most recently seen."""
        return most_calls_first(self._entries.values())

    def snapshot(self, store: StoreStatus | None = None, scope: str = MEMORY_SCOPE, retention: str = "") -> Snapshot:
        now = self.clock()
        self.expire(now)
        return Snapshot(
            entries=[entry.copy() for entry in self.entries()],
            generated_at=now,
            scope=scope,
            max_clients=self.max_clients,
            evicted=self.evicted,
            expired=self.expired,
            retention=retention,
            store=store or StoreStatus("memory", "memory"),
        )

    def document(self) -> dict[str, Any]:
        return self.snapshot().document()


# -- /deprecations -----------------------------------------------------------------

_MEDIA_RANGE: Final = re.compile(r"\s*([^;,\s]+)\s*((?:;[^,]*)?)")
_QUALITY: Final = re.compile(r";\s*q\s*=\s*([^;]*)", re.IGNORECASE)
_QVALUE: Final = re.compile(r"0(?:\.\d{0,3})?|1(?:\.0{0,3})?")


def _quality(accept: str, media_type: str) -> float:
    """The q-value ``accept`` gives ``media_type`` (the most specific range wins)."""
    kind = media_type.split("/", 1)[0] + "/*"
    best_specificity, best_q = -1, 0.0
    for item in accept.split(","):
        match = _MEDIA_RANGE.match(item)
        if match is None:
            continue
        media_range = match.group(1).lower()
        specificity = {media_type: 2, kind: 1, "*/*": 0}.get(media_range, -1)
        if specificity <= best_specificity:
            continue
        q = _QUALITY.search(match.group(2))
        text = q.group(1).strip() if q else "1"
        # An unreadable weight counts as "not acceptable" rather than as the default 1.
        quality = float(text) if _QVALUE.fullmatch(text) else 0.0
        best_specificity, best_q = specificity, quality
    return best_q


def prefers_html(accept: str | None) -> bool:
    """True when the client ranks text/html above application/json (a browser); JSON otherwise."""
    if not accept:
        return False
    return _quality(accept, "text/html") > _quality(accept, "application/json")


_COLUMNS: Final = (
    "client", "user agent", "address", "forwarded for", "project", "calls",
    "shapes", "modes", "ops", "attributes", "outcomes", "signatures", "access key", "first seen", "last seen",
    "last seen by",
)  # fmt: skip


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def _row(entry: Entry) -> str:
    cells = (
        entry.client, entry.user_agent or "", entry.address, entry.forwarded_for or "", entry.project_id or "",
        str(entry.count), _counts(entry.shapes), _counts(entry.modes), _counts(entry.ops), _counts(entry.attributes),
        _counts(entry.outcomes), _counts(entry.signatures), entry.access_key or "", utc(entry.first_seen), utc(entry.last_seen),
        entry.last_seen_by or "",
    )  # fmt: skip
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


def describe(snapshot: Snapshot) -> str:
    """One sentence on where the report comes from and how fresh it is (the page's and the terminal's)."""
    store = snapshot.store
    where = f"{snapshot.scope}; store {store.location}"
    if not store.answered:
        where += f" (did not answer: {store.problem})"
    replicas = ", ".join(f"{name} {utc(at)}" for name, at in snapshot.replicas)
    return (
        f"{where}; generated {utc(snapshot.generated_at)}; {len(snapshot.entries)} of at most {snapshot.max_clients} "
        f"entries, {snapshot.evicted} evicted, {snapshot.expired} expired"
        + (f" (retention {snapshot.retention})" if snapshot.retention else "")
        + (f"; last flushes: {replicas}" if replicas else "")
        + "."
    )


def render_html(snapshot: Snapshot) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in _COLUMNS)
    rows = "\n".join(_row(entry) for entry in snapshot.entries)
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ims-gateway: deprecated API clients</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:2px 6px;text-align:left;vertical-align:top}</style></head><body>\n"
        "<h1>Clients still using PATCH /v2/images/{image_id}</h1>\n"
        f"<p>{html.escape(describe(snapshot))}</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table></body></html>\n"
    )


class Readable(Protocol):
    """What /deprecations reads: ``fleet.FleetReport``."""

    async def read(self) -> Snapshot: ...


def handler(report: Readable, before: Callable[[], None] | None = None) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The admin listener's /deprecations: JSON, or HTML for a client that prefers it.

    ``before`` runs first at every read (the metrics fold their tally into the report).
    """

    async def deprecations(request: web.Request) -> web.Response:
        if before is not None:
            before()
        snapshot = await report.read()
        if prefers_html(",".join(request.headers.getall(hdrs.ACCEPT, ()))):
            response = web.Response(text=render_html(snapshot), content_type="text/html", charset="utf-8")
            # The page shows client-controlled strings: escaped, and nothing may run anyway.
            response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        else:
            response = web.json_response(snapshot.document())
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers[hdrs.VARY] = hdrs.ACCEPT
        return response

    return deprecations


__all__ = [
    "COUNTERS", "Entry", "MigrationReport", "Readable", "Snapshot", "StoreStatus",
    "describe", "handler", "most_calls_first", "prefers_html", "render_html",
]  # fmt: skip
