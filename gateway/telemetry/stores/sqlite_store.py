"""The report in one SQLite file: shared by the workers of one machine, kept across restarts.

Every flush is one write transaction (WAL journal, so readers never wait for it) of UPSERTs,
run on a thread of the store's own so the event loop never blocks on the file; a worker
that finds the file locked waits at most ``report.store_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import quote

from gateway.telemetry.report import Entry
from gateway.telemetry.stores.base import BATCH_MEMORY_SECONDS, MAX_REPLICAS, Batch, Bounds, Stored, entry_id

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    address TEXT NOT NULL,
    project_id TEXT,
    user_agent TEXT,
    forwarded_for TEXT,
    access_key TEXT,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_seen_by TEXT,
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_last_seen ON entries (last_seen);
CREATE TABLE IF NOT EXISTS counters (
    entry TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (entry, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS replicas (name TEXT PRIMARY KEY, flushed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS applied (process TEXT PRIMARY KEY, batch TEXT NOT NULL, at REAL NOT NULL);
"""

# The latest call's facts come from the side that saw it last; SET reads the row as it was.
UPSERT_ENTRY: Final = """
INSERT INTO entries (id, client, address, project_id, user_agent, forwarded_for, access_key,
                     first_seen, last_seen, last_seen_by, count)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    count = count + excluded.count,
    first_seen = min(first_seen, excluded.first_seen),
    user_agent = CASE WHEN excluded.last_seen >= last_seen THEN excluded.user_agent ELSE user_agent END,
    forwarded_for = CASE WHEN excluded.last_seen >= last_seen THEN excluded.forwarded_for ELSE forwarded_for END,
    access_key = CASE WHEN excluded.last_seen >= last_seen AND excluded.access_key IS NOT NULL
                      THEN excluded.access_key ELSE access_key END,
    last_seen_by = CASE WHEN excluded.last_seen >= last_seen THEN excluded.last_seen_by ELSE last_seen_by END,
    last_seen = max(last_seen, excluded.last_seen)
"""
UPSERT_COUNTER: Final = """
INSERT INTO counters (entry, name, n) VALUES (?, ?, ?)
ON CONFLICT (entry, name) DO UPDATE SET n = n + excluded.n
"""
ADD_TOTAL: Final = "INSERT INTO totals (name, n) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET n = n + excluded.n"


class SqliteStore:
    """``sqlite:///PATH``: the file is made (0600, its directory too) on the first flush."""

    kind = "sqlite"

    def __init__(self, path: Path, timeout: float, *, create: bool = True) -> None:
        self.path = path
        self.timeout = timeout
        self.create = create
        self.shown = f"sqlite://{path}"
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        # One thread owns the connection: the loop hands it work and never touches the file.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ims-gateway-report")

    def hide(self, text: str) -> str:
        return text

    async def apply(self, batch: Batch, bounds: Bounds) -> None:
        await self._run(self.apply_now, batch, bounds)

    async def read(self, bounds: Bounds) -> Stored:
        return await self._run(self.read_now, bounds)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._run(self.close_now), self.timeout)
        finally:
            self._thread.shutdown(wait=False)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    # -- on the store's thread (or in a command that owns the store) -----------------

    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    def _open(self) -> sqlite3.Connection:
        if self.create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            target, uri = str(self.path), False
        else:
            if not self.path.is_file():
                raise FileNotFoundError(f"no such file: {self.path}")
            target, uri = f"file:{quote(str(self.path))}?mode=ro", True
        connection = sqlite3.connect(target, timeout=self.timeout, isolation_level=None, check_same_thread=False, uri=uri)
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            if self.create:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.executescript(SCHEMA)
        except sqlite3.Error:
            connection.close()
            raise
        return connection

    def apply_now(self, batch: Batch, bounds: Bounds) -> None:
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM applied WHERE process = ? AND batch = ?", (batch.process, batch.id)).fetchone() is None:
                self._add(db, batch, bounds)
                db.execute(
                    "INSERT INTO applied (process, batch, at) VALUES (?, ?, ?)"
                    " ON CONFLICT (process) DO UPDATE SET batch = excluded.batch, at = excluded.at",
                    (batch.process, batch.id, bounds.now),
                )
            self._trim(db, bounds)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _add(db: sqlite3.Connection, batch: Batch, bounds: Bounds) -> None:
        for entry in batch.entries:
            name = entry_id(entry.key)
            db.execute(
                UPSERT_ENTRY,
                (name, entry.client, entry.address, entry.project_id, entry.user_agent, entry.forwarded_for,
                 entry.access_key, entry.first_seen, entry.last_seen, batch.replica, entry.count),
            )  # fmt: skip
            db.executemany(UPSERT_COUNTER, [(name, counter, n) for counter, n in entry.counters().items()])
        db.execute(
            "INSERT INTO replicas (name, flushed_at) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET flushed_at = excluded.flushed_at",
            (batch.replica, bounds.now),
        )

    @staticmethod
    def _trim(db: sqlite3.Connection, bounds: Bounds) -> None:
        expired = db.execute("DELETE FROM entries WHERE last_seen <= ?", (bounds.cutoff,)).rowcount
        (count,) = db.execute("SELECT count(*) FROM entries").fetchone()
        evicted = 0
        if count > bounds.max_clients:
            evicted = db.execute(
                "DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY last_seen LIMIT ?)",
                (count - bounds.max_clients,),
            ).rowcount
        db.executemany(ADD_TOTAL, [(name, n) for name, n in (("expired", expired), ("evicted", evicted)) if n])
        db.execute("DELETE FROM applied WHERE at < ?", (bounds.now - BATCH_MEMORY_SECONDS,))
        db.execute("DELETE FROM replicas WHERE flushed_at <= ?", (bounds.cutoff,))
        db.execute(
            "DELETE FROM replicas WHERE name NOT IN (SELECT name FROM replicas ORDER BY flushed_at DESC LIMIT ?)",
            (MAX_REPLICAS,),
        )

    def read_now(self, bounds: Bounds) -> Stored:
        db = self.connection()
        # One read transaction: the entries, their counters and the totals of one moment.
        db.execute("BEGIN")
        try:
            rows = db.execute(
                "SELECT id, client, address, project_id, user_agent, forwarded_for, access_key, first_seen, last_seen,"
                " last_seen_by, count FROM entries WHERE last_seen > ? ORDER BY last_seen DESC LIMIT ?",
                (bounds.cutoff, bounds.max_clients),
            ).fetchall()
            entries: dict[str, Entry] = {}
            for name, client, address, project, agent, forwarded, key, first, last, by, count in rows:
                entries[name] = Entry(client, address, project, agent, forwarded, first, last, count, access_key=key, last_seen_by=by)
            counters = db.execute(
                "SELECT entry, name, n FROM counters WHERE entry IN (SELECT id FROM entries WHERE last_seen > ?)",
                (bounds.cutoff,),
            ).fetchall()
            totals = dict(db.execute("SELECT name, n FROM totals").fetchall())
            replicas = db.execute(
                "SELECT name, flushed_at FROM replicas WHERE flushed_at > ? ORDER BY flushed_at DESC", (bounds.cutoff,)
            ).fetchall()
        finally:
            db.execute("COMMIT")
        for name, counter, n in counters:
            if name in entries:
                entries[name].count_flat(counter, n)
        return Stored(list(entries.values()), totals.get("evicted", 0), totals.get("expired", 0), [tuple(r) for r in replicas])

    def close_now(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
