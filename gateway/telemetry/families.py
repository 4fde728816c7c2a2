"""The gateway's metrics, declared as a table: name, type, help, labels and their values.

Every label value comes from a bounded set below, most of them the vocabulary's enums, so
a new outcome or reason cannot be forgotten here; nothing a client sends becomes a label
as is (the client label is ``clients.ClientLabels``'s, capped).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from gateway.edge.headers import ROUTING_HEADERS, UNDERSCORE
from gateway.patch.parser import OPS
from gateway.vocabulary import (
    AttributeClass,
    FailureKind,
    Mode,
    Outcome,
    Reason,
    ReloadResult,
    Route,
    Shape,
    Signature,
    Stage,
)

PREFIX: Final = "ims_gateway_"
OTHER: Final = "other"
ABORTED: Final = "aborted"  # no complete answer: the client went away mid-request

# From a millisecond JSON answer to an hour-long multi-GB image transfer.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


class Kind(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class Combine(enum.Enum):
    """How one gauge of several worker processes is read: only live workers count."""

    SUM = "sum"
    MAX = "max"
    MIN = "min"


@dataclass(frozen=True, eq=False, slots=True)
class Family:
    """One metric family. Compared by identity: a request looks its numbers up by family."""

    name: str  # without the prefix; counters end in _total
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    combine: Combine = Combine.SUM

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


def _values(members: type[enum.Enum]) -> tuple[str, ...]:
    return tuple(str(member.value) for member in members)


METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", ABORTED)

# The values each label may take (the client label: see clients.ClientLabels).
LABEL_VALUES: Final[dict[str, tuple[str, ...]]] = {
    "method": (*METHODS, OTHER),
    "route": _values(Route),
    "status_class": STATUS_CLASSES,
    "kind": _values(FailureKind),
    "stage": _values(Stage),
    "shape": _values(Shape),
    "outcome": _values(Outcome),
    "mode": _values(Mode),
    "reason": _values(Reason),
    "op": OPS,
    "attribute_class": _values(AttributeClass),
    "result": _values(ReloadResult),
    "header": (*sorted(name.lower() for name in ROUTING_HEADERS), UNDERSCORE),
    "action": ("dropped", "refused"),
    "handling": _values(Signature),
}

BUILD_INFO = Family("build_info", Kind.GAUGE, "The running ims-gateway: always 1.", ("version", "python"), Combine.MAX)
REQUESTS = Family(
    "requests_total", Kind.COUNTER,
    "Requests answered, by method (the usual ones, else other), route class and status class.",
    ("method", "route", "status_class"),
)  # fmt: skip
REQUEST_DURATION = Family(
    "request_duration_seconds", Kind.HISTOGRAM,
    "Time from the request's headers to the end of the gateway's answer (the last byte, when streamed).",
    ("route",),
)  # fmt: skip
UPSTREAM_DURATION = Family(
    "upstream_duration_seconds", Kind.HISTOGRAM,
    "Time IMS took to answer a request (from sending it, upload included, to IMS's response headers); "
    "a v2.0 add check's GET and the PATCH are summed.",
    ("route",),
)  # fmt: skip
REQUEST_BYTES = Family("request_body_bytes_total", Kind.COUNTER, "Request body bytes received from clients.", ("route",))
RESPONSE_BYTES = Family("response_body_bytes_total", Kind.COUNTER, "Response body bytes sent to clients.", ("route",))
IN_FLIGHT = Family("requests_in_flight", Kind.GAUGE, "Requests being answered now.", ("route",))
UPSTREAM_ERRORS = Family(
    "upstream_errors_total", Kind.COUNTER,
    "Requests IMS failed: no answer (before_response: the client got 502/504) or a broken answer (mid_stream).",
    ("kind", "stage"),
)  # fmt: skip
DEPRECATED_CALLS = Family(
    "deprecated_calls_total", Kind.COUNTER,
    "PATCH /v2/images/{id} calls (the whole API is deprecated), by body shape, outcome and mode.",
    ("shape", "outcome", "mode"),
)  # fmt: skip
DEPRECATED_OPERATIONS = Family(
    "deprecated_operations_total", Kind.COUNTER,
    "Operations in parsed PATCH /v2/images/{id} bodies, refused ones included, by shape, op and attribute class.",
    ("shape", "op", "attribute_class"),
)  # fmt: skip
REJECTIONS = Family(
    "deprecated_rejections_total", Kind.COUNTER,
    "PATCH /v2/images/{id} calls the gateway refused (observe mode: would have refused), by shape, reason and mode.",
    ("shape", "reason", "mode"),
)  # fmt: skip
CLIENT_CALLS = Family(
    "deprecated_client_calls_total", Kind.COUNTER,
    "PATCH /v2/images/{id} calls by client label (from the User-Agent, capped) and shape.",
    ("client", "shape"),
)  # fmt: skip
REFUSED_REQUESTS = Family(
    "refused_requests_total", Kind.COUNTER,
    "Requests the gateway refused itself, nothing forwarded, any route, by reason.",
    ("reason",),
)  # fmt: skip
ROUTING_HEADERS_SEEN = Family(
    "routing_headers_total", Kind.COUNTER,
    "Headers that could change the path or method IMS executes (SCRIPT_NAME, names with '_', ...), "
    "by header and what the gateway did: dropped before forwarding, or refused the request.",
    ("header", "action"),
)  # fmt: skip
SIGNED_REQUESTS = Family(
    "signed_requests_total", Kind.COUNTER,
    "Requests carrying a Huawei Cloud AK/SK signature, by what the gateway did: passed_through (a key it does not hold: "
    "forwarded with all it signed unchanged), resigned (a listed key: verified, signed again), refused (did not verify).",
    ("handling",),
)  # fmt: skip
DEPRECATED_SIGNED_CALLS = Family(
    "deprecated_signed_calls_total", Kind.COUNTER,
    "PATCH /v2/images/{id} calls carrying an AK/SK signature, by body shape and handling.",
    ("shape", "handling"),
)  # fmt: skip
CONFIG_RELOADS = Family("config_reloads_total", Kind.COUNTER, "Configuration reloads, by result.", ("result",))
CONFIG_LAST_RELOAD_SUCCESSFUL = Family(
    "config_last_reload_successful", Kind.GAUGE,
    "1 when the last configuration reload succeeded (or none was tried), else 0 (any worker).",
    combine=Combine.MIN,
)  # fmt: skip
SUNSET = Family(
    "sunset_timestamp_seconds", Kind.GAUGE,
    "The running configuration's sunset of a body shape as Unix time: deprecation.v20_sunset_at (v2.0) and "
    "v21_sunset_at (v2.1); no series for a shape without one (the earliest of any worker).",
    ("shape",), Combine.MIN,
)  # fmt: skip
REPORT_FLUSHES = Family(
    "report_flushes_total", Kind.COUNTER,
    "Batches of migration report updates handed to the report store (report.store), by result: success, or failure "
    "(the store was away, slow or refused; the batch is kept and offered again).",
    ("result",),
)  # fmt: skip
REPORT_DROPPED = Family(
    "report_dropped_total", Kind.COUNTER,
    "Image PATCH calls left out of the migration report: the store was away and the waiting batch already held "
    "report.max_clients entries.",
)  # fmt: skip
REPORT_PENDING = Family(
    "report_pending_calls", Kind.GAUGE,
    "Image PATCH calls in the migration report that are not in its store yet (as of the last flush, about once a second).",
)  # fmt: skip

FAMILIES: Final = (
    BUILD_INFO,
    REQUESTS,
    REQUEST_DURATION,
    UPSTREAM_DURATION,
    REQUEST_BYTES,
    RESPONSE_BYTES,
    IN_FLIGHT,
    UPSTREAM_ERRORS,
    DEPRECATED_CALLS,
    DEPRECATED_OPERATIONS,
    REJECTIONS,
    CLIENT_CALLS,
    REFUSED_REQUESTS,
    ROUTING_HEADERS_SEEN,
    SIGNED_REQUESTS,
    DEPRECATED_SIGNED_CALLS,
    CONFIG_RELOADS,
    CONFIG_LAST_RELOAD_SUCCESSFUL,
    SUNSET,
    REPORT_FLUSHES,
    REPORT_DROPPED,
    REPORT_PENDING,
)
