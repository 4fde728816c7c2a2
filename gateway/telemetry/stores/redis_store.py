"""The report in one Redis, shared by every replica (redis-py's asyncio client).

Key layout (``PREFIX`` = ``ims-gateway:report:``):

- ``PREFIX seen``: a sorted set, one member per entry (its id), scored by last-seen time:
  the order of eviction (lowest first) and of retention;
- ``PREFIX entry:<id>``: a hash per entry: ``client``, ``address``, ``project_id``, the
  latest ``user_agent``, ``forwarded_for``, ``access_key``, ``last_seen_by``,
  ``first_seen``, ``last_seen``, ``count`` and one counter per value seen
  (``shape:v2.0``, ``outcome:rewritten``, ...); it expires ``report.retention`` after its
  last update, so an idle fleet's report empties itself too;
- ``PREFIX replicas``: a sorted set of replica names scored by their last flush;
- ``PREFIX totals``: a hash, ``evicted`` and ``expired``;
- ``PREFIX applied:<process>``: the id of the last batch applied of each gateway process,
  kept a day after its last flush, so that a batch offered again is not counted twice.

A flush is one Lua script: atomic, whatever the number of replicas writing at once.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from gateway.telemetry.report import Entry
from gateway.telemetry.stores.base import BATCH_MEMORY_SECONDS, MAX_REPLICAS, Batch, Bounds, Stored, entry_id
from gateway.telemetry.stores.spec import hide_password

PREFIX: Final = "ims-gateway:report:"
SEEN: Final = PREFIX + "seen"
REPLICAS: Final = PREFIX + "replicas"
TOTALS: Final = PREFIX + "totals"
ENTRY: Final = PREFIX + "entry:"
APPLIED: Final = PREFIX + "applied:"

# KEYS: seen, replicas, totals, the offering process's last applied batch, then one entry hash per ARGV[7] item.
# ARGV: now, max_clients, retention (s), replica, entry key prefix, batch memory (s), the entries as JSON,
#       the most replicas listed, the batch id.
FLUSH: Final = """
local seen, replicas, totals, applied = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, max_clients, retention = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local replica, prefix = ARGV[4], ARGV[5]
local ttl = math.max(1, math.ceil(retention))
if redis.call('GET', applied) ~= ARGV[9] then
  redis.call('SET', applied, ARGV[9], 'EX', ARGV[6])
  for i, e in ipairs(cjson.decode(ARGV[7])) do
    local key = KEYS[4 + i]
    local last = tonumber(redis.call('HGET', key, 'last_seen'))
    if last == nil then
      redis.call('HSET', key, 'client', e.client, 'address', e.address, 'first_seen', e.first_seen)
      if e.project_id then redis.call('HSET', key, 'project_id', e.project_id) end
    elseif e.first_seen < tonumber(redis.call('HGET', key, 'first_seen')) then
      redis.call('HSET', key, 'first_seen', e.first_seen)
    end
    if last == nil or e.last_seen >= last then
      redis.call('HSET', key, 'last_seen', e.last_seen, 'last_seen_by', replica)
      for _, name in ipairs({'user_agent', 'forwarded_for'}) do
        if e[name] then redis.call('HSET', key, name, e[name]) else redis.call('HDEL', key, name) end
      end
      if e.access_key then redis.call('HSET', key, 'access_key', e.access_key) end
      redis.call('ZADD', seen, e.last_seen, e.id)
    end
    redis.call('HINCRBY', key, 'count', e.count)
    for name, n in pairs(e.counters) do redis.call('HINCRBY', key, name, n) end
    redis.call('EXPIRE', key, ttl)
  end
  redis.call('ZADD', replicas, now, replica)
