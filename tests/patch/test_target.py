"""Route classification: the plain-path shortcut gives exactly what the full normalisation gives."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.patch import target as routes
from gateway.patch.target import Route, classify, normalize

_NEVER = re.compile(r"(?!)")


def normalized_the_long_way(raw_path: str) -> str:
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(routes, "_PLAIN", _NEVER)
        return normalize(raw_path)


@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [
        ("/v2/images/1bea47ed-f6a9", "/v2/images/1bea47ed-f6a9"),
        ("/v2/images/1bea47ed?x=%2F..#y", "/v2/images/1bea47ed"),
        ("/v2/images/", "/v2/images"),
        ("/v2//images/./x/../y", "/v2/images/y"),
        ("/v2/images/a%2Fb", "/v2/images/a/b"),
        ("/v2/images;v=1/x", "/v2/images/x"),
        ("/V2.1/IMAGES/x", "/V2.1/IMAGES/x"),
    ],
)
def test_a_path_is_normalized_as_a_lenient_upstream_reads_it(raw_path: str, expected: str) -> None:
    assert normalize(raw_path) == expected


@given(st.text(alphabet="/abcAB12-_~.%2Ff;?#=\\", max_size=40).map(lambda tail: "/" + tail))
def test_the_shortcut_never_changes_the_answer(raw_path: str) -> None:
    assert normalize(raw_path) == normalized_the_long_way(raw_path)


@pytest.mark.parametrize(
    ("method", "raw_path", "route"),
    [
        ("PATCH", "/v2/images/x", Route.IMAGE_PATCH),
        ("patch", "/v2.1/images/x/", Route.IMAGE_PATCH),
        ("PATCH", "/v2/images/%78", Route.IMAGE_PATCH),
        ("PUT", "/v2/images/x/file", Route.IMAGE_DATA),
        ("GET", "/v2/images?limit=1", Route.IMAGES),
        ("GET", "/v3/images", Route.OTHER),
    ],
)
def test_requests_are_classified_on_the_normalized_path(method: str, raw_path: str, route: Route) -> None:
    assert classify(method, raw_path) is route
