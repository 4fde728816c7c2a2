"""The real clients against Glance itself: proves the driver (the gateway suite sends
256 MiB through the gateway; 16 MiB is enough here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testing.glance import GlanceEnv, GlanceServer

from .clients import CLIENTS, run_client_flow

pytestmark = [pytest.mark.glance, pytest.mark.e2e]

SIZE_MIB = 16


@pytest.fixture(scope="module", params=CLIENTS)
def report(
    request: pytest.FixtureRequest,
    glance_env: GlanceEnv,
    glance: GlanceServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    workdir: Path = tmp_path_factory.mktemp(request.param)
    return run_client_flow(glance_env, request.param, glance.url, size_mib=SIZE_MIB, workdir=workdir)


def test_every_step_succeeds(report: dict[str, Any]) -> None:
    failed = {name: step for name, step in report["steps"].items() if not step["ok"]}
    assert failed == {}
    assert list(report["steps"]) == [
        "create",
        "upload",
        "download",
        "update",
        "remove_property",
        "forbidden_update",
        "delete",
    ]


def test_upload_stores_the_data(report: dict[str, Any]) -> None:
    image = report["steps"]["upload"]["image"]
    assert (image["status"], image["size"]) == ("active", SIZE_MIB << 20)
    assert image[report["property"]] == "v1"


def test_download_returns_the_same_bytes(report: dict[str, Any]) -> None:
    download = report["steps"]["download"]
    assert (download["sha256"], download["size"]) == (report["sha256"], report["size"])


def test_update_renames_and_sets_the_property(report: dict[str, Any]) -> None:
    image = report["steps"]["update"]["image"]
    assert image["name"] == f"{report['client']}-renamed"
    assert image[report["property"]] == "v2"


def test_remove_property_removes_only_it(report: dict[str, Any]) -> None:
    image = report["steps"]["remove_property"]["image"]
    assert report["property"] not in image
    assert image["name"] == f"{report['client']}-renamed"


def test_glance_itself_allows_what_the_gateway_forbids(report: dict[str, Any]) -> None:
    step = report["steps"]["forbidden_update"]
    assert step["ok"]
    assert step["image"][report["forbidden_attribute"]] == 512


def test_versions_are_reported(report: dict[str, Any], glance: GlanceServer) -> None:
    for name, version in report["versions"].items():
        assert glance.versions[name] == version
