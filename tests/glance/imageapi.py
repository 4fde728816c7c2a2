"""A small, exact Glance v2 image client for tests, pointed at any base URL (Glance
itself or the gateway in front of it).

It uses http.client so that a test controls every header byte: no default
Content-Type, no Accept unless asked, the raw media type sent as written.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

V20 = "application/openstack-images-v2.0-json-patch"
V21 = "application/openstack-images-v2.1-json-patch"

# Attributes that differ between two images even when the same changes were applied.
VOLATILE_ATTRIBUTES = frozenset({"id", "created_at", "updated_at", "self", "file"})

TIMEOUT_S = 300


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> GlanceError:
        return parse_error(self.header("Content-Type") or "", self.body)


@dataclass(frozen=True)
class GlanceError:
    """Glance's (webob's) error page reduced to its two text lines.

    ``explanation`` is the first line: for the PATCH parser's own errors it is the
    specific message; for errors raised by the domain layer it is webob's generic text
    for the status and the specific message is ``detail``.
    """

    explanation: str
    detail: str

    @property
    def message(self) -> str:
        return self.detail or self.explanation

    @property
    def text(self) -> str:
        return "\n".join(part for part in (self.explanation, self.detail) if part)


_BR = "<br /><br />"


def parse_error(content_type: str, body: bytes) -> GlanceError:
    """Read a webob error body in any of the three forms Glance picks by Accept:
    application/json, text/html (Accept: */* or text/html) and text/plain (no Accept)."""
    text = body.decode("utf-8", errors="replace")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        parts = json.loads(text)["message"].split(_BR, 1)
    elif media == "text/html":
        inner = re.search(r"</h1>(.*)</body>", text, re.DOTALL)
        parts = html.unescape(inner.group(1) if inner else text).split(_BR, 1)
    else:
        # "<status line>\n\n<explanation>\n\n<detail> <comment>"
        parts = text.split("\n\n", 1)[-1].split("\n\n", 1)
    explanation = parts[0].strip()
    detail = parts[1].strip() if len(parts) > 1 else ""
    return GlanceError(explanation, detail)


class ImageApi:
    """Glance v2 images at ``base_url``; one connection per request."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
    ) -> Reply:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=TIMEOUT_S)
        try:
            # An iterable body without Content-Length goes out chunked.
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def create_image(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        reply = self.request(
            "POST",
            "/v2/images",
            headers={"Content-Type": "application/json"},
            body=json.dumps(attributes).encode(),
        )
        _expect(reply, 201)
        return reply.json()

    def get_image(self, image_id: str) -> dict[str, Any]:
        reply = self.request("GET", f"/v2/images/{image_id}")
        _expect(reply, 200)
        return reply.json()

    def delete_image(self, image_id: str) -> None:
        _expect(self.request("DELETE", f"/v2/images/{image_id}"), 204)

    def patch(
        self,
        image_id: str,
        content_type: str | None,
        body: bytes,
        *,
        accept: str | None = None,
    ) -> Reply:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        return self.request("PATCH", f"/v2/images/{image_id}", headers=headers, body=body)

    def upload(self, image_id: str, chunks: Iterable[bytes]) -> None:
        reply = self.request(
            "PUT",
            f"/v2/images/{image_id}/file",
            headers={"Content-Type": "application/octet-stream"},
            body=chunks,
        )
        _expect(reply, 204)

    def download_sha256(self, image_id: str) -> tuple[str, int]:
        """Stream the image data; return its sha256 and length."""
        connection = http.client.HTTPConnection(self._host, self._port, timeout=TIMEOUT_S)
        try:
            connection.request("GET", f"/v2/images/{image_id}/file")
            response = connection.getresponse()
            if response.status != 200:
                raise AssertionError(f"download answered {response.status}: {response.read()!r}")
            digest = hashlib.sha256()
            size = 0
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
            return digest.hexdigest(), size
        finally:
            connection.close()


def comparable(image: Mapping[str, Any]) -> dict[str, Any]:
    """The image without the attributes that differ between equal images; tags are a
    set in Glance and come back in any order."""
    kept = {k: v for k, v in image.items() if k not in VOLATILE_ATTRIBUTES}
    if isinstance(kept.get("tags"), list):
        kept["tags"] = sorted(kept["tags"])
    return kept


def _expect(reply: Reply, status: int) -> None:
    if reply.status != status:
        raise AssertionError(f"expected {status}, got {reply.status}: {reply.body[:500]!r}")
