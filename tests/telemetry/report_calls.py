"""Deprecated calls and batches made up for the report's tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp.test_utils import make_mocked_request

from gateway.telemetry.calls import DeprecatedCall
from gateway.telemetry.report import Entry
from gateway.telemetry.stores.base import Batch


def call(at: float, client: str = "glance", project: str | None = "p1", address: str = "10.0.0.1", **facts: Any) -> DeprecatedCall:
    headers = {"User-Agent": facts.pop("user_agent", f"{client}/1")}
    if "forwarded_for" in facts:
        headers["X-Forwarded-For"] = facts.pop("forwarded_for")
    request = make_mocked_request("PATCH", "/v2/images/x", headers=headers)
    defaults: dict[str, Any] = {
        "request_id": "req-1",
        "client": client,
        "shape": "v2.0",
        "mode": "enforce",
        "outcome": "rewritten",
        "reason": None,
        "status": 200,
        "changes": [("replace", "name")],
        "at": at,
    }
    return dataclasses.replace(DeprecatedCall.of(request, **{**defaults, **facts}), address=address, project_id=project)


def batch(batch_id: str, replica: str, *calls: DeprecatedCall) -> Batch:
    """The batch a process would flush after ``calls``: one entry per key."""
    entries: dict[tuple[str, str, str | None], Entry] = {}
    for one in calls:
        key = (one.client, one.address, one.project_id)
        entry = entries.get(key) or entries.setdefault(key, Entry.first(one, replica))
        entry.add(one)
    return Batch(batch_id, replica, list(entries.values()), len(calls), process=replica)
