"""Header hygiene: what belongs to the message and goes on, what belongs to the connection.

Only hop-by-hop headers are dropped (RFC 9110 section 7.6.1); the forwarding headers and
the request id are added.
"""

from __future__ import annotations

import random
import re

from aiohttp import hdrs, web
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
    dropped = _HOP_BY_HOP_NAMES
    for value in headers.getall(hdrs.CONNECTION, ()):
        dropped = dropped | {token.strip().lower() for token in value.split(",")}
    kept = CIMultiDict(headers)
    for name in headers:
        lowered = name.lower()
        if lowered in dropped or lowered.startswith("proxy-"):
            kept.popall(name, None)
    return kept


def append(headers: CIMultiDict[str], name: istr, value: str) -> None:
    previous = ", ".join(headers.popall(name, ()))
    headers[name] = f"{previous}, {value}" if previous else value


REQUEST_ID_HEADERS = (X_REQUEST_ID, "X-Openstack-Request-Id")
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


def request_id_for(request: web.Request) -> str:
    """The client's request id when it is a sane token, otherwise a fresh OpenStack-style one."""
    for name in REQUEST_ID_HEADERS:
        offered = request.headers.get(name)
        if offered and _SAFE_REQUEST_ID.fullmatch(offered):
            return offered
    return fresh_request_id()


def fresh_request_id() -> str:
    """req-<a version 4 UUID>: a correlation id, not a secret, so no system entropy per request."""
    digits = f"{random.getrandbits(128):032x}"
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"req-{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
