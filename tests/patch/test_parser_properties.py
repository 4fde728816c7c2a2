"""Properties of gateway.patch and gateway.policy over generated PATCH bodies.

Bodies are built from fragments (ops, nasty pointers, arbitrary values, stray and
repeated members), mostly well-formed for the shape the Content-Type names, so that
both refusals and accepted patches are common.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.patch import parser
from gateway.patch.parser import (
    REASONS,
    V20_MEDIA_TYPE,
    V21_MEDIA_TYPE,
    PatchError,
    parse,
    to_v21_json,
)
from gateway.patch.policy import AttributeClass, Policy

POLICY = Policy()
BOUNDED = settings(max_examples=500, deadline=None)

NASTY_POINTERS = [
    "/name", "/__description", "/__os_type", "/id", "//id", "// id", "/ id ", "/\u00a0id\u2003",
    "/\x1fstatus", "/\u200bid", "/ID", "/__os~0type", "/__os~1type", "/_\u005fos_type",
    "/os_glance_x", "/locations", "/locations/0", "/locations/-", "/locations/ ",
    "/tags/-", "/a/b", "/", "/ ", "", "noslash", "///x", "/x/", "/ / ", "/~", "/~2",
    "/a~", "/\ud800", "/na\udc00me", "/custom", "/\u4e2d", "/~01", "/~1~0", "/a~1b",
    "/min_ram", "/__support_kvm", "/owner", "/my_tag",
]  # fmt: skip
POINTER_ALPHABET = st.sampled_from(
    ["/", "~", "0", "1", "2", " ", "\t", "\u00a0", "\u2003", "\x1f", "\u200b", "_",
     "i", "d", "n", "a", "m", "e", "o", "s", "g", "l", "c", "\ud800", "\U0001f600"]
)  # fmt: skip
GOOD_OPS = ("add", "remove", "replace")
BAD_OPS = ["test", "move", "Add", "", None, 5, True, [], {}]
KEYS = ["op", "path", "value", "add", "remove", "replace", "from", "x"]

plain_pointers = st.builds(
    lambda s: "/" + s, st.text(st.sampled_from("_-.:~01 /abcdimnorstyAIN"), max_size=12)
)
pointers = st.one_of(
    st.sampled_from(NASTY_POINTERS),
    plain_pointers,
    plain_pointers,
    st.builds(lambda s: "/" + s, st.text(POINTER_ALPHABET, max_size=10)),
    st.text(POINTER_ALPHABET, max_size=10),
)


def json_trees(non_finite: bool) -> st.SearchStrategy[Any]:
    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
    leaves |= st.floats(allow_nan=non_finite, allow_infinity=non_finite)
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=3), children, max_size=3),
        max_leaves=6,
    )


json_values = json_trees(non_finite=True)
finite_values = json_trees(non_finite=False)
stray_members = st.lists(
    st.tuples(st.sampled_from(KEYS), st.one_of(pointers, st.sampled_from(BAD_OPS), json_values)),
    max_size=2,
)
content_types = st.sampled_from(
    [V20_MEDIA_TYPE, V21_MEDIA_TYPE] * 6
    + [f"{V21_MEDIA_TYPE}; charset=utf-8", "application/json", None]
)


def rarely(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 9)) == 0


@st.composite
def operation_object(draw: st.DrawFn, v21: bool) -> list[tuple[str, Any]]:
    """One operation object as member pairs, so that a member name may repeat."""
    op = draw(st.sampled_from(BAD_OPS)) if rarely(draw) else draw(st.sampled_from(GOOD_OPS))
    pointer = draw(pointers)
    if v21 != rarely(draw):
        members = [("op", op), ("path", pointer)]
    else:
        members = [(op if isinstance(op, str) else "add", pointer)]
    if not rarely(draw):
        members.append(("value", draw(json_values)))
    if rarely(draw):
        members += draw(stray_members)
    return draw(st.permutations(members))


@st.composite
def documents(draw: st.DrawFn, v21: bool) -> Any:
    if rarely(draw):
        return draw(json_values)
    if not rarely(draw):
        return draw(st.lists(operation_object(v21), min_size=draw(st.integers(0, 1)), max_size=4))
    odd_items = st.one_of(stray_members, json_values.filter(lambda v: not isinstance(v, dict)))
    return draw(st.lists(operation_object(v21) | odd_items, max_size=4))


def to_json(node: Any, ascii_only: bool) -> str:
    """JSON text in which a list of pairs is an object whose member names may repeat."""
    if isinstance(node, list) and node and all(isinstance(n, tuple) for n in node):
        members = (f"{to_json(k, ascii_only)}: {to_json(v, ascii_only)}" for k, v in node)
        return "{" + ", ".join(members) + "}"
    if isinstance(node, list):
        return "[" + ", ".join(to_json(n, ascii_only) for n in node) + "]"
    return json.dumps(node, ensure_ascii=ascii_only)


def as_python(node: Any) -> Any:
    """What Python's json makes of an item: the last repeated member wins."""
    if isinstance(node, list) and node and all(isinstance(n, tuple) for n in node):
        return dict(node)
    return node


@st.composite
def requests(draw: st.DrawFn) -> tuple[str | None, Any, bytes | None]:
    content_type = draw(content_types)
    if rarely(draw):
        return content_type, None, draw(st.none() | st.binary(max_size=40))
    document = draw(documents(v21=content_type != V20_MEDIA_TYPE))
    text = to_json(document, ascii_only=draw(st.booleans()))
    # surrogatepass turns a lone surrogate into invalid UTF-8, as a careless client would.
    return content_type, document, text.encode("utf-8", "surrogatepass")


