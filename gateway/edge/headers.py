"""Header hygiene: what belongs to the message and goes on, what belongs to the connection.

Only hop-by-hop headers are dropped (RFC 9110 section 7.6.1); the forwarding headers and
the request id are added.
"""

from __future__ import annotations

import random
import re
from typing import Final

from aiohttp import hdrs
from multidict import CIMultiDict, CIMultiDictProxy, istr

HOP_BY_HOP = frozenset(
    istr(name)
    for name in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        # The gateway answers "Expect: 100-continue" itself; IMS gets the whole body.
        "Expect",
    )
)
X_FORWARDED_FOR = istr("X-Forwarded-For")
X_FORWARDED_PROTO = istr("X-Forwarded-Proto")
X_FORWARDED_HOST = istr("X-Forwarded-Host")
X_REQUEST_ID = istr("X-Request-Id")

# aiohttp adds these unless told not to; a transparent proxy sends only what it received.
SKIP_AUTO_HEADERS = frozenset({hdrs.USER_AGENT, hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.CONTENT_TYPE})

_HOP_BY_HOP_NAMES = frozenset(name.lower() for name in HOP_BY_HOP)


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """The headers that belong to the message, not the connection (names in any letter case)."""
    kept = CIMultiDict(headers)
    connection = headers.getall(hdrs.CONNECTION, ())
    if not connection:
        # The usual message: only the fixed hop-by-hop names, decided once per name as sent.
        hop = _HOP_BY_HOP_OF
        for name in headers:
            dropped = hop.get(name)
            if dropped is None:
                if len(hop) >= _HOP_BY_HOP_OF_LIMIT:
                    hop.clear()
                dropped = hop[name] = _is_hop_by_hop(name.lower(), _HOP_BY_HOP_NAMES)
            if dropped:
                kept.popall(name, None)
        return kept
    named = _HOP_BY_HOP_NAMES | {token.strip().lower() for value in connection for token in value.split(",")}
    for name in headers:
        if _is_hop_by_hop(name.lower(), named):
            kept.popall(name, None)
    return kept


def _is_hop_by_hop(lowered: str, names: frozenset[str]) -> bool:
    return lowered in names or lowered.startswith("proxy-")


# Header name as sent -> whether it is hop-by-hop when Connection names nothing.
_HOP_BY_HOP_OF: dict[str, bool] = {}
_HOP_BY_HOP_OF_LIMIT: Final = 4096


def append(headers: CIMultiDict[str], name: istr, value: str) -> None:
    if name not in headers:
        headers[name] = value
        return
    previous = ", ".join(headers.popall(name, ()))
    headers[name] = f"{previous}, {value}" if previous else value


REQUEST_ID_HEADERS = (X_REQUEST_ID, istr("X-Openstack-Request-Id"))
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


def request_id_for(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str:
    """The client's request id when it is a sane token, otherwise a fresh OpenStack-style one."""
    for name in REQUEST_ID_HEADERS:
        offered = headers.get(name)
        if offered and _SAFE_REQUEST_ID.fullmatch(offered):
            return offered
    return fresh_request_id()


_UUID4_BITS: Final = ~((0xF << 76) | (0xC << 60))  # the version nibble, the variant's two bits
_UUID4: Final = (0x4 << 76) | (0x8 << 60)


def fresh_request_id() -> str:
    """req-<a version 4 UUID>: a correlation id, not a secret, so no system entropy per request."""
    digits = "%032x" % (random.getrandbits(128) & _UUID4_BITS | _UUID4)
    return f"req-{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


# Header names some server or middleware in front of Glance reads to change the path,
# the prefix or the method it executes, written as a WSGI server maps them to CGI
# variables: upper case, "-" and "_" alike (gunicorn takes SCRIPT_NAME from a trusted
# peer; oslo.middleware, Envoy and IIS-style rewriters read the others).
ROUTING_HEADERS: Final = frozenset({
    "SCRIPT_NAME", "PATH_INFO", "REQUEST_METHOD", "QUERY_STRING", "REQUEST_URI", "REMOTE_USER",
    "X_FORWARDED_PREFIX", "X_SCRIPT_NAME", "X_ORIGINAL_URL", "X_ORIGINAL_URI", "X_REWRITE_URL",
    "X_FORWARDED_URI", "X_FORWARDED_PATH", "X_ENVOY_ORIGINAL_PATH", "X_ORIGINAL_METHOD",
})  # fmt: skip
UNDERSCORE: Final = "underscore"  # the label of any other name with "_"

# Connection may name only hop-by-hop headers; a client must not make the gateway drop,
# through it, a header the gateway decides on or IMS authenticates with.
_KEPT_FROM_CONNECTION: Final = frozenset({
    "host", "authorization", "x-auth-token", "x-subject-token", "x-security-token", "x-project-id",
    "x-sdk-date", "x-sdk-content-sha256", "x-sdk-content-sm3", "accept", "user-agent",
})  # fmt: skip


def routing_header(name: str) -> str | None:
    """The metrics label of a routing header (``script_name``, ``underscore``, ...), or None."""
    mapped = name.upper().replace("-", "_")
    if mapped in ROUTING_HEADERS:
        return mapped.lower()
    return UNDERSCORE if "_" in name else None


# Header name as sent -> routing_header(name): clients send the same few names every time.
_ROUTING_LABELS: dict[str, str | None] = {}
_ROUTING_LABELS_LIMIT: Final = 4096


def routing_headers(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> list[tuple[str, str]]:
    """(name, label) of every routing header present, in order."""
    found = []
    labels = _ROUTING_LABELS
    for name in headers:
        try:
            label = labels[name]
        except KeyError:
            if len(labels) >= _ROUTING_LABELS_LIMIT:
                labels.clear()
            label = labels[name] = routing_header(name)
        if label is not None:
            found.append((name, label))
    return found


def connection_drops_kept_header(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str | None:
    """A header Connection names that the gateway will not drop (Content-*, Host, credentials, ...)."""
    for value in headers.getall(hdrs.CONNECTION, ()):
        for token in value.split(","):
            name = token.strip().lower()
            if name.startswith("content-") or name in _KEPT_FROM_CONNECTION:
                return token.strip()
    return None
