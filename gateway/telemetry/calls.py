"""One image PATCH call, as the report and the per-call log line tell it.

Every ``PATCH /v2/images/{id}`` (both body shapes and unsupported ones: the whole API is
deprecated) becomes one ``DeprecatedCall`` of bounded, printable values. Credentials are
never read here: only the User-Agent, X-Forwarded-For and X-Project-Id headers are.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from aiohttp import hdrs, web

from gateway.edge.headers import X_FORWARDED_FOR
from gateway.telemetry.logs import OffLoop
from gateway.vocabulary import Mode

log = OffLoop("ims_gateway.deprecated")

X_PROJECT_ID: Final = "X-Project-Id"
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
    signature: str | None = None  # passed_through, resigned, refused: an AK/SK signed call
    access_key: str | None = None  # its access key, shortened (never the secret key or the signature)

    @classmethod
    def of(
        cls,
        request: web.BaseRequest,
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
        signature: str | None = None,
        access_key: str | None = None,
    ) -> DeprecatedCall:
        """``changes`` is (op, attribute class) for each operation of the body."""
        headers = request.headers
        facts = CallFacts(
            client, headers.get(hdrs.USER_AGENT), request.remote or "", headers.get(X_FORWARDED_FOR),
            headers.get(X_PROJECT_ID), shape, mode, outcome, reason, status, tuple(changes), signature, access_key,
        )  # fmt: skip
        return facts.deprecated_call(at, request_id)

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
            # Observe mode forwards every call as received: its outcome is what enforce
            # mode would have done, and "status" is IMS's answer.
            "enforced": self.mode == Mode.ENFORCE,
            "reason": self.reason,
            "status": self.status,
            "ops": dict(self.ops),
            "attributes": dict(self.attributes),
        }


class CallFacts(NamedTuple):
    """An image PATCH as the metrics tally it: raw header values, sampled only when shown."""

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
    changes: tuple[tuple[str, str], ...]  # (op, attribute class) of each operation
    signature: str | None
    access_key: str | None

    def deprecated_call(self, at: float, request_id: str = "") -> DeprecatedCall:
        ops: dict[str, int] = {}
        attributes: dict[str, int] = {}
        for op, attribute in self.changes:
            ops[op] = ops.get(op, 0) + 1
            attributes[attribute] = attributes.get(attribute, 0) + 1
        return DeprecatedCall(
            at=at,
            request_id=request_id,
            client=self.client,
            user_agent=sample(self.user_agent, USER_AGENT_LIMIT),
            address=self.address,
            forwarded_for=sample(self.forwarded_for, FORWARDED_FOR_LIMIT),
            project_id=sample(self.project_id, PROJECT_ID_LIMIT),
            shape=str(self.shape),
            mode=str(self.mode),
            outcome=str(self.outcome),
            reason=None if self.reason is None else str(self.reason),
            status=self.status,
            ops=ops,
            attributes=attributes,
            signature=None if self.signature is None else str(self.signature),
            access_key=self.access_key,
        )


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))
_LINE_CACHE_LIMIT: Final = 4096


class _LineParts:
    """The per-call log line's JSON around its time, request id and status, made once per set of facts.

    Used by one thread at a time: the log writer's (or the caller's, without one).
    """

    parts: Final[dict[CallFacts, tuple[str, str]]] = {}
    second = -1
    stamp = ""


def _log_line(args: tuple[float, str, CallFacts]) -> str:
    """``json.dumps(call.log_record())`` with compact separators, made from cached parts."""
    at, request_id, facts = args
    parts = _LineParts.parts.get(facts)
    if parts is None:
        if len(_LineParts.parts) >= _LINE_CACHE_LIMIT:
            _LineParts.parts.clear()
        record = facts.deprecated_call(0.0).log_record()
        del record["event"], record["time"], record["request_id"]
        middle = _ENCODER.encode({k: record[k] for k in _BEFORE_STATUS})[1:-1]
        tail = _ENCODER.encode({k: record[k] for k in _AFTER_STATUS})[1:-1]
        parts = _LineParts.parts[facts] = (middle, tail)
    second = int(at)
    if second != _LineParts.second:
        _LineParts.second, _LineParts.stamp = second, utc(at)
    middle, tail = parts
    return (
        f'{{"event":"deprecated_call","time":"{_LineParts.stamp}","request_id":{_ENCODER.encode(request_id)},'
        f'{middle},"status":{"null" if facts.status is None else int(facts.status)},{tail}}}'
    )


_BEFORE_STATUS: Final = (
    "client", "user_agent", "address", "forwarded_for", "project_id", "shape", "mode", "outcome", "enforced", "reason",
)
_AFTER_STATUS: Final = ("ops", "attributes")


def write_log_line(request_id: str, facts: CallFacts) -> None:
    """The call's one JSON log line (``ims_gateway.deprecated``), made and written off the loop."""
    log.info(_log_line, time.time(), request_id, facts)
