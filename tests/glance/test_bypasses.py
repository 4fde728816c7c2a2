"""Every way in the team found, against a real Glance behind gunicorn, straight and through the gateway.

Straight to Glance, most vectors change a forbidden attribute, delete or deactivate the
image: they are real. Through the gateway none may: the image read back directly from
Glance is unchanged (by an independent reading of which attributes may change) and still
there, whatever the gateway answered.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from testing.glance import GlanceServer
from tests.oracle import forbidden_changes

from .bypass_vectors import VECTORS, Vector
from .conftest import GatewayProcess
from .imageapi import ImageApi

pytestmark = [pytest.mark.glance, pytest.mark.e2e]

# A client deleting its own image is not a bypass: the gateway forwards DELETE as it is.
PLAIN_DELETES = {"control/plain-delete", "version-negotiation/delete-via-accept"}
V21 = "application/openstack-images-v2.1-json-patch"


def send_raw(url: str, data: bytes, timeout: float) -> bytes:
    """Write ``data``; read until the peer closes or goes quiet (a stalled pipeline)."""
    parts = urlsplit(url)
    received = bytearray()
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(min(left, 1.0) if received else left)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


class Images:
    """One active image, replaced by a fresh one whenever a vector changed it."""

    def __init__(self, api: ImageApi) -> None:
        self.api = api
        self.current = self._fresh()

    def _fresh(self) -> dict[str, Any]:
        image = self.api.create_image({"name": "bypass", "container_format": "bare", "disk_format": "raw"})
        self.api.upload(image["id"], [b"x" * 16])
        return self.api.get_image(image["id"])

    def read(self) -> dict[str, Any] | None:
        reply = self.api.request("GET", f"/v2/images/{self.current['id']}")
        return reply.json() if reply.status == 200 else None

    def replace(self) -> None:
        image_id = self.current["id"]
        if self.api.request("GET", f"/v2/images/{image_id}").status == 200:
            self.api.request("POST", f"/v2/images/{image_id}/actions/reactivate")
            self.api.request(
                "PATCH", f"/v2/images/{image_id}", headers={"Content-Type": V21},
                body=b'[{"op": "replace", "path": "/protected", "value": false}]',
            )  # fmt: skip
            self.api.delete_image(image_id)
        self.current = self._fresh()

    def try_vector(self, url: str, vector: Vector) -> list[str]:
        """Send the vector against the current image; what it changed that it may not have."""
        send_raw(url, vector.render(self.current["id"]), vector.timeout)
        now = self.read()
        changed = forbidden_changes(self.current, now)
        if now is not None and now["status"] != self.current["status"] and not any(c.startswith("status") for c in changed):
            changed.append(f"status: {self.current['status']!r} -> {now['status']!r}")
        if changed or now != self.current:
            self.replace()
        return changed


@pytest.fixture(scope="module")
def images(glance_api: ImageApi) -> Iterator[Images]:
    pool = Images(glance_api)
    yield pool
    pool.replace()
    glance_api.delete_image(pool.current["id"])


@pytest.mark.parametrize("vector", VECTORS, ids=lambda vector: vector.name)
def test_through_the_gateway_nothing_forbidden_happens(vector: Vector, gateway: GatewayProcess, images: Images) -> None:
    changed = images.try_vector(gateway.url, vector)
    if vector.name in PLAIN_DELETES:
        assert changed in ([], ["deleted"])
    else:
        assert changed == [], vector.note


def test_straight_to_glance_the_corpus_is_real(glance: GlanceServer, images: Images) -> None:
    """The vectors do what they are for when nothing stands in front of Glance."""
    executed = [vector.name for vector in VECTORS if images.try_vector(glance.url, vector)]
    # On Glance 33 with gunicorn 27: 181 change a forbidden attribute, 10 delete or deactivate.
    assert len(executed) >= 180, executed
    assert {"control/canonical-v21", "method-override-query/post-to-patch"} <= set(executed)
