"""The report stores, SQLite and Redis, held to one contract: a real file, a real redis-server."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.telemetry.stores.base import BATCH_MEMORY_SECONDS, Bounds, Store, entry_id
from gateway.telemetry.stores.redis_store import APPLIED, ENTRY, REPLICAS, SEEN, TOTALS, RedisStore
from gateway.telemetry.stores.sqlite_store import SqliteStore
from testing.report_stores import RedisServer
from tests.telemetry.report_calls import batch, call

TIMEOUT = 5.0
DAY = 86400.0


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.e2e)])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], Store]]:
    """Each call is one more process's handle on the same store."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "state" / "report.sqlite"

        def make() -> Store:
            return SqliteStore(path, TIMEOUT)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")

        def make() -> Store:
            return RedisStore(server.url, TIMEOUT)

    def opening() -> Store:
        opened.append(store := make())
        return store

    yield opening
    for store in opened:
        await store.close()


def bounds(now: float = 1000.0, max_clients: int = 100, retention: float = DAY) -> Bounds:
    return Bounds(now, max_clients, retention)


async def test_a_batch_becomes_the_entries_it_counted(open_store: Callable[[], Store]) -> None:
    store = open_store()
    await store.apply(
        batch(
            "b1", "pod-a",
            call(100.0, user_agent="glance/1 first", project="p1"),
            call(101.0, user_agent="glance/1 latest", project="p1", shape="v2.1", outcome="forwarded",
                 changes=[("add", "custom"), ("replace", "name")], signature="resigned", access_key="AKID...WXYZ"),
            call(102.0, client="curl", project=None, outcome="rejected", reason="forbidden_attribute", status=400,
                 changes=[("replace", "system")]),
        ),
        bounds(),
    )  # fmt: skip
    stored = await store.read(bounds())
    documents = {entry.client: entry.document() for entry in stored.entries}
    assert documents == {
        "glance": {
            "client": "glance", "user_agent": "glance/1 latest", "address": "10.0.0.1", "forwarded_for": None,
            "project_id": "p1", "count": 2, "shapes": {"v2.0": 1, "v2.1": 1}, "modes": {"enforce": 2},
            "ops": {"replace": 2, "add": 1}, "attributes": {"name": 2, "custom": 1},
            "outcomes": {"rewritten": 1, "forwarded": 1}, "signatures": {"resigned": 1}, "access_key": "AKID...WXYZ",
            "first_seen": "1970-01-01T00:01:40Z", "last_seen": "1970-01-01T00:01:41Z", "last_seen_by": "pod-a",
        },
        "curl": {
            "client": "curl", "user_agent": "curl/1", "address": "10.0.0.1", "forwarded_for": None,
            "project_id": None, "count": 1, "shapes": {"v2.0": 1}, "modes": {"enforce": 1}, "ops": {"replace": 1},
            "attributes": {"system": 1}, "outcomes": {"rejected": 1}, "signatures": {}, "access_key": None,
            "first_seen": "1970-01-01T00:01:42Z", "last_seen": "1970-01-01T00:01:42Z", "last_seen_by": "pod-a",
        },
    }  # fmt: skip
    assert [entry.client for entry in stored.entries] == ["curl", "glance"], "the most recently seen first"
    assert (stored.evicted, stored.expired, stored.replicas) == (0, 0, [("pod-a", 1000.0)])


async def test_two_processes_add_up_in_one_entry_and_the_latest_call_wins(open_store: Callable[[], Store]) -> None:
    first, second = open_store(), open_store()
    await first.apply(batch("a1", "pod-a", call(100.0, user_agent="glance/1 a"), call(101.0, user_agent="glance/1 a")), bounds(1000.0))
    await second.apply(batch("b1", "pod-b", *(call(102.0 + n, user_agent="glance/1 b", shape="v2.1") for n in range(3))), bounds(1001.0))
    # A late batch with older calls adds its counts but is not the latest.
    await first.apply(batch("a2", "pod-a", call(99.0, user_agent="glance/1 old")), bounds(1002.0))
    for reader in (first, second, open_store()):
        stored = await reader.read(bounds(1003.0))
        [entry] = stored.entries
        assert (entry.count, dict(entry.shapes)) == (6, {"v2.0": 3, "v2.1": 3})
        assert (entry.first_seen, entry.last_seen, entry.user_agent, entry.last_seen_by) == (99.0, 104.0, "glance/1 b", "pod-b")
        assert stored.replicas == [("pod-a", 1002.0), ("pod-b", 1001.0)]


async def test_a_batch_offered_again_is_counted_once(open_store: Callable[[], Store]) -> None:
    store = open_store()
    offered = batch("same-id", "pod-a", call(100.0), call(101.0))
    await store.apply(offered, bounds())
    await store.apply(offered, bounds(1001.0))
    await open_store().apply(offered, bounds(1002.0))
    [entry] = (await store.read(bounds(1003.0))).entries
    assert entry.count == 2


async def test_the_bound_drops_the_least_recently_seen_and_counts_them(open_store: Callable[[], Store]) -> None:
    store = open_store()
    await store.apply(batch("b1", "pod-a", *(call(100.0 + n, project=f"p{n}") for n in range(5))), bounds(max_clients=3))
    await open_store().apply(batch("b2", "pod-b", call(200.0, project="p0")), bounds(max_clients=3))
    stored = await store.read(bounds(max_clients=3))
    assert [entry.project_id for entry in stored.entries] == ["p0", "p4", "p3"]
    assert (stored.evicted, stored.expired) == (3, 0)


