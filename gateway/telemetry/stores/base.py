"""What every report store does: take a batch once, and read the report back."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol

from gateway.telemetry.report import Entry, Key

# A process offers its batches one at a time, each until the store takes it: the store
# remembers the last batch id it applied of each process, for this long after that
# process's last flush, so that a batch offered again after an unclear failure (applied,
# the answer lost) is not counted twice.
BATCH_MEMORY_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a flush or a read keeps: entries seen since ``now - retention``, at most ``max_clients``."""

    now: float
    max_clients: int
    retention: float  # seconds

    @property
    def cutoff(self) -> float:
        return self.now - self.retention


@dataclass(slots=True)
class Batch:
    """One process's calls since its last flush, one entry per key; the store applies an id once."""

    id: str
    replica: str
    entries: list[Entry]
    calls: int
    process: str = ""  # the offering process (one gateway's lifetime): its batches come in order


@dataclass(slots=True)
class Stored:
    """The report as a store holds it."""

    entries: list[Entry]  # the most recently seen first, at most max_clients
    evicted: int = 0
    expired: int = 0
    replicas: list[tuple[str, float]] = field(default_factory=list)  # (name, last flush), latest first


class Store(Protocol):
    kind: str
    shown: str  # where, as it may be shown: never a password

    async def apply(self, batch: Batch, bounds: Bounds) -> None:
        """Add the batch (once per id), then drop what ``bounds`` no longer keeps; raise if not done."""

    async def read(self, bounds: Bounds) -> Stored: ...

    async def close(self) -> None: ...

    def hide(self, text: str) -> str:
        """``text`` (an error message) without the store's secrets."""


def entry_id(key: Key) -> str:
    """A short fixed-length name for an entry key (client, address, project): 24 hex digits."""
    return hashlib.blake2b(json.dumps(key).encode(), digest_size=12).hexdigest()


MAX_REPLICAS = 256  # replicas listed by last flush: enough for a fleet and its recent rollouts
