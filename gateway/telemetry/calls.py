"""One image PATCH call, as the report and the per-call log line tell it.

Every ``PATCH /v2/images/{id}`` (both body shapes and unsupported ones: the whole API is
deprecated) becomes one ``DeprecatedCall`` of bounded, printable values. Credentials are
never read here: only the User-Agent, X-Forwarded-For and X-Project-Id headers are.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import hdrs, web

from gateway.edge.headers import X_FORWARDED_FOR

log = logging.getLogger("ims_gateway.deprecated")

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
            signature=signature,
            access_key=access_key,
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


def write_log_line(call: DeprecatedCall) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info("%s", json.dumps(call.log_record(), separators=(",", ":")))
