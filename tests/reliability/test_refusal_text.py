"""What the gateway says about a request aiohttp could not parse: a status, a code, and a
message that never repeats the request's bytes."""

from __future__ import annotations

import pytest
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadStatusLine,
    InvalidHeader,
    LineTooLong,
)

from gateway.edge.server import describe

SECRET = "gAAAAAsecret"


@pytest.mark.parametrize(
    ("status", "exc", "expected"),
    [
        (400, LineTooLong(f"X-Auth-Token: {SECRET}...".encode(), 8190), (431, "IMSGW.0431", "The request line or headers are too large (at most 8190 bytes each).")),
        (400, BadHttpMessage("Too many headers received"), (431, "IMSGW.0431", "The request line or headers are too large.")),
        (400, BadHttpMessage(f"Invalid header value char:\n\n  b'X-Auth-Token: {SECRET}'\n  ^"), (400, "IMSGW.0400", "The request is not valid HTTP/1.1: Invalid header value char.")),
        (400, BadHttpMessage("Duplicate 'Content-Length' header found."), (400, "IMSGW.0400", "The request is not valid HTTP/1.1: Duplicate 'Content-Length' header found.")),
        (400, InvalidHeader(f"X-Auth-Token: {SECRET}\x00".encode()), (400, "IMSGW.0400", "The request is not valid HTTP/1.1: Invalid HTTP header.")),
        (400, BadStatusLine(f"GET /?{SECRET} HTTP/1.1"), (400, "IMSGW.0400", "The request is not valid HTTP/1.1: Malformed HTTP request.")),
        (400, BadHttpMessage(f"{SECRET}9 is odd"), (400, "IMSGW.0400", "The request is not valid HTTP/1.1: Malformed HTTP request.")),
        (504, TimeoutError(), (504, "IMSGW.0504", "The request timed out.")),
        (500, RuntimeError(SECRET), (500, "IMSGW.0500", "The gateway failed to handle the request.")),
        (500, None, (500, "IMSGW.0500", "The gateway failed to handle the request.")),
    ],
)
def test_refusals_are_described_without_the_request_bytes(status: int, exc: BaseException | None, expected: tuple[int, str, str]) -> None:
    assert describe(status, exc) == expected
    assert SECRET not in describe(status, exc)[2]
