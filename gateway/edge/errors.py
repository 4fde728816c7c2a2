"""The gateway's own answers: the error classes and how they are rendered.

Every error the gateway answers by itself is JSON in the IMS error shape,
``{"error": {"code": ..., "message": ...}}``, so that clients which already parse IMS
errors read ours too. The request id is added to the error object so that a client
author can quote it to an operator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.vocabulary import FailureKind

# Codes of our own, in IMS's "PREFIX.NNNN" style; IMS uses the IMG. prefix. NNNN is the
# HTTP status but for FORBIDDEN_ATTRIBUTE, answered with 400 (one status for one rule,
# where Glance answers 403 for some attributes and 200 for others): scripts match on the
# code, so it stays, and the refusal carries "reason": "forbidden_attribute" besides.
BAD_REQUEST = "IMSGW.0400"
UNAUTHORIZED = "IMSGW.0401"
FORBIDDEN_ATTRIBUTE = "IMSGW.0403"
REQUEST_TIMEOUT = "IMSGW.0408"
CONFLICT = "IMSGW.0409"
GONE = "IMSGW.0410"
TOO_LARGE = "IMSGW.0413"
UNSUPPORTED_MEDIA_TYPE = "IMSGW.0415"
HEADERS_TOO_LARGE = "IMSGW.0431"
INTERNAL = "IMSGW.0500"
NOT_IMPLEMENTED = "IMSGW.0501"
UPSTREAM_UNREACHABLE = "IMSGW.0502"
UPSTREAM_TIMEOUT = "IMSGW.0504"
HTTP_VERSION_NOT_SUPPORTED = "IMSGW.0505"

JSON_CONTENT_TYPE = "application/json"
_JSON_UTF8 = "application/json; charset=utf-8"
_ENCODER = json.JSONEncoder(ensure_ascii=False)
# A JSON string literal, non-ASCII kept as UTF-8 (json's own C encoder for str).
_STRING = json.encoder.encode_basestring


class GatewayError(Exception):
    """An answer the gateway gives by itself instead of forwarding the request."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        details: Any = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = details
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """Why a request could not be completed upstream."""

    kind: FailureKind
    status: int  # what the client gets: 502 or 504
    message: str


class UpstreamError(GatewayError):
    """The upstream could not be reached or did not answer: 502 or 504."""

    def __init__(self, failure: UpstreamFailure) -> None:
        code = UPSTREAM_TIMEOUT if failure.status == 504 else UPSTREAM_UNREACHABLE
        super().__init__(failure.status, code, failure.message)
        self.failure = failure


def error_document(
    code: str, message: str, *, request_id: str | None = None, details: Any = None, reason: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code}
    if reason is not None:
        error["reason"] = reason
    error["message"] = message
    if details is not None:
        error["details"] = details
    if request_id:
        error["request_id"] = request_id
    return {"error": error}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    details: Any = None,
    reason: str | None = None,
) -> web.Response:
    # error_document(...) as JSON, made in parts: most errors have only strings to encode.
    parts = ['{"error": {"code": ', _STRING(code)]
    if reason is not None:
        parts += [', "reason": ', _STRING(reason)]
    parts += [', "message": ', _STRING(message)]
    if details is not None:
        parts += [', "details": ', _ENCODER.encode(details)]
    if request_id:
        parts += [', "request_id": ', _STRING(request_id)]
    parts.append("}}")
    body = "".join(parts).encode("utf-8", "backslashreplace")
    response = web.Response(status=status, body=body, headers={"Content-Type": _JSON_UTF8, **(headers or {})})
    if headers and response.headers.get("Connection", "").lower() == "close":
        # The header alone would not stop aiohttp from reading a next request.
        response.force_close()
    return response
