"""The migration report: who still calls the deprecated image PATCH, from where, doing what.

Metrics aggregate; a client owner needs specifics. Every image PATCH call
(``calls.DeprecatedCall``) is folded into a bounded table keyed by (client label, source
address, X-Project-Id), served as JSON or HTML on the admin listener's /deprecations.
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import hdrs, web

from gateway.telemetry.calls import DeprecatedCall, utc

Key = tuple[str, str, str | None]


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
        }


class MigrationReport:
    """The clients seen using the deprecated API, at most ``max_clients`` of them.

    When full, the least recently seen entry makes room for a new one.
    """

    def __init__(self, max_clients: int, clock: Callable[[], float] = time.time) -> None:
        self.max_clients = max_clients
        self.clock = clock
        self.evicted = 0
        self._entries: OrderedDict[Key, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, call: DeprecatedCall, times: int = 1, first_seen: float | None = None) -> None:
        """Count ``times`` alike calls, seen from ``first_seen`` (default: ``call.at``) to ``call.at``."""
        key = (call.client, call.address, call.project_id)
        entry = self._entries.get(key)
        if entry is None:
            self._make_room(self.max_clients - 1)
            first = call.at if first_seen is None else first_seen
            entry = Entry(call.client, call.address, call.project_id, call.user_agent, call.forwarded_for, first, call.at)
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

    def entries(self) -> list[Entry]:
        """Most calls first, then most recently seen."""
        return sorted(self._entries.values(), key=lambda e: (-e.count, -e.last_seen))

    def document(self) -> dict[str, Any]:
        return {
            "generated_at": utc(self.clock()),
            "scope": "this gateway process since it started",
            "max_clients": self.max_clients,
            "evicted": self.evicted,
            "clients": [entry.document() for entry in self.entries()],
        }


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
)  # fmt: skip


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def _row(entry: Entry) -> str:
    cells = (
        entry.client, entry.user_agent or "", entry.address, entry.forwarded_for or "", entry.project_id or "",
        str(entry.count), _counts(entry.shapes), _counts(entry.modes), _counts(entry.ops), _counts(entry.attributes),
        _counts(entry.outcomes), _counts(entry.signatures), entry.access_key or "", utc(entry.first_seen), utc(entry.last_seen),
    )  # fmt: skip
    return "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


def render_html(report: MigrationReport) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in _COLUMNS)
    rows = "\n".join(_row(entry) for entry in report.entries())
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>ims-gateway: deprecated API clients</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:2px 6px;text-align:left;vertical-align:top}</style></head><body>\n"
        "<h1>Clients still using PATCH /v2/images/{image_id}</h1>\n"
        f"<p>This gateway process, generated {utc(report.clock())}; {len(report)} of at most "
        f"{report.max_clients} entries, {report.evicted} evicted.</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n{rows}\n</tbody></table></body></html>\n"
    )


def handler(
    report: MigrationReport, before: Callable[[], None] | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The admin listener's /deprecations: JSON, or HTML for a client that prefers it.

    ``before`` runs first at every read (the metrics fold their tally into the report).
    """

    async def deprecations(request: web.Request) -> web.Response:
        if before is not None:
            before()
        if prefers_html(",".join(request.headers.getall(hdrs.ACCEPT, ()))):
            response = web.Response(text=render_html(report), content_type="text/html", charset="utf-8")
            # The page shows client-controlled strings: escaped, and nothing may run anyway.
            response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        else:
            response = web.json_response(report.document())
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers[hdrs.VARY] = hdrs.ACCEPT
        return response

    return deprecations


__all__ = ["Entry", "MigrationReport", "handler", "prefers_html", "render_html"]
