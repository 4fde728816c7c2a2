"""Real OpenStack clients through the gateway in front of Glance 33: python-glanceclient
(CLI and library) and openstacksdk each push 256 MiB up and back, rename the image, set
and remove a custom property, and are refused when they change a forbidden attribute.

What each client shows its user for the gateway's IMS-shaped JSON error is pinned here
and described in README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testing.glance import GlanceEnv, GlanceServer

from .clients import CLIENTS, run_client_flow
from .conftest import GatewayProcess

pytestmark = [pytest.mark.glance, pytest.mark.e2e, pytest.mark.slow]

SIZE_MIB = 256
MIB = 1 << 20
FORBIDDEN = "min_ram"
STEPS = ["create", "upload", "download", "update", "remove_property", "forbidden_update", "delete"]

# The gateway's refusal, as its policy words it (gateway/images.py, gateway/policy.py).
REFUSAL = (
    "Only the name, the description (__description) and customized attributes may be modified through "
    "PATCH /v2/images/{image_id}. Refused: replace '/min_ram': 'min_ram' is an IMS system attribute; "
    "only name, __description and customized attributes may be modified through this API."
)
# What the user is shown: glanceclient's CLI prints "HTTP <message>" for a JSON error
# body and no status code (it exits 1); the library and openstacksdk raise an exception
# carrying the status and the message.
SHOWN = {
    "glanceclient-cli": (None, f"HTTP {REFUSAL}"),
    "glanceclient-lib": (400, REFUSAL),
    "openstacksdk": (400, REFUSAL),
}


@pytest.fixture(scope="module", params=CLIENTS)
def report(
    request: pytest.FixtureRequest,
    glance_env: GlanceEnv,
    gateway: GatewayProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    workdir: Path = tmp_path_factory.mktemp(f"{request.param}-gateway")
    try:
        return run_client_flow(
            glance_env, request.param, gateway.url, size_mib=SIZE_MIB, workdir=workdir, forbidden_attribute=FORBIDDEN
        )
    finally:
        for name in ("upload.bin", "download.bin"):
            (workdir / name).unlink(missing_ok=True)


def test_every_step_but_the_forbidden_one_succeeds(report: dict[str, Any]) -> None:
    assert list(report["steps"]) == STEPS
    failed = [name for name, step in report["steps"].items() if not step["ok"]]
    assert failed == ["forbidden_update"]


def test_upload_through_the_gateway_stores_the_data(report: dict[str, Any]) -> None:
    image = report["steps"]["upload"]["image"]
    assert (image["status"], image["size"]) == ("active", SIZE_MIB * MIB)
    assert image[report["property"]] == "v1"


def test_download_through_the_gateway_returns_the_same_bytes(report: dict[str, Any]) -> None:
    download = report["steps"]["download"]
    assert (download["sha256"], download["size"]) == (report["sha256"], SIZE_MIB * MIB)


def test_update_renames_and_sets_the_property(report: dict[str, Any]) -> None:
    image = report["steps"]["update"]["image"]
    assert image["name"] == f"{report['client']}-renamed"
    assert image[report["property"]] == "v2"


def test_remove_property_removes_only_it(report: dict[str, Any]) -> None:
    image = report["steps"]["remove_property"]["image"]
    assert report["property"] not in image
    assert image["name"] == f"{report['client']}-renamed"


def test_a_forbidden_attribute_is_refused_with_the_gateways_message(report: dict[str, Any]) -> None:
    step = report["steps"]["forbidden_update"]
    assert (step["ok"], step["status"], step["message"]) == (False, *SHOWN[report["client"]])
    assert step["image"][FORBIDDEN] == 0
    assert step["image"]["name"] == f"{report['client']}-renamed"


def test_the_clients_are_the_pinned_ones(report: dict[str, Any], glance: GlanceServer) -> None:
    for name, version in report["versions"].items():
        assert glance.versions[name] == version


def test_the_gateway_never_held_an_image_in_memory(report: dict[str, Any], gateway: GatewayProcess) -> None:
    """Peak resident memory of the gateway process after 256 MiB went up and down."""
    status = Path(f"/proc/{gateway.pid}/status").read_text()
    peak_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    assert peak_kib * 1024 < SIZE_MIB * MIB // 2
