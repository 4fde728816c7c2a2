"""FleetReport: the batch, the flusher and the fallback, against a store that misbehaves on command."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from gateway.config.schema import ReportSettings
from gateway.telemetry import fleet
from gateway.telemetry.counts import Counts
from gateway.telemetry.families import REPORT_DROPPED, REPORT_FLUSHES, REPORT_PENDING
from gateway.telemetry.fleet import FALLBACK_SCOPE, SHARED_SCOPE, FleetReport
from gateway.telemetry.report import Entry
from gateway.telemetry.stores.base import Batch, Bounds, Stored
from tests.telemetry.report_calls import call


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """Applies a batch id once, like the real stores; fails, or never answers, when told to."""

    kind = "fake"
    shown = "fake://***@store"

    def __init__(self) -> None:
        self.applied: dict[str, Batch] = {}
        self.offers: list[str] = []
        self.failure: Exception | None = None
        self.hang = False
        self.closed = False

    async def _misbehave(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.failure is not None:
            raise self.failure

    async def apply(self, batch: Batch, bounds: Bounds) -> None:
        self.offers.append(batch.id)
        await self._misbehave()
        self.applied.setdefault(batch.id, batch)

    async def read(self, bounds: Bounds) -> Stored:
        await self._misbehave()
        entries: dict[tuple[str, str, str | None], Entry] = {}
        for batch in self.applied.values():
            for entry in batch.entries:
                if entry.key in entries:
                    entries[entry.key].merge(entry)
                else:
                    entries[entry.key] = entry.copy()
        return Stored(list(entries.values()), evicted=4, expired=5, replicas=[("pod-b", 990.0)])

    async def close(self) -> None:
        self.closed = True

    def hide(self, text: str) -> str:
        return text.replace("hunter2", "***")

    def calls(self) -> int:
        return sum(batch.calls for batch in self.applied.values())


def settings(**values: object) -> ReportSettings:
    return ReportSettings(**{"store_timeout": 0.2, **values})  # type: ignore[arg-type]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def counts() -> Counts:
    return Counts()


def fleet_report(store: FakeStore | None, counts: Counts, clock: Clock | None = None, **values: object) -> FleetReport:
    return FleetReport(settings(**values), store, clock=clock or Clock(), counts=counts, replica="pod-a")


async def test_calls_are_batched_per_entry_and_flushed_once(store: FakeStore, counts: Counts) -> None:
    report = fleet_report(store, counts)
    for n in range(5):
        report.record(call(1000.0 + n, project=("p1", "p2")[n % 2]))
    assert store.offers == [], "recording never touches the store"
    assert report.pending_calls == 5
    await report.flush()
    [batch] = store.applied.values()
    assert (batch.calls, sorted(e.count for e in batch.entries), batch.replica) == (5, [2, 3], "pod-a")
    await report.flush()
    assert len(store.offers) == 1, "nothing new: nothing offered"
    assert counts.values[REPORT_FLUSHES] == {("success",): 1}
    assert counts.values[REPORT_PENDING][()] == 0


async def test_a_batch_the_store_did_not_take_is_offered_again_whole_and_then_the_calls_since(
    store: FakeStore, counts: Counts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ims_gateway.report")
    report = fleet_report(store, counts)
    report.record(call(1000.0))
    store.failure = ConnectionError("Error 111 connecting to redis: Connection refused; password hunter2")
    await report.flush()
    report.record(call(1001.0))
    report.record(call(1002.0, project="p2"))
    await report.flush()
    assert len(set(store.offers)) == 1 and len(store.offers) == 2, "the same batch, under the same id"
    assert (report.pending_calls, counts.values[REPORT_PENDING][()]) == (3, 3)
    store.failure = None
    await report.flush()
    assert store.offers[2] == store.offers[0]
    assert len(store.applied) == 2
    assert store.calls() == 3
    assert counts.values[REPORT_FLUSHES] == {("failure",): 2, ("success",): 2}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, "one warning for the failures within a minute, one for the recovery"
    assert "Connection refused" in warnings[0] and "hunter2" not in caplog.text
    assert "answers again" in warnings[1]


async def test_a_store_that_never_answers_costs_a_flush_its_timeout_and_a_call_nothing(store: FakeStore, counts: Counts) -> None:
    report = fleet_report(store, counts, store_timeout=0.2)
    store.hang = True
    started = time.perf_counter()
    report.record(call(1000.0))
    assert time.perf_counter() - started < 0.05
    await asyncio.wait_for(report.flush(), 5)
    assert report.problem == "no answer within 0.2 s"
    snapshot = await asyncio.wait_for(report.read(), 5)
    assert (snapshot.scope, snapshot.store.answered) == (FALLBACK_SCOPE, False)
    assert snapshot.store.problem == "no answer within 0.2 s"
    assert [entry.count for entry in snapshot.entries] == [1], "this process's own calls, still"


async def test_with_the_store_away_the_batch_is_bounded_and_the_calls_that_find_no_room_are_counted(
    store: FakeStore, counts: Counts
) -> None:
    report = fleet_report(store, counts, max_clients=2)
    store.failure = OSError("down")
    for n in range(10):
        report.record(call(1000.0 + n, project=("p1", "p2")[n % 2]))
    await report.flush()
    for n in range(10):
        report.record(call(1100.0 + n, project=("p1", "p2", "p3")[n % 3]))
    assert report.dropped == 3 and counts.values[REPORT_DROPPED][()] == 3
    assert len(report._pending) == 2 and report.pending_calls == 17
    store.failure = None
    await report.flush()
    assert store.calls() == 17


async def test_the_fleet_view_adds_this_process_s_unflushed_calls(store: FakeStore, counts: Counts) -> None:
    clock = Clock()
    report = fleet_report(store, counts, clock)
    report.record(call(1000.0, project="p1"))
    report.record(call(1001.0, project="p1"))
    await report.flush()
    report.record(call(1002.0, project="p1", shape="v2.1"))
    report.record(call(1003.0, project="p2"))
    snapshot = await report.read()
    assert [(e.project_id, e.count, dict(e.shapes)) for e in snapshot.entries] == [
        ("p1", 3, {"v2.0": 2, "v2.1": 1}),
        ("p2", 1, {"v2.0": 1}),
    ]
    document = snapshot.document()
    assert (document["scope"], document["evicted"], document["expired"], document["retention"]) == (SHARED_SCOPE, 4, 5, "30d")
    assert document["store"] == {
        "type": "fake", "location": "fake://***@store", "answered": True, "problem": None,
        "flushed_at": "1970-01-01T00:16:40Z", "pending_calls": 2, "dropped_calls": 0,
    }  # fmt: skip
    assert document["replicas"] == [{"replica": "pod-b", "flushed_at": "1970-01-01T00:16:30Z"}]
    assert store.calls() == 2, "reading adds nothing to the store"


async def test_a_read_the_store_refuses_serves_this_process_s_table_and_says_why(store: FakeStore, counts: Counts) -> None:
    report = fleet_report(store, counts)
    report.record(call(1000.0))
    store.failure = RuntimeError("WRONGPASS invalid password hunter2 " + "x" * 300)
    snapshot = await report.read()
    assert (snapshot.scope, snapshot.store.answered) == (FALLBACK_SCOPE, False)
    problem = snapshot.store.problem or ""
    assert problem.startswith("RuntimeError: WRONGPASS invalid password *** x") and len(problem) == fleet.PROBLEM_LIMIT
    assert [e.count for e in snapshot.entries] == [1]


async def test_while_flushes_fail_a_read_that_works_says_so(store: FakeStore, counts: Counts) -> None:
    report = fleet_report(store, counts)
    report.record(call(1000.0))
    store.failure = OSError("disk full")
    await report.flush()
    store.failure = None
    store.applied.clear()
    snapshot = await report.read()
    assert snapshot.store.answered is True
    assert snapshot.store.problem == "flushes fail: OSError: disk full"
    assert [e.count for e in snapshot.entries] == [1]


async def test_stopping_flushes_what_waits_and_closes_the_store(store: FakeStore, counts: Counts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "FLUSH_SECONDS", 0.01)
    report = fleet_report(store, counts)
    async with report.flushing():
        report.record(call(1000.0))
        for _ in range(500):
            if store.applied:
                break
            await asyncio.sleep(0.01)
        assert store.calls() == 1, "flushed in the background"
        report.record(call(1001.0))
    assert store.calls() == 2 and store.closed


async def test_the_memory_store_keeps_this_process_s_calls_within_the_retention(counts: Counts) -> None:
    clock = Clock(1000.0)
    report = fleet_report(None, counts, clock, retention="60s")
    report.record(call(990.0, project="old"))
    report.record(call(1030.0, project="new"))
    clock.now = 1045.0
    assert [e.project_id for e in (await report.read()).entries] == ["new", "old"]
    clock.now = 1089.0
    snapshot = await report.read()
    assert [e.project_id for e in snapshot.entries] == ["new"]
    assert (snapshot.expired, snapshot.store.kind, snapshot.store.answered) == (1, "memory", True)
    await report.flush()
    assert counts.values[REPORT_FLUSHES] == {}, "no store: nothing to flush"


async def test_reloaded_settings_change_the_bound_and_the_retention(store: FakeStore, counts: Counts) -> None:
    clock = Clock(1000.0)
    report = fleet_report(store, counts, clock)
    for n in range(4):
        report.record(call(990.0 + n, project=f"p{n}"))
    report.reconfigure(settings(max_clients=2, retention="5s"))
    assert len(report) == 2 and report.evicted == 2
    clock.now = 1000.0
    snapshot = await report.read()
    assert snapshot.max_clients == 2 and snapshot.retention == "5s"
    assert snapshot.entries == [], "seen 7 s ago or more"
    clock.now = 995.0
    assert [e.project_id for e in (await report.read()).entries] == ["p3", "p2"]
