"""The gateway in front of a real Glance 33, compared with Glance itself.

Every case in cases.py goes to Glance directly and through the gateway, each time to a
fresh image made from BASE_IMAGE the same way. Where the gateway answers by itself it
must answer as Glance does (status and message), unless the difference is deliberate
and documented in docs/compatibility.md; where it refuses, the image behind it is unchanged; where
the change reaches Glance, both images end up identical.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.edge import errors
from gateway.patch import conflicts
from testing.glance import GlanceServer

from .cases import ACCEPT_PATCH, ALL_CASES, MALFORMED, SCHEMA, PatchCase, ops, v20, v21
from .conftest import REPO, GatewayProcess
from .imageapi import V20, V21, ImageApi, Reply, comparable

pytestmark = [pytest.mark.glance, pytest.mark.e2e]

JSON = "application/json"
CreateImage = Callable[[ImageApi], dict[str, Any]]


@dataclass(frozen=True)
class Deliberate:
    """A documented difference: ``row`` starts the first cell of its row in the docs/compatibility.md
    table "Where the gateway deliberately differs from Glance"."""

    row: str
    status: int
    code: str
    message: str | None = None


FORBIDDEN = Deliberate("a forbidden attribute", 400, errors.FORBIDDEN_ATTRIBUTE)
NON_STRING_PATH = Deliberate("a non-string `path`", 400, errors.BAD_REQUEST)
NON_JSON_NUMBER = Deliberate("`NaN`, `Infinity`, `-Infinity` literals", 400, errors.BAD_REQUEST, MALFORMED)
REPEATED_MEMBER = Deliberate("an operation object with a repeated member", 400, errors.BAD_REQUEST)
COMPRESSED = Deliberate(
    "`Content-Encoding: gzip`",
    400,
    errors.BAD_REQUEST,
    "Compressed PATCH bodies (Content-Encoding) are not accepted: send plain JSON.",
)
NO_CONTENT_TYPE = Deliberate(
    "no `Content-Type`",
    415,
    errors.UNSUPPORTED_MEDIA_TYPE,
    f"The request media type  is not supported by this server. Image PATCH expects Content-Type one of: {ACCEPT_PATCH}",
)
LONE_SURROGATE = Deliberate("a `path` with a lone surrogate escape", 400, errors.BAD_REQUEST)
ALL_DELIBERATE = (FORBIDDEN, NON_STRING_PATH, NON_JSON_NUMBER, REPEATED_MEMBER, COMPRESSED, NO_CONTENT_TYPE, LONE_SURROGATE)

_NAMED = {
    **dict.fromkeys(
        ("v21-path-number", "v21-path-null", "v21-path-list", "v20-path-number", "v20-path-null", "v20-path-list"),
        NON_STRING_PATH,
    ),
    **dict.fromkeys(("json-nan-value", "json-nan-in-ignored-value", "json-infinity-in-ignored-value"), NON_JSON_NUMBER),
    "json-duplicate-key-last-wins": REPEATED_MEMBER,
    "ct-missing": NO_CONTENT_TYPE,
    **dict.fromkeys(("pointer-lone-surrogate-v21", "pointer-lone-surrogate-v20"), LONE_SURROGATE),
}


def deliberate(case: PatchCase) -> Deliberate | None:
    """The documented difference a case exercises; every other case with a
    ``gateway_status`` is an attribute the policy forbids."""
    if case.name in _NAMED:
        return _NAMED[case.name]
    return FORBIDDEN if case.gateway_status is not None else None


def decided_by_gateway(case: PatchCase) -> bool:
    """Whether the gateway must answer this case itself: everything the parser refuses
    (value types are left to the upstream) and v2.0 add conflicts."""
    if deliberate(case) is not None or case.status == 415:
        return True
    if case.status == 400:
        return case.message != SCHEMA
    return case.status == 409 and case.content_type == V20 and bool(case.message and case.message.endswith("already present."))


# -- reading answers ------------------------------------------------------------------


def gateway_error(reply: Reply) -> dict[str, Any]:
    """The gateway's own IMS-shaped error object; fails on anything else."""
    assert reply.header("Content-Type") == "application/json; charset=utf-8", reply.body[:300]
    error: dict[str, Any] = reply.json()["error"]
    assert error["code"].startswith("IMSGW.")
    return error


def glance_messages(reply: Reply) -> set[str]:
    """The texts a faithful copy of Glance's error may carry: its specific message, or
    (for 415) both of webob's lines joined as one sentence."""
    error = reply.error
    return {error.message, f"{error.explanation} {error.detail}".strip()}


def patches_reaching(glance: GlanceServer, image_id: str) -> int:
    return glance.access_log.read_text().count(f'"PATCH /v2/images/{image_id} ')


@dataclass(frozen=True)
class Pair:
    """Two images made the same way: one patched directly, one through the gateway."""

    direct: str
    fronted: str