def passes_policy(attribute: str) -> bool:
    if attribute in POLICY.allowed_system_attributes:
        return True
    return attribute not in POLICY.forbidden_attributes and not attribute.startswith(
        POLICY.forbidden_prefixes
    )


def check(
    content_type: str | None, document: Any, body: bytes | None, checks: bool, duplicates: bool
) -> None:
    try:
        patch = parse(
            content_type, body, glance_attribute_checks=checks, reject_duplicate_members=duplicates
        )
    except PatchError as error:
        event(f"refused: {error.reason}")
        assert error.reason in REASONS
        assert error.status in (400, 403, 415)
        error.message.encode("utf-8")
        if error.index is not None and isinstance(document, list):
            # The changes before the failing item are what those items alone parse to.
            before = json.dumps([as_python(item) for item in document[: error.index]])
            again = parse(content_type, before.encode(), glance_attribute_checks=checks)
            assert again.changes == error.parsed
        return

    violations = POLICY.violations(patch.changes)
    event(f"accepted, {'refused' if violations else 'allowed'} by policy")
    event(f"accepted, {min(len(patch.changes), 2)}+ changes")
    refused = {violation.index for violation in violations}
    for index, change in enumerate(patch.changes):
        allowed = len(change.path) == 1 and passes_policy(change.attribute)
        assert (index not in refused) is allowed
        assert (POLICY.classify(change) is AttributeClass.SYSTEM) is not allowed
    if not violations:
        # What the gateway forwards reads back as exactly what it checked.
        again = parse(V21_MEDIA_TYPE, to_v21_json(patch.changes), glance_attribute_checks=False)
        assert [(c.op, c.path, c.value) for c in again.changes] == [
            (c.op, c.path, c.value) for c in patch.changes
        ]


@BOUNDED
@given(requests(), st.booleans(), st.booleans())
def test_any_body_parses_or_is_refused_with_a_patch_error(
    request: tuple[str | None, Any, bytes | None], checks: bool, duplicates: bool
) -> None:
    check(*request, checks, duplicates)


@st.composite
def well_formed_requests(draw: st.DrawFn) -> tuple[str, Any, bytes]:
    """Operation objects of the right shape, all members present: pointers decide."""
    content_type = draw(st.sampled_from([V20_MEDIA_TYPE, V21_MEDIA_TYPE]))
    items = []
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(GOOD_OPS))
        pointer = draw(st.sampled_from(NASTY_POINTERS) | plain_pointers)
        value = draw(finite_values)
        if content_type == V21_MEDIA_TYPE:
            items.append({"op": op, "path": pointer, "value": value})
        else:
            items.append({op: pointer, "value": value})
    text = json.dumps(items, ensure_ascii=draw(st.booleans()))
    return content_type, items, text.encode("utf-8", "surrogatepass")


@BOUNDED
@given(well_formed_requests(), st.booleans())
def test_what_passes_the_policy_names_no_forbidden_attribute(
    request: tuple[str, Any, bytes], checks: bool
) -> None:
    check(*request, checks, duplicates=True)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4)


@st.composite
def near_plain_documents(draw: st.DrawFn) -> tuple[bool, list[Any]]:
    """Operation objects of exactly the shape's members, the odd one out here and there."""
    v21 = draw(st.booleans())
    items: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from([*GOOD_OPS, *GOOD_OPS, *GOOD_OPS, *BAD_OPS]))
        pointer = draw(
            st.sampled_from(["/locations", "/name", "/ name", "/name ", "/a~0b", "/a/b", "/x/", "/é", "/min_ram"])
            | st.sampled_from(NASTY_POINTERS)
            | st.from_regex(r"/[A-Za-z0-9_.:@+-]{1,8}", fullmatch=True)
            | st.sampled_from([5, None, ["/a"]])
        )
        value = draw(finite_values) if rarely(draw) else draw(scalars)
        if v21:
            item = {"op": op, "path": pointer, "value": value}
        else:
            item = {op if isinstance(op, str) else "add": pointer, "value": value}
        if rarely(draw):  # a member missing, or another one instead
            item[draw(st.sampled_from(["x", "from", "op", "add"]))] = item.pop(draw(st.sampled_from(sorted(item))))
        items.append(item)
    return v21, items


@settings(max_examples=1000, deadline=None)
@given(near_plain_documents(), st.booleans(), st.sampled_from([None, 0, 1, 8]))
def test_the_plain_reading_of_a_body_is_the_full_reading(
    case: tuple[bool, list[Any]], duplicates: bool, depth: int | None
) -> None:
    """A body of plain operation objects is read at once (parser._plain_changes); the full
    reading, every check in Glance's order, gives the same changes, and refuses none."""
    v21, document = case
    plain = parser._plain_changes(document, v21)
    event("read at once" if plain is not None else "read in full")
    if plain is None:
        return
    options = parser._Options(parser._locate_v21 if v21 else parser._locate_v20, False, duplicates, depth)
    assert parser._read_changes(document, options) == plain


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (V21_MEDIA_TYPE, b'[{"op": "replace", "path": "/name", "value": "x"}, {"op": "add", "path": "/k_1", "value": 1}]'),
        (V20_MEDIA_TYPE, b'[{"replace": "/name", "value": "x"}, {"remove": "/__description", "value": null}]'),
        (V21_MEDIA_TYPE, b'[{"op": "replace", "path": "/min_ram", "value": 1024}]'),
    ],
)
def test_the_usual_bodies_are_read_at_once(content_type: str, body: bytes) -> None:
    document = parser._load(body, True)
    assert parser._plain_changes(document, content_type == V21_MEDIA_TYPE) is not None