async def test_entries_not_seen_within_the_retention_are_dropped(open_store: Callable[[], Store]) -> None:
    store = open_store()
    await store.apply(batch("b1", "pod-a", call(100.0, project="old"), call(950.0, project="recent")), bounds(1000.0, retention=DAY))
    # Read later, before any flush dropped it: an entry past the retention is not shown.
    assert [e.project_id for e in (await store.read(bounds(1000.0 + DAY - 500.0, retention=DAY))).entries] == ["recent"]
    await store.apply(batch("b2", "pod-a", call(1500.0, project="new")), bounds(1500.0, retention=1000.0))
    stored = await store.read(bounds(1500.0, retention=1000.0))
    assert [entry.project_id for entry in stored.entries] == ["new", "recent"]
    assert (stored.evicted, stored.expired) == (0, 1)
    assert [name for name, _ in stored.replicas] == ["pod-a"]


async def test_the_report_outlives_the_process_that_wrote_it(open_store: Callable[[], Store]) -> None:
    writer = open_store()
    await writer.apply(batch("b1", "pod-a", call(100.0), call(101.0)), bounds())
    await writer.close()
    [entry] = (await open_store().read(bounds())).entries
    assert (entry.count, entry.last_seen_by) == (2, "pod-a")


# -- SQLite ----------------------------------------------------------------------------


async def test_the_sqlite_file_and_its_directory_are_made_private_to_the_gateway_user(tmp_path: Path) -> None:
    path = tmp_path / "made" / "here" / "report.sqlite"
    store = SqliteStore(path, TIMEOUT)
    await store.apply(batch("b1", "pod-a", call(100.0)), bounds())
    await store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_sqlite_refuses_to_read_a_file_that_is_not_there(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "missing.sqlite", TIMEOUT, create=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        await store.read(bounds())
    await store.close()
    assert not (tmp_path / "missing.sqlite").exists()


async def test_a_sqlite_file_locked_by_another_process_fails_the_flush_and_applies_nothing(tmp_path: Path) -> None:
    path = tmp_path / "report.sqlite"
    store = SqliteStore(path, 0.2)
    await store.apply(batch("b0", "pod-a", call(99.0)), bounds())
    other = SqliteStore(path, TIMEOUT).connection()
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(Exception, match="locked"):
        await store.apply(batch("b1", "pod-a", call(100.0)), bounds())
    other.execute("ROLLBACK")
    await store.apply(batch("b1", "pod-a", call(100.0)), bounds())
    [entry] = (await store.read(bounds())).entries
    assert entry.count == 2
    other.close()
    await store.close()


# -- Redis: the key layout the README documents ----------------------------------------


@pytest.mark.e2e
async def test_the_redis_keys_are_the_documented_layout(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, TIMEOUT)
    one = call(100.0, project="p1", forwarded_for="203.0.113.7")
    await store.apply(batch("b0", "pod-a", one), Bounds(999.0, 10, 3600.0))
    await store.apply(batch("b1", "pod-a"), Bounds(1000.0, 10, 3600.0))
    await store.close()
    entry = ENTRY + entry_id(("glance", "10.0.0.1", "p1"))
    async with Redis.from_url(redis_server.url, decode_responses=True) as redis:
        # One record of what was applied per process, however many batches it flushed.
        assert set(await redis.keys("*")) == {SEEN, REPLICAS, entry, APPLIED + "pod-a"}
        assert await redis.get(APPLIED + "pod-a") == "b1"
        assert await redis.hgetall(entry) == {
            "client": "glance", "address": "10.0.0.1", "project_id": "p1", "user_agent": "glance/1",
            "forwarded_for": "203.0.113.7", "first_seen": "100", "last_seen": "100", "last_seen_by": "pod-a", "count": "1",
            "shape:v2.0": "1", "mode:enforce": "1", "op:replace": "1", "attribute:name": "1", "outcome:rewritten": "1",
        }  # fmt: skip
        assert await redis.zrange(SEEN, 0, -1, withscores=True) == [(entry.removeprefix(ENTRY), 100.0)]
        assert await redis.zrange(REPLICAS, 0, -1, withscores=True) == [("pod-a", 1000.0)]
        assert 3590 <= await redis.ttl(entry) <= 3600
        assert BATCH_MEMORY_SECONDS - 10 <= await redis.ttl(APPLIED + "pod-a") <= BATCH_MEMORY_SECONDS
        assert not await redis.exists(TOTALS), "made at the first eviction or expiry"


@pytest.mark.e2e
async def test_memory_per_entry_in_redis(redis_server: RedisServer) -> None:
    """What the README states: measured with realistic entries, 1000 of them."""
    store = RedisStore(redis_server.url, TIMEOUT)
    async with Redis.from_url(redis_server.url, decode_responses=True) as redis:
        await store.apply(batch("warm", "pod-a", call(1.0, project="warm")), Bounds(1000.0, 5000, DAY))
        before = (await redis.info("memory"))["used_memory"]
        agent = "python-glanceclient/4.1.0 keystoneauth1/5.1.2 python-requests/2.31.0 CPython/3.11.4"
        calls = [
            call(500.0 + n, user_agent=agent, project=f"{n:032x}", address=f"10.0.{n // 250}.{n % 250}",
                 forwarded_for="203.0.113.7", shape=("v2.0", "v2.1")[n % 2], changes=[("replace", "name"), ("add", "custom")])
            for n in range(1000)
        ]  # fmt: skip
        for start in range(0, 1000, 100):
            await store.apply(batch(f"b{start}", "pod-a", *calls[start : start + 100]), Bounds(1000.0, 5000, DAY))
        per_entry = ((await redis.info("memory"))["used_memory"] - before) / 1000
        entry = ENTRY + entry_id(("glance", "10.0.0.1", f"{1:032x}"))
        print(f"\nredis: {per_entry:.0f} bytes per entry (MEMORY USAGE of one entry hash: {await redis.memory_usage(entry)})")
    await store.close()
    assert 200 < per_entry < 2500
