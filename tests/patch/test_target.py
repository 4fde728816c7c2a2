"""Reading request targets as IMS's stack may: normalisation, route classes, image ids, method
overrides in the query, control characters, the json-patch media type gate."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.patch import target as routes
from gateway.patch.target import (
    classify,
    has_control_characters,
    image_id,
    is_form,
    is_json_patch,
    media_types,
    normalize,
    query_overrides_method,
)
from gateway.vocabulary import Route

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


V20 = "application/openstack-images-v2.0-json-patch"
V21 = "application/openstack-images-v2.1-json-patch"


@pytest.mark.parametrize(
    ("values", "json_patch"),
    [
        ([V21], True),
        ([V20 + "; charset=UTF-8"], True),
        ([V21.upper()], True),
        ([" " + V21 + " ;x=1"], True),
        (["application/json, " + V20], True),  # uWSGI joins repeated fields with ", "
        (["application/json", V21], True),
        (["application/json"], False),
        (["application/json-patch+json"], False),
        (["application/openstack-images-v2.2-json-patch"], False),
        ([], False),
    ],
)
def test_every_reading_of_the_content_type_is_gated(values: list[str], json_patch: bool) -> None:
    assert is_json_patch(values) is json_patch


def test_media_types_are_read_loosely() -> None:
    assert media_types(["A/B; q=1, c/D ", "e/f;g"]) == {"a/b", "c/d", "e/f"}


@pytest.mark.parametrize(
    ("values", "form"),
    [(["application/x-www-form-urlencoded"], True), (["Multipart/Form-Data; boundary=x"], True), (["application/json"], False)],
)
def test_forms_in_any_spelling(values: list[str], form: bool) -> None:
    assert is_form(values) is form


@pytest.mark.parametrize(
    ("raw_path", "overrides"),
    [
        ("/v2/images/x?_method=PATCH", True),
        ("/v2/images/x?a=1&_method=patch", True),
        ("/v2/images/x?a=1;_method=PATCH", True),
        ("/v2/images/x?%5Fmethod=PATCH", True),
        ("/v2/images/x?%255Fmethod=PATCH", True),  # decoded twice
        ("/v2/images/x?+_method+=PATCH", True),
        ("/v2/images/x?_METHOD=DELETE", True),
        ("/v2/images/x?_method", True),
        ("/v2/images/x?name=my_method", True),  # raw substring: refused, as Routes' own pre-check reads it
        ("/v2/images/x?method=PATCH", False),
        ("/v2/images/x?limit=10&marker=abc", False),
        ("/v2/images/x", False),
        ("/v2/images/_method", False),  # the path is not the query
    ],
)
def test_method_overrides_in_the_query_in_every_spelling(raw_path: str, overrides: bool) -> None:
    assert query_overrides_method(raw_path) is overrides


@pytest.mark.parametrize(
    ("raw_path", "control"),
    [
        ("/v2/images/x%0A", True),
        ("/v2/images/x%250a", True),
        ("/v2/images/x%00", True),
        ("/v2/images/x%7F", True),
        ("/v2/images/x\t", True),
        ("/v2/images/x?a=%0A", False),  # only the path
        ("/v2/images/x%20y", False),
        ("/v2/images/x", False),
    ],
)
def test_control_characters_anywhere_in_the_decoded_path(raw_path: str, control: bool) -> None:
    assert has_control_characters(raw_path) is control


@pytest.mark.parametrize(
    ("raw_path", "image"),
    [
        ("/v2/images/abc", "abc"),
        ("/v2.1/images/abc/", "abc"),
        ("/V2/IMAGES/abc", "abc"),
        ("/images/abc", "abc"),  # version-less: Glance routes it by Accept
        ("//images/a%62c?x=1", "abc"),
        ("/v2/images/abc/file", None),
        ("/v2/images", None),
        ("/v2/cloudimages/abc", None),
        ("/foo/v2/images/abc", None),
    ],
)
def test_the_image_a_target_names(raw_path: str, image: str | None) -> None:
    assert image_id(raw_path) == image


def test_a_json_patch_body_is_an_image_patch_on_any_method_and_path() -> None:
    assert classify("POST", "/anything", json_patch=True) is Route.IMAGE_PATCH
    assert classify("PATCH", "/images/abc") is Route.IMAGE_PATCH
    assert classify("PATCH", "/v2/cloudimages/abc") is Route.OTHER
    assert classify("GET", "/images/abc/file") is Route.IMAGE_DATA


# Spellings that only the slow path of normalize and the query reader see (mutation testing
# found each one unchecked: see docs/testing.md).
@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [
        ("/v2/images/x#frag#more", "/v2/images/x"),
        ("/v2/images/a b#c", "/v2/images/a b"),
        ("/v2/images;p;q/x", "/v2/images/x"),
        ("/v2\\images\\x", "/v2/images/x"),
        ("/Xa/./Xb", "/Xa/Xb"),
    ],
)
def test_normalize_slow_path_spellings(raw_path: str, expected: str) -> None:
    assert normalize(raw_path) == expected


@pytest.mark.parametrize(
    "raw_path",
    ["/v2/images/x?%5Fmethod=1?x", "/v2/images/x?a=1&%5Fmethod=x", "/v2/images/x?a=1;%5Fmethod=x", "/v2/images/x?%5Fmethod=a=b"],
)
def test_an_encoded_method_override_is_found_wherever_it_sits_in_the_query(raw_path: str) -> None:
    assert query_overrides_method(raw_path)


@pytest.mark.parametrize("raw_path", ["/v2/images/x?q=%0A", "/v2/images/x?q=%0A?r", "/v2/images/x?a=\n", "/v2/images/x?a=\n?b"])
def test_control_characters_in_the_query_are_not_the_paths(raw_path: str) -> None:
    assert not has_control_characters(raw_path)


def test_media_type_parameters_are_all_dropped() -> None:
    assert media_types(["application/openstack-images-v2.1-json-patch; a=1; b=2"]) == {"application/openstack-images-v2.1-json-patch"}
    assert is_json_patch(["application/openstack-images-v2.1-json-patch; a=1; b=2"])