end
local cutoff = now - retention
local old = redis.call('ZRANGEBYSCORE', seen, '-inf', cutoff)
for _, id in ipairs(old) do redis.call('DEL', prefix .. id) end
if #old > 0 then
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', cutoff)
  redis.call('HINCRBY', totals, 'expired', #old)
end
local over = redis.call('ZCARD', seen) - max_clients
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', seen, 0, over - 1)) do redis.call('DEL', prefix .. id) end
  redis.call('ZREMRANGEBYRANK', seen, 0, over - 1)
  redis.call('HINCRBY', totals, 'evicted', over)
end
redis.call('ZREMRANGEBYSCORE', replicas, '-inf', cutoff)
redis.call('ZREMRANGEBYRANK', replicas, 0, -tonumber(ARGV[8]) - 1)
return 1
"""


def _item(entry: Entry) -> dict[str, Any]:
    """An entry as the script reads it: JSON null becomes no member (cjson's null is not nil)."""
    item = {
        "id": entry_id(entry.key),
        "client": entry.client,
        "address": entry.address,
        "project_id": entry.project_id,
        "user_agent": entry.user_agent,
        "forwarded_for": entry.forwarded_for,
        "access_key": entry.access_key,
        "first_seen": entry.first_seen,
        "last_seen": entry.last_seen,
        "count": entry.count,
        "counters": entry.counters(),
    }
    return {name: value for name, value in item.items() if value is not None}


def _entry(fields: dict[str, str]) -> Entry | None:
    try:
        entry = Entry(
            fields["client"], fields["address"], fields.get("project_id"), fields.get("user_agent"),
            fields.get("forwarded_for"), float(fields["first_seen"]), float(fields["last_seen"]), int(fields.get("count", 0)),
            access_key=fields.get("access_key"), last_seen_by=fields.get("last_seen_by"),
        )  # fmt: skip
    except (KeyError, ValueError):
        return None  # expired between the two reads, or half-written by something else
    for name, value in fields.items():
        if ":" in name:
            entry.count_flat(name, int(value))
    return entry


class RedisStore:
    """``redis://`` or ``rediss://``: the client connects on first use, within the running loop."""

    kind = "redis"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.shown = hide_password(url)
        self._client: Redis | None = None
        self._flush: AsyncScript | None = None

    def hide(self, text: str) -> str:
        text = hide_password(text)
        password = _password(self.url)
        return text.replace(password, "***") if password else text

    def _connect(self) -> tuple[Redis, AsyncScript]:
        if self._client is None or self._flush is None:
            # No retries of its own: a flush that fails is offered again a second later.
            self._client = Redis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            # EVALSHA, and the script itself only when this Redis does not know it yet.
            self._flush = self._client.register_script(FLUSH)
        return self._client, self._flush

    async def apply(self, batch: Batch, bounds: Bounds) -> None:
        items = [_item(entry) for entry in batch.entries]
        keys = [SEEN, REPLICAS, TOTALS, APPLIED + batch.process, *(ENTRY + item["id"] for item in items)]
        args: list[str | int] = [
            repr(bounds.now), bounds.max_clients, repr(bounds.retention), batch.replica, ENTRY,
            BATCH_MEMORY_SECONDS, json.dumps(items, separators=(",", ":")), MAX_REPLICAS, batch.id,
        ]  # fmt: skip
        _, flush = self._connect()
        await flush(keys=keys, args=args)

    async def read(self, bounds: Bounds) -> Stored:
        client, _ = self._connect()
        found = await client.zrevrangebyscore(SEEN, "+inf", f"({bounds.cutoff!r}", start=0, num=bounds.max_clients)
        ids = [str(name) for name in found]
        async with client.pipeline(transaction=False) as pipe:
            for name in ids:
                pipe.hgetall(ENTRY + name)
            pipe.hgetall(TOTALS)
            pipe.zrevrangebyscore(REPLICAS, "+inf", f"({bounds.cutoff!r}", withscores=True)
            *hashes, totals, replicas = await pipe.execute()
        entries = [entry for fields in hashes if fields and (entry := _entry(fields)) is not None]
        return Stored(
            entries, int(totals.get("evicted", 0)), int(totals.get("expired", 0)), [(name, float(at)) for name, at in replicas]
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = self._flush = None


def _password(url: str) -> str:
    password = urlsplit(url).password
    return unquote(password) if password else ""
