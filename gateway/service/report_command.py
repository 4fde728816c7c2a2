"""``ims-gateway report``: the migration report in a terminal, read from the configured store.

A shared store (sqlite, redis) is read directly, whether gateways run or not: what every
replica has flushed. With the memory store the only report is a running gateway's own
table, so the command asks that gateway's admin listener for /deprecations and says so.
Exit 0 with the report; 1 with one line when it cannot be read; 2 for a bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from gateway import config
from gateway.config.schema import Settings, SettingsError
from gateway.telemetry.calls import sample
from gateway.telemetry.report import Snapshot, StoreStatus, most_calls_first
from gateway.telemetry.stores import spec
from gateway.telemetry.stores.base import Bounds, Stored
from gateway.telemetry.stores.sqlite_store import SqliteStore

if TYPE_CHECKING:
    from gateway.telemetry.stores.redis_store import RedisStore

STORED_SCOPE: Final = "every gateway sharing this store, as each replica last flushed"
# The columns of --csv: the JSON fields of an entry, in their order.
CSV_FIELDS: Final = (
    "client", "user_agent", "address", "forwarded_for", "project_id", "count", "shapes", "modes", "ops",
    "attributes", "outcomes", "signatures", "access_key", "first_seen", "last_seen", "last_seen_by",
)  # fmt: skip
# The table: (heading, field, widest shown).
TABLE: Final = (
    ("CLIENT", "client", 32), ("ADDRESS", "address", 39), ("PROJECT", "project_id", 32), ("CALLS", "count", 10),
    ("SHAPES", "shapes", 32), ("OUTCOMES", "outcomes", 48), ("LAST SEEN", "last_seen", 20), ("BY", "last_seen_by", 32),
)  # fmt: skip
# A cell a spreadsheet would run as a formula (a client picks its User-Agent).
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


class Unreadable(Exception):
    """The report could not be read; the message says from where and why, never a password."""


def add_parser(commands: Any) -> None:
    report = commands.add_parser("report", help="print the migration report from the configured store")
    report.add_argument("--config", metavar="FILE", help="TOML config file (see config/gateway.toml)")
    formats = report.add_mutually_exclusive_group()
    formats.add_argument("--json", dest="format", action="store_const", const="json", help="the /deprecations JSON document")
    formats.add_argument("--csv", dest="format", action="store_const", const="csv", help="one row per entry, for scripts")


def run(args: argparse.Namespace) -> int:
    try:
        settings = config.load(args.config)
    except SettingsError as exc:
        print(f"ims-gateway: {exc}", file=sys.stderr)
        return 2
    try:
        document = read(settings, os.environ)
    except Unreadable as exc:
        print(f"ims-gateway report: {exc}", file=sys.stderr)
        return 1
    render = {"json": as_json, "csv": as_csv}.get(args.format or "", as_table)
    sys.stdout.write(render(document))
    return 0


def read(settings: Settings, environ: Mapping[str, str]) -> dict[str, Any]:
    """The report's JSON document, from the store ``settings`` name (or a running gateway's memory)."""
    report = settings.report
    store = spec.effective(spec.parse_store(report.store), settings.server.workers, environ)
    if store.kind == spec.MEMORY:
        return _from_gateway(settings)
    bounds = Bounds(time.time(), report.max_clients, report.retention_seconds)
    if store.kind == spec.SQLITE and store.path is not None:
        sqlite = SqliteStore(store.path, report.store_timeout, create=False)
        try:
            stored = sqlite.read_now(bounds)
        except (OSError, sqlite3.Error) as exc:
            raise Unreadable(f"cannot read {store.shown}: {exc}") from None
        finally:
            sqlite.close_now()
    else:
        from gateway.telemetry.stores.redis_store import RedisStore  # redis-py only when used

        stored = asyncio.run(_from_redis(RedisStore(store.url, report.store_timeout), bounds))
    status = StoreStatus(store.kind, store.shown)
    snapshot = Snapshot(
        most_calls_first(stored.entries), bounds.now, STORED_SCOPE, report.max_clients, stored.evicted,
        stored.expired, report.retention, status, stored.replicas,
    )  # fmt: skip
    return snapshot.document()


async def _from_redis(store: RedisStore, bounds: Bounds) -> Stored:
    try:
        async with asyncio.timeout(store.timeout):
            return await store.read(bounds)
    except TimeoutError:
        raise Unreadable(f"{store.shown} did not answer within {store.timeout:g} s") from None
    except Exception as exc:
        raise Unreadable(f"cannot read {store.shown}: {store.hide(f'{type(exc).__name__}: {exc}')}") from None
    finally:
        await store.close()


def _from_gateway(settings: Settings) -> dict[str, Any]:
    admin = settings.server.admin_listen
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(admin.host, admin.host)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{admin.port}/deprecations"
    print(f"ims-gateway report: report.store is memory: reading the running gateway's {url} (its own calls only)", file=sys.stderr)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=max(settings.report.store_timeout, 5.0)) as response:
            document = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise Unreadable(f"{url} answered {exc.code}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreadable(f"no gateway answered at {url}: {reason}") from None
    if not isinstance(document, dict) or not isinstance(document.get("clients"), list):
        raise Unreadable(f"{url} did not answer with a migration report")
    return document


# -- formats --------------------------------------------------------------------------


def as_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ";".join(f"{name}={count}" for name, count in sorted(value.items()))
    return str(value)


def as_csv(document: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for entry in document["clients"]:
        cells = [_cell(entry.get(name)) for name in CSV_FIELDS]
        writer.writerow(["'" + cell if cell.startswith(_FORMULA_START) else cell for cell in cells])
    return out.getvalue()


def _shown(value: Any, limit: int) -> str:
    text = ", ".join(f"{name} {count}" for name, count in sorted(value.items())) if isinstance(value, dict) else _cell(value)
    return sample(text, limit) or ""


def as_table(document: dict[str, Any]) -> str:
    store = document.get("store") or {}
    where = f"{document.get('scope', '')}; store {store.get('location', '?')}"
    if store.get("answered") is False:
        where += f" (did not answer: {store.get('problem')})"
    clients = document["clients"]
    head = (
        f"Clients still using PATCH /v2/images/{{image_id}}: {where}; generated {document.get('generated_at')}; "
        f"{len(clients)} of at most {document.get('max_clients')} entries, {document.get('evicted', 0)} evicted, "
        f"{document.get('expired', 0)} expired (retention {document.get('retention') or '-'})."
    )
    rows = [[heading for heading, _, _ in TABLE]]
    rows += [[_shown(entry.get(name), limit) for _, name, limit in TABLE] for entry in clients]
    widths = [max(len(row[column]) for row in rows) for column in range(len(TABLE))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if not clients:
        lines.append("(no deprecated calls seen)")
    return head + "\n\n" + "\n".join(lines) + "\n"
