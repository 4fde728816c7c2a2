"""IMS-shaped error answers: ``{"error": {"code": ..., "message": ...}}`` with Glance's messages."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

# IMS publishes error codes for its 400 answers only; other statuses use EMU.<status>.
INVALID_REQUEST = "IMG.0001"
NAME_TOO_LONG = "IMG.0002"
NAME_INVALID = "IMG.0003"
DESCRIPTION_TOO_LONG = "IMG.0004"
EMPTY_BODY = "IMG.0007"

def status_code(status: int) -> str:
    return INVALID_REQUEST if status == 400 else f"EMU.{status:04d}"


class ImsError(Exception):
    """An IMS-shaped error answer; rendered once, by the emulator's error middleware."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or status_code(status)
        self.headers = dict(headers or {})


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False).encode()
    response = web.Response(status=status, body=body, content_type="application/json", charset="utf-8")
    if headers:
        response.headers.update(headers)
    return response