@pytest.fixture
def pair(glance_api: ImageApi, gateway_api: ImageApi, base_images: CreateImage) -> Pair:
    return Pair(base_images(glance_api)["id"], base_images(gateway_api)["id"])


# -- the case table -------------------------------------------------------------------


def test_every_named_difference_is_a_case_with_the_gateways_status() -> None:
    cases = {case.name: case for case in ALL_CASES}
    for name, expected in _NAMED.items():
        # A missing Content-Type differs in the message only.
        wanted = None if expected is NO_CONTENT_TYPE else expected.status
        assert cases[name].gateway_status == wanted, name


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda case: case.name)
def test_patch_case(
    glance: GlanceServer, glance_api: ImageApi, gateway_api: ImageApi, pair: Pair, case: PatchCase
) -> None:
    before = glance_api.get_image(pair.fronted)

    direct = glance_api.patch(pair.direct, case.content_type, case.body, accept=JSON)
    fronted = gateway_api.patch(pair.fronted, case.content_type, case.body, accept=JSON)

    assert direct.status == case.status, direct.body[:600]
    expected = deliberate(case)
    if expected is not None:
        assert_deliberate(fronted, expected)
    elif decided_by_gateway(case):
        assert fronted.status == direct.status, fronted.body[:600]
        assert gateway_error(fronted)["message"] in glance_messages(direct)
    else:
        assert fronted.status == direct.status, fronted.body[:600]
        if direct.status != 200:
            assert fronted.error == direct.error
    if fronted.status == 415:
        assert fronted.header("Accept-Patch") == ACCEPT_PATCH

    after = glance_api.get_image(pair.fronted)
    if fronted.status == 200:
        assert comparable(after) == comparable(glance_api.get_image(pair.direct))
        assert comparable(fronted.json()) == comparable(after)
    else:
        assert after == before
    if decided_by_gateway(case):
        assert patches_reaching(glance, pair.fronted) == 0


def assert_deliberate(reply: Reply, expected: Deliberate) -> None:
    assert reply.status == expected.status, reply.body[:600]
    error = gateway_error(reply)
    assert error["code"] == expected.code
    if expected.message is not None:
        assert error["message"] == expected.message
    if expected is FORBIDDEN:
        assert error["details"]
        for refused in error["details"]:
            assert refused["attribute"] in error["message"]


# -- the differences, documented -------------------------------------------------------


def deliberate_rows(readme: str) -> list[str]:
    section = readme.split("### Where the gateway deliberately differs from Glance", 1)[1]
    table = section.split("\n\n", 2)[1]
    return [line.split("|")[1].strip() for line in table.splitlines()[2:]]


@pytest.mark.parametrize("expected", ALL_DELIBERATE, ids=lambda d: d.row)
def test_each_deliberate_difference_is_documented(expected: Deliberate) -> None:
    rows = deliberate_rows((REPO / "docs" / "compatibility.md").read_text())
    assert any(row.startswith(expected.row) for row in rows), rows


# -- what the case table cannot express ------------------------------------------------


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


@pytest.mark.parametrize(
    ("parts", "status"),
    [((), 400), ((b'[{"op": "replace", ', b'"path": "/name", "value": "chunked"}]'), 200)],
    ids=["empty", "two-chunks"],
)
def test_a_chunked_body_is_read_as_glance_reads_it(
    glance_api: ImageApi, gateway_api: ImageApi, pair: Pair, parts: tuple[bytes, ...], status: int
) -> None:
    headers = {"Content-Type": V21, "Accept": JSON}

    direct = glance_api.request("PATCH", f"/v2/images/{pair.direct}", headers=headers, body=chunks(*parts))
    fronted = gateway_api.request("PATCH", f"/v2/images/{pair.fronted}", headers=headers, body=chunks(*parts))

    assert (direct.status, fronted.status) == (status, status)
    if status == 200:
        assert comparable(fronted.json()) == comparable(direct.json())
    else:
        assert direct.error.text == MALFORMED
        assert gateway_error(fronted)["message"] == MALFORMED


def test_a_compressed_body_is_refused_with_a_clear_message(
    glance_api: ImageApi, gateway_api: ImageApi, pair: Pair
) -> None:
    headers = {"Content-Type": V21, "Content-Encoding": "gzip", "Accept": JSON}
    body = gzip.compress(ops(v21("replace", "/name", "zipped")))
    before = glance_api.get_image(pair.fronted)

    direct = glance_api.request("PATCH", f"/v2/images/{pair.direct}", headers=headers, body=body)
    fronted = gateway_api.request("PATCH", f"/v2/images/{pair.fronted}", headers=headers, body=body)

    assert (direct.status, direct.error.text) == (400, MALFORMED)
    assert_deliberate(fronted, COMPRESSED)
    assert glance_api.get_image(pair.fronted) == before


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (V21, ops(v21("replace", "/name", "x"))),
        (V20, ops(v20("add", "/bebim", "x"))),
        (V20, ops(v20("replace", "/name", "x"))),
    ],
    ids=["v21", "v20-add-checked-first", "v20-rewritten"],
)
def test_an_unknown_image_is_glances_404(
    glance_api: ImageApi, gateway_api: ImageApi, content_type: str, body: bytes
) -> None:
    missing = str(uuid.uuid4())

    direct = glance_api.patch(missing, content_type, body, accept=JSON)
    fronted = gateway_api.patch(missing, content_type, body, accept=JSON)

    assert (direct.status, fronted.status) == (404, 404)
    assert fronted.error == direct.error
    assert fronted.error.text == f"No image found with ID {missing}"


