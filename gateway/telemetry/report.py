"""The migration report: who still calls the deprecated image PATCH, from where, doing what.

Metrics aggregate; a client owner needs specifics. Every ``PATCH /v2/images/{id}`` (both
body shapes and unsupported ones: the whole API is deprecated) becomes one
``DeprecatedCall``, folded into a bounded, per-process table keyed by (client label,
source address, X-Project-Id) and written as one JSON log line. Credentials are never
read here: only the User-Agent, X-Forwarded-For and X-Project-Id headers are.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import hdrs, web

log = logging.getLogger("ims_gateway.deprecated")

X_PROJECT_ID: Final = "X-Project-Id"
X_FORWARDED_FOR: Final = "X-Forwarded-For"
USER_AGENT_LIMIT: Final = 256
FORWARDED_FOR_LIMIT: Final = 256
PROJECT_ID_LIMIT: Final = 128
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]")


def sample(text: str | None, limit: int) -> str | None:
    """A header value fit to show: printable ASCII only, at most ``limit`` characters."""
    if text is None:
        return None
    cleaned = _UNPRINTABLE.sub("?", text[: limit + 1])
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


@dataclass(frozen=True, slots=True)
class DeprecatedCall:
    """One image PATCH, as the report and the log line tell it (bounded, printable values)."""

    at: float
    request_id: str
    client: str
    user_agent: str | None
    address: str
    forwarded_for: str | None
    project_id: str | None
    shape: str
    mode: str
    outcome: str
    reason: str | None
    status: int | None
    ops: Mapping[str, int]
    attributes: Mapping[str, int]

    @classmethod
    def of(
        cls,
        request: web.Request,
        *,
        request_id: str,
        client: str,
        shape: str,
        mode: str,
        outcome: str,
        reason: str | None,
        status: int | None,
        changes: Iterable[tuple[str, str]],
        at: float,
    ) -> DeprecatedCall:
        """``changes`` is (op, attribute class) for each operation of the body."""
        headers = request.headers
        ops: dict[str, int] = {}
        attributes: dict[str, int] = {}
        for op, attribute in changes:
            ops[op] = ops.get(op, 0) + 1
            attributes[attribute] = attributes.get(attribute, 0) + 1
        return cls(
            at=at,
            request_id=request_id,
            client=client,
            user_agent=sample(headers.get(hdrs.USER_AGENT), USER_AGENT_LIMIT),
            address=request.remote or "",
            forwarded_for=sample(headers.get(X_FORWARDED_FOR), FORWARDED_FOR_LIMIT),
            project_id=sample(headers.get(X_PROJECT_ID), PROJECT_ID_LIMIT),
            shape=shape,
            mode=mode,
            outcome=outcome,
            reason=reason,
            status=status,
            ops=ops,
            attributes=attributes,
        )

    def log_record(self) -> dict[str, Any]:
        return {
            "event": "deprecated_call",
            "time": utc(self.at),
            "request_id": self.request_id,
            "client": self.client,
            "user_agent": self.user_agent,
            "address": self.address,
            "forwarded_for": self.forwarded_for,
            "project_id": self.project_id,
            "shape": self.shape,
            "mode": self.mode,
            "outcome": self.outcome,
            "reason": self.reason,
            "status": self.status,
            "ops": dict(self.ops),
            "attributes": dict(self.attributes),
        }


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

    def add(self, call: DeprecatedCall) -> None:
        self.count += 1
        self.last_seen = call.at
        self.user_agent = call.user_agent
        self.forwarded_for = call.forwarded_for
        self.shapes[call.shape] += 1
        self.modes[call.mode] += 1
        self.outcomes[call.outcome] += 1
        for op, count in call.ops.items():
            self.ops[op] += count
        for attribute, count in call.attributes.items():
            self.attributes[attribute] += count

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

    def record(self, call: DeprecatedCall) -> None:
        key = (call.client, call.address, call.project_id)
        entry = self._entries.get(key)
        if entry is None:
            self._make_room(self.max_clients - 1)
            entry = Entry(
                call.client, call.address, call.project_id, call.user_agent, call.forwarded_for, call.at, call.at
            )
            self._entries[key] = entry
        else:
            self._entries.move_to_end(key)
        entry.add(call)

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


def write_log_line(call: DeprecatedCall) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("%s", json.dumps(call.log_record(), separators=(",", ":")))


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
    "shapes", "modes", "ops", "attributes", "outcomes", "first seen", "last seen",
)  # fmt: skip


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def _row(entry: Entry) -> str:
    cells = (
        entry.client, entry.user_agent or "", entry.address, entry.forwarded_for or "", entry.project_id or "",
        str(entry.count), _counts(entry.shapes), _counts(entry.modes), _counts(entry.ops), _counts(entry.attributes),
        _counts(entry.outcomes), utc(entry.first_seen), utc(entry.last_seen),
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


def handler(report: MigrationReport) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The admin listener's /deprecations: JSON, or HTML for a client that prefers it."""

    async def deprecations(request: web.Request) -> web.Response:
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


__all__ = ["DeprecatedCall", "Entry", "MigrationReport", "handler", "prefers_html", "render_html", "sample", "write_log_line"]
