"""The fleet's migration report, as one gateway process keeps it and reads it.

Every image PATCH call goes to this process's own table (``report.MigrationReport``, what
/deprecations serves when the store does not answer) and, with a shared store, to a batch:
one entry per key, its counts added up. About once a second a background task hands the
batch to the store; a request never waits for it. A batch the store did not take is kept,
whole and under its id, and offered again (a store remembers the last batch it applied of
each process, so none is counted twice) while new calls gather in the next one. With the store away for long each holds at most
``report.max_clients`` entries: memory stays bounded, and a call for yet another entry is
dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Final

from gateway.config.schema import ReportSettings
from gateway.telemetry.calls import DeprecatedCall, sample
from gateway.telemetry.counts import Counts
from gateway.telemetry.families import REPORT_DROPPED, REPORT_FLUSHES, REPORT_PENDING
from gateway.telemetry.report import Entry, Key, MigrationReport, Snapshot, StoreStatus, most_calls_first
from gateway.telemetry.stores.base import Batch, Bounds, Store
from gateway.telemetry.stores.spec import MEMORY, REDIS, SQLITE, StoreSpec, effective, parse_store
from gateway.vocabulary import ReloadResult

log = logging.getLogger("ims_gateway.report")

FLUSH_SECONDS: Final = 1.0
# A store away for long gets one warning a minute, not one a second.
FAILURE_LOG_SECONDS: Final = 60.0
PROBLEM_LIMIT: Final = 200
SHARED_SCOPE: Final = "every gateway sharing this store: each replica's calls up to its last flush, this process's up to now"
FALLBACK_SCOPE: Final = "this gateway process since it started: the store did not answer"
_SUCCESS: Final = (ReloadResult.SUCCESS.value,)
_FAILURE: Final = (ReloadResult.FAILURE.value,)


def open_store(spec: StoreSpec, timeout: float) -> Store | None:
    """The store of a resolved ``spec`` (nothing is connected or opened yet); None for memory."""
    if spec.kind == REDIS:
        from gateway.telemetry.stores.redis_store import RedisStore  # redis-py only when used: ~10 MiB, ~60 ms

        return RedisStore(spec.url, timeout)
    if spec.kind == SQLITE and spec.path is not None:
        from gateway.telemetry.stores.sqlite_store import SqliteStore

        return SqliteStore(spec.path, timeout)
    return None


def replica_name(settings: ReportSettings) -> str:
    """report.replica, else the host name (a pod's name in Kubernetes)."""
    return settings.replica or sample(socket.gethostname(), 63) or "unknown"


class FleetReport:
    """This process's report table, its batch for the store, and the fleet's report read back."""

    def __init__(
        self,
        settings: ReportSettings,
        store: Store | None,
        *,
        clock: Callable[[], float] = time.time,
        counts: Counts | None = None,
        replica: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.replica = replica or replica_name(settings)
        self.local = MigrationReport(settings.max_clients, clock, retention=settings.retention_seconds, replica=self.replica)
        values = (counts or Counts()).values
        self._flushes = values[REPORT_FLUSHES]
        self._dropped = values[REPORT_DROPPED]
        self._pending_gauge = values[REPORT_PENDING]
        self._pending: dict[Key, Entry] = {}
        self._pending_calls = 0
        self._offered: Batch | None = None
        self._process = uuid.uuid4().hex
        self.dropped = 0
        self.flushed_at: float | None = None
        self.problem: str | None = None  # why the last flush failed
        # Runs first at every flush: the metrics fold the calls they have tallied into this report.
        self.before_flush: Callable[[], None] | None = None
        self._failing_since: float | None = None
        self._failures = 0
        self._failure_logged_at = float("-inf")

    @classmethod
    def from_settings(
        cls,
        settings: ReportSettings,
        *,
        clock: Callable[[], float] = time.time,
        counts: Counts | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> FleetReport:
        """The report of one gateway process; empty report.store is memory (``serve --workers N``
        gives its workers the shared file's name in IMS_GATEWAY_REPORT_STORE)."""
        spec = effective(parse_store(settings.store), workers=1, environ=environ)
        return cls(settings, open_store(spec, settings.store_timeout), clock=clock, counts=counts)

    # -- this process's table (what the request path touches) --------------------------

    def __len__(self) -> int:
        return len(self.local)

    @property
    def evicted(self) -> int:
        return self.local.evicted

    def entries(self) -> list[Entry]:
        return self.local.entries()

    def record(self, call: DeprecatedCall, times: int = 1, first_seen: float | None = None) -> None:
        """O(1), no I/O: this process's table, and the batch the next flush hands to the store.

        ``times`` alike calls, seen from ``first_seen`` (default: ``call.at``) to ``call.at``.
        """
        self.local.record(call, times, first_seen)
        if self.store is None:
            return
        key = (call.client, call.address, call.project_id)
        entry = self._pending.get(key)
        if entry is None:
            if len(self._pending) >= self.local.max_clients:
                self.dropped += times
                self._dropped[()] += times
                return
            entry = self._pending[key] = Entry.first(call, self.replica)
            if first_seen is not None:
                entry.first_seen = first_seen
        entry.add(call, times)
        self._pending_calls += times

    def resize(self, max_clients: int) -> None:
        self.local.resize(max_clients)

    def reconfigure(self, settings: ReportSettings) -> None:
        """Reloaded [report] settings: the bound, the retention and the timeout (the store needs a restart)."""
        self.settings = settings
        self.local.retention = settings.retention_seconds
        self.local.resize(settings.max_clients)

    @property
    def pending_calls(self) -> int:
        return self._pending_calls + (self._offered.calls if self._offered is not None else 0)

    # -- the store ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def flushing(self) -> AsyncIterator[None]:
        """While the gateway runs: flush about once a second; once more when it stops, then close the store."""
        if self.store is not None:
            log.info("migration report kept in %s, this replica named %s", self.store.shown, self.replica)
        task = asyncio.create_task(self._every_second())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.flush()
            await self._close()

    async def _every_second(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> None:
        """Hand what waits to the store: the batch it did not take last time first, then the calls since."""
        if self.before_flush is not None:
            self.before_flush()
        now = self.clock()
        self.local.expire(now)
        if self.store is None:
            return
        for _ in range(2):
            if self._offered is None:
                if not self._pending:
                    break
                entries = list(self._pending.values())
                self._offered = Batch(uuid.uuid4().hex, self.replica, entries, self._pending_calls, self._process)
                self._pending, self._pending_calls = {}, 0
            if not await self._offer(self.store, self._offered, now):
                break
            self._offered = None
        self._pending_gauge[()] = self.pending_calls

    async def _offer(self, store: Store, batch: Batch, now: float) -> bool:
        try:
            async with asyncio.timeout(self.settings.store_timeout):
                await store.apply(batch, self._bounds(now))
        except Exception as exc:  # away, slow, refusing or broken: the request path must never see it
            self._flushes[_FAILURE] += 1
            self._failed(self._describe(store, exc), now)
            return False
        self._flushes[_SUCCESS] += 1
        self.flushed_at = now
        self._recovered(now)
        return True

    def _failed(self, problem: str, now: float) -> None:
        self.problem = problem
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failure_logged_at >= FAILURE_LOG_SECONDS:
            self._failure_logged_at = now
            log.warning(
                "migration report store %s: %s; %d calls wait for it, /deprecations serves this process's view meanwhile",
                self.store.shown if self.store else MEMORY, problem, self.pending_calls,
            )  # fmt: skip

    def _recovered(self, now: float) -> None:
        if self._failing_since is not None:
            log.warning(
                "migration report store %s answers again after %.0f s and %d failed flushes",
                self.store.shown if self.store else MEMORY, now - self._failing_since, self._failures,
            )  # fmt: skip
        self.problem, self._failing_since, self._failures = None, None, 0
        self._failure_logged_at = float("-inf")

    def _describe(self, store: Store, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.settings.store_timeout:g} s"
        text = store.hide(f"{type(exc).__name__}: {exc}")
        return text if len(text) <= PROBLEM_LIMIT else text[: PROBLEM_LIMIT - 3] + "..."

    def _bounds(self, now: float) -> Bounds:
        return Bounds(now, self.local.max_clients, self.local.retention)

    async def _close(self) -> None:
        if self.store is None:
            return
        try:
            async with asyncio.timeout(self.settings.store_timeout):
                await self.store.close()
        except Exception as exc:
            log.debug("closing the report store %s: %s", self.store.shown, self._describe(self.store, exc))

    # -- /deprecations ------------------------------------------------------------------

    async def read(self) -> Snapshot:
        """The fleet's report (this process's unflushed calls included), or this process's own when the store does not answer."""
        now = self.clock()
        retention = self.settings.retention
        if self.store is None:
            return self.local.snapshot(self._status(), retention=retention)
        try:
            async with asyncio.timeout(self.settings.store_timeout):
                stored = await self.store.read(self._bounds(now))
        except Exception as exc:
            status = self._status(answered=False, problem=self._describe(self.store, exc))
            return self.local.snapshot(status, scope=FALLBACK_SCOPE, retention=retention)
        entries = {entry.key: entry for entry in stored.entries}
        for entry in self._unflushed():
            known = entries.get(entry.key)
            if known is None:
                entries[entry.key] = entry.copy()
            else:
                known.merge(entry)
        cutoff = now - self.local.retention
        recent = (entry for entry in entries.values() if entry.last_seen > cutoff)
        kept = sorted(recent, key=lambda e: -e.last_seen)[: self.local.max_clients]
        return Snapshot(
            most_calls_first(kept), now, SHARED_SCOPE, self.local.max_clients, stored.evicted, stored.expired,
            retention, self._status(), stored.replicas,
        )  # fmt: skip

    def _unflushed(self) -> Iterator[Entry]:
        if self._offered is not None:
            yield from self._offered.entries
        yield from self._pending.values()

    def _status(self, answered: bool = True, problem: str | None = None) -> StoreStatus:
        kind, shown = (self.store.kind, self.store.shown) if self.store is not None else (MEMORY, MEMORY)
        if problem is None and self.problem is not None:
            problem = f"flushes fail: {self.problem}"
        return StoreStatus(kind, shown, answered, problem, self.flushed_at, self.pending_calls, self.dropped)


__all__ = ["FLUSH_SECONDS", "FleetReport", "open_store", "replica_name"]