def test_a_forbidden_attribute_of_an_unknown_image_is_refused_before_the_lookup(
    glance_api: ImageApi, gateway_api: ImageApi
) -> None:
    missing = str(uuid.uuid4())
    body = ops(v20("replace", "/id", "x"))

    assert glance_api.patch(missing, V20, body, accept=JSON).status == 403
    assert_deliberate(gateway_api.patch(missing, V20, body, accept=JSON), FORBIDDEN)


# -- Glance's image object --------------------------------------------------------------

# Run in the Glance virtualenv: the names hasattr() finds on the image object that
# ImagesController.update works on, built by Glance's own gateway from its database.
_IMAGE_OBJECT_SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
import glance.common.config, glance.context, glance.db, glance.gateway
glance.common.config.parse_args(["--config-file", sys.argv[1]])
repo = glance.gateway.Gateway().get_repo(glance.context.RequestContext(is_admin=True))
image = repo.get(sys.argv[2])
print(json.dumps({"type": f"{type(image).__module__}.{type(image).__qualname__}",
                  "names": [n for n in dir(image) if hasattr(image, n)]}))
"""


def glance_image_object(glance: GlanceServer, image_id: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(glance.env.python), "-I", "-c", _IMAGE_OBJECT_SCRIPT, str(glance.workdir / "etc" / "glance-api.conf"), image_id],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return found


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def test_the_gateway_knows_every_attribute_of_glances_image_object(
    glance: GlanceServer, glance_api: ImageApi, base_images: CreateImage
) -> None:
    image = base_images(glance_api)

    found = glance_image_object(glance, image["id"])

    assert found["type"] == "glance.notifier.ImageProxy"
    # Python's own __x__ names are left to the policy's "__" prefix.
    measured = {name for name in found["names"] if not _dunder(name)}
    assert measured == set(conflicts.GLANCE_IMAGE_ATTRIBUTES)
    hidden = measured - set(image)
    assert {"image_id", "extra_properties", "member", "delete"} <= hidden


def test_every_hidden_attribute_of_glances_image_object_is_refused_by_the_gateway(
    glance: GlanceServer, glance_api: ImageApi, gateway_api: ImageApi, pair: Pair
) -> None:
    # Glance answers a v2.0 add of each with 409, and lets a v2.1 replace call setattr()
    # on its image object (replace /image_id redirects the save to another image): the
    # gateway's policy forbids them all. The attributes the JSON shows are in the case
    # table; a one-token /locations fails the depth rule before Glance looks at the image.
    shown = set(glance_api.get_image(pair.direct))
    names = sorted(conflicts.GLANCE_IMAGE_ATTRIBUTES - shown - {"locations"})
    answers = {}
    for name in names:
        body = ops(v20("add", f"/{name}", "x"))
        direct = glance_api.patch(pair.direct, V20, body, accept=JSON)
        fronted = gateway_api.patch(pair.fronted, V20, body, accept=JSON)
        answers[name] = (direct.status, direct.error.message, fronted.status, gateway_error(fronted))

    for name, (status, message, gateway_status, error) in answers.items():
        assert (status, message) == (409, f"Property {name} already present."), name
        assert (gateway_status, error["code"]) == (400, errors.FORBIDDEN_ATTRIBUTE), name
        assert f"'/{name}'" in error["message"], name
    assert patches_reaching(glance, pair.fronted) == 0
    assert comparable(glance_api.get_image(pair.fronted)) == comparable(glance_api.get_image(pair.direct))


# -- versions ---------------------------------------------------------------------------


def _version_ids(reply: Reply) -> list[tuple[str, str]]:
    return [(version["id"], version["status"]) for version in reply.json()["versions"]]


def test_the_gateway_runs_in_front_of_the_pinned_glance(
    gateway: GatewayProcess, glance: GlanceServer, glance_api: ImageApi, gateway_api: ImageApi
) -> None:
    direct, fronted = glance_api.request("GET", "/versions"), gateway_api.request("GET", "/versions")

    assert (direct.status, fronted.status) == (200, 200)
    assert _version_ids(fronted) == _version_ids(direct)
    assert glance.versions["glance"] == "33.0.0"
    print(f"gateway {gateway.url} in front of Glance {glance.url}: {glance.env.reported_versions}")
