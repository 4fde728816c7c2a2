"""gateway.patch against Glance's RequestDeserializer.update, rule by rule.

Messages are Glance 33.0's, byte for byte (glance/api/v2/images.py,
glance/common/wsgi.py); the section numbers refer to reference/glance-json-patch.md.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.patch.parser import (
    ABSENT,
    ACCEPT_PATCH,
    GLANCE_READ_ONLY_ATTRIBUTES,
    GLANCE_RESERVED_ATTRIBUTES,
    OPS,
    REASONS,
    V20_MEDIA_TYPE,
    V21_MEDIA_TYPE,
    Change,
    Patch,
    PatchError,
    Shape,
    encode_pointer,
    parse,
    shape_of,
    to_v21_json,
)

V20 = V20_MEDIA_TYPE
V21 = V21_MEDIA_TYPE

MALFORMED = "Malformed JSON in request body."
NOT_ARRAY = "Request body must be a JSON array of operation objects."
NOT_LIST_OR_DICT = "Unexpected body type. Expected list/dict."
NOT_OBJECT = "Operations must be JSON objects."
NO_OP = (
    "Unable to find `op` in JSON Schema change. "
    "It must be one of the following: add, remove, replace."
)
NO_PATH = "Unable to find 'path' in JSON Schema change"
TWO_OPS = 'Operation objects must contain only one member named "add", "remove", or "replace".'
NO_V20_OP = (
    'Operation objects must contain exactly one member named "add", "remove", or "replace".'
)


def body_of(document: Any) -> bytes:
    return json.dumps(document).encode()


def refusal(content_type: str | None, body: bytes | None, **options: Any) -> PatchError:
    with pytest.raises(PatchError) as caught:
        parse(content_type, body, **options)
    return caught.value


def invalid_op(op: str) -> str:
    return f"Invalid operation: `{op}`. It must be one of the following: add, remove, replace."


def v21_add(pointer: Any, value: Any = "x") -> bytes:
    return body_of([{"op": "add", "path": pointer, "value": value}])


# -- 1. Content-Type ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "shape"),
    [
        (V20, Shape.V20),
        (V21, Shape.V21),
        (f"{V21}; charset=UTF-8", Shape.V21),
        (f"{V20};charset=utf-8", Shape.V20),
        (f"{V21};", Shape.V21),
        (f"{V21}; anything at all; x=y", Shape.V21),
    ],
)
def test_media_types_name_the_shape(content_type: str, shape: Shape) -> None:
    assert shape_of(content_type) is shape
    assert parse(content_type, b"[]") == Patch(shape, ())


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "application/json-patch+json",
        "application/json-patch",
        "application/openstack-images-v2.1-json-patch ",
        f"{V21} ;charset=utf-8",
        f" {V21}",
        V21.upper(),
        "Application/openstack-images-v2.1-json-patch",
        "application/openstack-images-v2.2-json-patch",
        "application/openstack-images-json-patch",
        f"{V21}+json",
        f"{V20},{V21}",
    ],
)
def test_other_media_types_are_415_with_accept_patch(content_type: str | None) -> None:
    error = refusal(content_type, body_of([]))

    assert (error.status, error.reason, error.index, error.parsed) == (
        415,
        "unsupported_media_type",
        None,
        (),
    )
    assert error.headers == {
        "Accept-Patch": (
            "application/openstack-images-v2.0-json-patch, "
            "application/openstack-images-v2.1-json-patch"
        )
    }
    assert error.message == (
        f"The request media type {content_type or ''} is not supported by this server. "
        "Image PATCH expects Content-Type one of: application/openstack-images-v2.0-json-patch, "
        "application/openstack-images-v2.1-json-patch"
    )


def test_accept_patch_lists_both_media_types_as_glance_does() -> None:
    assert ", ".join(sorted([V21, V20])) == ACCEPT_PATCH


def test_media_type_is_checked_before_the_body() -> None:
    assert refusal("application/json", None).status == 415
    assert refusal("application/json", b"{not json").status == 415


def test_415_message_spells_out_undecodable_header_bytes() -> None:
    # aiohttp hands undecodable header bytes over as lone surrogates.
    error = refusal("application/\udcff", b"[]")

    assert error.message.startswith(
        "The request media type application/\\udcff is not supported by this server. "
    )
    error.message.encode("utf-8")


def test_a_refused_media_type_gets_its_own_headers_dict() -> None:
    first, second = refusal(None, b"[]"), refusal(None, b"[]")
    first.headers["X"] = "y"

    assert second.headers == {"Accept-Patch": ACCEPT_PATCH}


# -- 1.2 to 1.4: the body ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason", "message"),
    [
        (None, "missing_body", "Body expected in request."),
        (b"", "malformed_json", MALFORMED),
        (b"   \r\n", "malformed_json", MALFORMED),
        (b"[", "malformed_json", MALFORMED),
        (b"[{'op': 'add'}]", "malformed_json", MALFORMED),
        (b"[],", "malformed_json", MALFORMED),
        (b"[] []", "malformed_json", MALFORMED),
        (b'["\x01"]', "malformed_json", MALFORMED),
        (b"{...}", "malformed_json", MALFORMED),
        (b"{}", "bad_body_type", NOT_ARRAY),
        (b'{"op": "add", "path": "/x", "value": "y"}', "bad_body_type", NOT_ARRAY),
        (b'"string"', "bad_body_type", NOT_LIST_OR_DICT),
        (b"123", "bad_body_type", NOT_LIST_OR_DICT),
        (b"1.5", "bad_body_type", NOT_LIST_OR_DICT),
        (b"true", "bad_body_type", NOT_LIST_OR_DICT),
        (b"false", "bad_body_type", NOT_LIST_OR_DICT),
        (b"null", "bad_body_type", NOT_LIST_OR_DICT),
    ],
)
@pytest.mark.parametrize("content_type", [V20, V21])
def test_body_level_refusals(
    content_type: str, body: bytes | None, reason: str, message: str
) -> None:
    error = refusal(content_type, body)

    assert (error.status, error.reason, error.message) == (400, reason, message)
    assert (error.index, error.parsed, error.headers) == (None, (), {})


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("invalid UTF-8", b'[{"op": "add", "path": "/a\xff", "value": "x"}]'),
        ("overlong UTF-8", b'[{"op": "add", "path": "/\xc0\xaf", "value": "x"}]'),
        ("UTF-8 surrogate bytes", b'[{"op": "add", "path": "/\xed\xa0\x80", "value": "x"}]'),
        ("UTF-8 BOM", b"\xef\xbb\xbf[]"),
        ("UTF-16 LE with BOM", "[]".encode("utf-16")),
        ("UTF-16 BE", "[]".encode("utf-16-be")),
        ("UTF-32", "[]".encode("utf-32")),
        ("NaN", b'[{"op": "add", "path": "/x", "value": NaN}]'),
        ("Infinity", b'[{"op": "add", "path": "/x", "value": Infinity}]'),
        ("-Infinity", b'[{"op": "add", "path": "/x", "value": -Infinity}]'),
        ("NaN deep in a value", b'[{"op": "add", "path": "/x", "value": {"a": [NaN]}}]'),
        ("NaN as the body", b"NaN"),
        ("number overflowing to infinity", b'[{"op": "add", "path": "/x", "value": 1e400}]'),
        ("negative overflow", b'[{"op": "add", "path": "/x", "value": -1e400}]'),
        ("integer over 4300 digits", b'[{"op": "add", "path": "/x", "value": 1' + b"0" * 5000 + b"}]"),
        ("100000 unclosed brackets", b"[" * 100_000),
        ("100000 nested arrays", b"[" * 100_000 + b"]" * 100_000),
        ("deep nesting in a value", b'[{"op": "add", "path": "/x", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]"),
        ("deep objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    ],
)  # fmt: skip
@pytest.mark.parametrize("duplicates", [False, True], ids=["plain", "duplicate-aware"])
def test_malformed_json(name: str, body: bytes, duplicates: bool) -> None:
    error = refusal(V21, body, reject_duplicate_members=duplicates)

    assert (error.status, error.reason, error.message, error.index) == (
        400,
        "malformed_json",
        MALFORMED,
        None,
    )


@pytest.mark.parametrize(
    ("value_json", "value"),
    [
        (b"1.5", 1.5),
        (b"-0.0", -0.0),
        (b"1e308", 1e308),
        (b"1" + b"0" * 4000, 10**4000),
        (b"[[[[[[[[[[1]]]]]]]]]]", [[[[[[[[[[1]]]]]]]]]]),
        (b'"\\u00e9t\\u00e9"', "\u00e9t\u00e9"),
        ('"\u00e9t\u00e9"'.encode(), "\u00e9t\u00e9"),
        (b'"\\ud83d\\ude00"', "\U0001f600"),
        (b'"\\ud800"', "\ud800"),
        (b"null", None),
    ],
)
def test_values_are_kept_as_json_read_them(value_json: bytes, value: Any) -> None:
    body = b'[{"op": "add", "path": "/x", "value": ' + value_json + b"}]"

    assert parse(V21, body).changes[0].value == value


def test_empty_array_is_no_change() -> None:
    assert parse(V21, b"[]") == Patch(Shape.V21, ())
    assert parse(V20, b" [ ] ") == Patch(Shape.V20, ())


# -- 1.5, 2: each operation object -------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [["a", "list"], "string", 123, 1.5, True, False, None],
)
@pytest.mark.parametrize("content_type", [V20, V21])
def test_items_must_be_objects(content_type: str, item: Any) -> None:
    error = refusal(content_type, body_of([item]))

    assert (error.status, error.reason, error.message, error.index) == (
        400,
        "bad_operation_object",
        NOT_OBJECT,
        0,
    )


@pytest.mark.parametrize(
    ("item", "reason", "message"),
    [
        ({"path": "/colburn", "value": "arcata"}, "missing_op", NO_OP),
        ({"op": None, "path": "/colburn", "value": "arcata"}, "missing_op", NO_OP),
        ({"op": "invalid", "path": "/name", "value": "fedora"}, "bad_op", invalid_op("invalid")),
        ({"op": "test", "path": "/name", "value": "x"}, "bad_op", invalid_op("test")),
        ({"op": "move", "from": "/a", "path": "/name"}, "bad_op", invalid_op("move")),
        ({"op": "copy", "from": "/a", "path": "/name"}, "bad_op", invalid_op("copy")),
        ({"op": "Add", "path": "/name", "value": "x"}, "bad_op", invalid_op("Add")),
        ({"op": "REPLACE", "path": "/name", "value": "x"}, "bad_op", invalid_op("REPLACE")),
        ({"op": " add", "path": "/name", "value": "x"}, "bad_op", invalid_op(" add")),
        ({"op": "", "path": "/name", "value": "x"}, "bad_op", invalid_op("")),
        # Glance formats a non-string op with Python's str() and answers 400.
        ({"op": 5, "path": "/name", "value": "x"}, "bad_op", invalid_op("5")),
        ({"op": True, "path": "/name", "value": "x"}, "bad_op", invalid_op("True")),
        ({"op": ["add"], "path": "/name", "value": "x"}, "bad_op", invalid_op("['add']")),
        ({"op": {"a": 1}, "path": "/name", "value": "x"}, "bad_op", invalid_op("{'a': 1}")),
        ({"op": "invalid"}, "bad_op", invalid_op("invalid")),
        ({"op": "replace", "value": "arcata"}, "missing_path", NO_PATH),
        ({"op": "remove"}, "missing_path", NO_PATH),
        ({"op": "add", "PATH": "/x", "value": "x"}, "missing_path", NO_PATH),
        ({"replace": "/name", "value": "x"}, "missing_op", NO_OP),
        (
            {"op": "replace", "path": "/colburn"},
            "missing_value",
            'Operation "replace" requires a member named "value".',
        ),
        (
            {"op": "add", "path": "/colburn", "Value": "x"},
            "missing_value",
            'Operation "add" requires a member named "value".',
        ),
    ],
)
def test_v21_operation_objects(item: dict[str, Any], reason: str, message: str) -> None:
    error = refusal(V21, body_of([item]))

    assert (error.status, error.reason, error.message, error.index) == (400, reason, message, 0)


@pytest.mark.parametrize(
    ("item", "reason", "message"),
    [
        ({"replace": "/foo", "add": "/bar", "value": "snore"}, "bad_op", TWO_OPS),
        ({"remove": "/foo", "add": "/bar"}, "bad_op", TWO_OPS),
        ({"add": "/a", "remove": "/b", "replace": "/c", "value": 1}, "bad_op", TWO_OPS),
        ({"value": "arcata"}, "bad_op", NO_V20_OP),
        ({}, "bad_op", NO_V20_OP),
        ({"op": "replace", "path": "/name", "value": "x"}, "bad_op", NO_V20_OP),
        ({"Replace": "/name", "value": "x"}, "bad_op", NO_V20_OP),
        (
            {"replace": "/colburn"},
            "missing_value",
            'Operation "replace" requires a member named "value".',
        ),
        ({"add": "/colburn"}, "missing_value", 'Operation "add" requires a member named "value".'),
    ],
)
def test_v20_operation_objects(item: dict[str, Any], reason: str, message: str) -> None:
    error = refusal(V20, body_of([item]))

    assert (error.status, error.reason, error.message, error.index) == (400, reason, message, 0)


@pytest.mark.parametrize(
    ("pointer", "json_type"),
    [(5, "number"), (1.5, "number"), (None, "null"), (True, "boolean"),
     (["/name"], "array"), ({"a": "/name"}, "object")],
)  # fmt: skip
def test_a_pointer_that_is_not_a_string_is_400_where_glance_says_500(
    pointer: Any, json_type: str
) -> None:
    message = f"Pointer must be a string, got {json_type}."
    for content_type, item in [
        (V21, {"op": "replace", "path": pointer, "value": "x"}),
        (V20, {"replace": pointer, "value": "x"}),
    ]:
        error = refusal(content_type, body_of([item]))
        assert (error.status, error.reason, error.message) == (400, "bad_pointer", message)


def test_v21_op_is_checked_before_path_and_path_before_value() -> None:
    assert refusal(V21, body_of([{"op": "x"}])).reason == "bad_op"
    assert refusal(V21, body_of([{"op": "add"}])).reason == "missing_path"
    assert refusal(V21, body_of([{"op": "add", "path": "nope"}])).reason == "bad_pointer"


@pytest.mark.parametrize(
    ("content_type", "item", "expected"),
    [
        # Extra keys are ignored in both shapes.
        (V20, {"op": "x", "replace": "/name", "value": "y"}, Change("replace", ("name",), "/name", "y")),
        (V20, {"path": "/other", "add": "/name", "value": "y"}, Change("add", ("name",), "/name", "y")),
        (V21, {"op": "replace", "path": "/name", "value": "y", "add": "/a", "x": 1}, Change("replace", ("name",), "/name", "y")),
        # A remove's value is ignored; null is a value.
        (V21, {"op": "remove", "path": "/a", "value": "ignored"}, Change("remove", ("a",), "/a", ABSENT)),
        (V20, {"remove": "/a", "value": "ignored"}, Change("remove", ("a",), "/a", ABSENT)),
        (V21, {"op": "replace", "path": "/name", "value": None}, Change("replace", ("name",), "/name", None)),
        (V20, {"add": "/a", "value": None}, Change("add", ("a",), "/a", None)),
        # No value-type checks here (the emulator owns Glance's schema check).
        (V21, {"op": "add", "path": "/foo", "value": 123}, Change("add", ("foo",), "/foo", 123)),
        (V21, {"op": "add", "path": "/foo", "value": ["bar", "baz"]}, Change("add", ("foo",), "/foo", ["bar", "baz"])),
        (V21, {"op": "add", "path": "/foo", "value": "bar"}, Change("add", ("foo",), "/foo", "bar")),
    ],
)  # fmt: skip
def test_accepted_operation_objects(
    content_type: str, item: dict[str, Any], expected: Change
) -> None:
    assert parse(content_type, body_of([item])).changes == (expected,)


def test_both_shapes_give_the_same_changes() -> None:
    v20 = parse(
        V20,
        body_of(
            [
                {"replace": "/name", "value": "fedora"},
                {"remove": "/sparks"},
                {"add": "/bebim", "value": "bap"},
            ]
        ),
    )
    v21 = parse(
        V21,
        body_of(
            [
                {"op": "replace", "path": "/name", "value": "fedora"},
                {"op": "remove", "path": "/sparks"},
                {"op": "add", "path": "/bebim", "value": "bap"},
            ]
        ),
    )

    assert (v20.shape, v21.shape) == (Shape.V20, Shape.V21)
    assert v20.changes == v21.changes == (
        Change("replace", ("name",), "/name", "fedora"),
        Change("remove", ("sparks",), "/sparks"),
        Change("add", ("bebim",), "/bebim", "bap"),
    )
    assert [change.attribute for change in v20.changes] == ["name", "sparks", "bebim"]


# -- 3. JSON pointer ---------------------------------------------------------------


def no_slash(p: str) -> str:
    return f'Pointer `{p}` does not start with "/".'


def adjacent(p: str) -> str:
    return f'Pointer `{p}` contains adjacent "/".'


def trailing(p: str) -> str:
    return f'Pointer `{p}` end with "/".'


def no_token(p: str) -> str:
    return f"Pointer `{p}` does not contains valid token."


def tilde(p: str) -> str:
    return f'Pointer `{p}` contains "~" not part of a recognized escape sequence.'


@pytest.mark.parametrize(
    ("pointer", "message"),
    [
        ("noslash", no_slash("noslash")),
        ("", no_slash("")),
        (" /name", no_slash(" /name")),
        ("~1name", no_slash("~1name")),
        ("///twoslash", adjacent("///twoslash")),
        ("/two/   /slash", adjacent("/two/   /slash")),
        ("/a//b", adjacent("/a//b")),
        ("/a/\t\n/b", adjacent("/a/\t\n/b")),
        ("/a/\u00a0\u2003/b", adjacent("/a/\u00a0\u2003/b")),
        ("/name//", adjacent("/name//")),
        ("/trailingslash/", trailing("/trailingslash/")),
        ("/name/ /", adjacent("/name/ /")),
        ("/ /", trailing("/ /")),
        ("/      /      ", no_token("/      /      ")),
        ("/ / ", no_token("/ / ")),
        ("/\u3000/\u2028", no_token("/\u3000/\u2028")),
        ("/lone~tilde", tilde("/lone~tilde")),
        ("/trailingtilde~", tilde("/trailingtilde~")),
        ("/~2", tilde("/~2")),
        ("/a~~0", tilde("/a~~0")),
        ("/a~\n", tilde("/a~\n")),
        ("/~", tilde("/~")),
        # Glance's checks run in order: the first one failing names the message.
        ("noslash~", no_slash("noslash~")),
        ("//a/", trailing("//a/")),
        ("/a//~x", adjacent("/a//~x")),
        ("/x/~", tilde("/x/~")),
    ],
)
@pytest.mark.parametrize("content_type", [V20, V21])
def test_pointer_checks(content_type: str, pointer: str, message: str) -> None:
    item: dict[str, Any] = (
        {"op": "add", "path": pointer, "value": "x"}
        if content_type == V21
        else {"add": pointer, "value": "x"}
    )
    error = refusal(content_type, body_of([item]))

    assert (error.status, error.reason, error.message, error.index) == (
        400,
        "bad_pointer",
        message,
        0,
    )


@pytest.mark.parametrize(
    ("pointer", "path"),
    [
        ("/name", ("name",)),
        ("/keywith~1slash", ("keywith/slash",)),
        ("/keywith~0tilde", ("keywith~tilde",)),
        ("/tricky~01", ("tricky~1",)),
        ("/tricky~10", ("tricky/0",)),
        ("/~0~1~0", ("~/~",)),
        ("/a~1b", ("a/b",)),
        ("/  name  ", ("name",)),
        ("/ name ", ("name",)),
        ("/\tname\n", ("name",)),
        ("/\u00a0name\u2003", ("name",)),
        ("/\u3000name\u2029\x85", ("name",)),
        ("/\x1fname\x1c", ("name",)),
        ("/\u200bname", ("\u200bname",)),
        ("/name\ufeff", ("name\ufeff",)),
        ("/ID", ("ID",)),
        ("/Name", ("Name",)),
        ("/", ("",)),
        ("/ ", ("",)),
        ("/ ~1 ", ("/",)),
        ("/a b", ("a b",)),
        # Glance strips every leading "/" (pointer.lstrip('/')), and its adjacency
        # check looks only past the first character.
        ("//name", ("name",)),
        ("//__os_type", ("__os_type",)),
        ("/__os~0type", ("__os~type",)),
        ("/__os~1type", ("__os/type",)),
        ("/\U0001f600", ("\U0001f600",)),
    ],
)
@pytest.mark.parametrize("content_type", [V20, V21])
def test_pointer_decoding(content_type: str, pointer: str, path: tuple[str, ...]) -> None:
    item: dict[str, Any] = (
        {"op": "replace", "path": pointer, "value": "x"}
        if content_type == V21
        else {"replace": pointer, "value": "x"}
    )

    (change,) = parse(content_type, body_of([item]), glance_attribute_checks=False).changes

    assert (change.path, change.pointer, change.attribute) == (path, pointer, path[0])


@pytest.mark.parametrize(
    ("raw_path", "path"),
    [
        # JSON string escapes are decoded before any pointer rule applies.
        (rb'"/\u005f_os_type"', ("__os_type",)),
        (rb'"\/__os_type"', ("__os_type",)),
        (rb'"/\u0069\u0064"', ("id",)),
        (rb'"/\u006eame"', ("name",)),
        (rb'"/ \u00a0name"', ("name",)),
        (rb'"/__os~0type"', ("__os~type",)),
        (rb'"/~0\u007e1"', ("~/",)),
    ],
)
def test_json_escapes_decode_before_the_pointer(raw_path: bytes, path: tuple[str, ...]) -> None:
    body = b'[{"op": "add", "path": ' + raw_path + b', "value": "x"}]'

    (change,) = parse(V21, body, glance_attribute_checks=False).changes

    assert change.path == path


def test_an_escaped_read_only_name_is_still_read_only() -> None:
    error = refusal(V21, b'[{"op": "replace", "path": "/\\u0069\\u0064", "value": "x"}]')

    assert (error.status, error.reason, error.message) == (403, "read_only", "Attribute 'id' is read-only.")


@pytest.mark.parametrize(
    "raw_path",
    [rb'"/\ud800"', rb'"/na\udfffme"', rb'"/name\udc00"', rb'"/\ude00\ud83d"'],
)
def test_a_pointer_with_a_lone_surrogate_is_refused(raw_path: bytes) -> None:
    body = b'[{"op": "add", "path": ' + raw_path + b', "value": "x"}]'
    pointer = json.loads(raw_path)

    error = refusal(V21, body)

    assert (error.status, error.reason) == (400, "bad_pointer")
    assert error.message == (
        f"Pointer {json.dumps(pointer)} contains an unpaired surrogate escape; "
        "attribute names must be valid Unicode."
    )
    error.message.encode("utf-8")


def test_messages_quoting_a_pointer_with_a_lone_surrogate_are_sendable() -> None:
    error = refusal(V21, b'[{"op": "add", "path": "\\ud800x", "value": "x"}]')

    assert error.message == 'Pointer `\\ud800x` does not start with "/".'


def test_a_surrogate_pair_is_one_valid_character() -> None:
    body = b'[{"op": "add", "path": "/\\ud83d\\ude00", "value": "x"}]'

    assert parse(V21, body).changes[0].path == ("\U0001f600",)


# -- 3. depth ----------------------------------------------------------------------


def depth(joined: str) -> str:
    return f"Invalid JSON pointer for this resource: '/{joined}'"


@pytest.mark.parametrize(
    ("op", "pointer", "message"),
    [
        ("add", "/tags/-", depth("tags/-")),
        ("replace", "/a/b", depth("a/b")),
        ("remove", "/id/extra", depth("id/extra")),
        ("add", "/ name / x ", depth("name/x")),
        ("add", "/a~1b/c~0d", depth("a/b/c~d")),
        ("add", "/locations/1/2", depth("locations/1/2")),
        ("remove", "/locations/1/2", depth("locations/1/2")),
        ("add", "/locations", depth("locations")),
        ("remove", "/locations", depth("locations")),
        ("replace", "/locations/0", depth("locations/0")),
        ("add", "/Locations/0", depth("Locations/0")),
        ("add", "/ /name", depth("/name")),
        ("add", "/x/ ", depth("x/")),
    ],
)
def test_depth(op: str, pointer: str, message: str) -> None:
    error = refusal(V21, body_of([{"op": op, "path": pointer, "value": "x"}]))

    assert (error.status, error.reason, error.message) == (400, "bad_depth", message)


@pytest.mark.parametrize(
    ("op", "pointer", "path"),
    [
        ("add", "/locations/0", ("locations", "0")),
        ("add", "/locations/-", ("locations", "-")),
        ("remove", "/locations/1", ("locations", "1")),
        ("replace", "/locations", ("locations",)),
        ("add", "/ locations / 0 ", ("locations", "0")),
        ("add", "/locations/ ", ("locations", "")),
    ],
)
def test_locations_may_have_a_second_token(op: str, pointer: str, path: tuple[str, ...]) -> None:
    (change,) = parse(V21, body_of([{"op": op, "path": pointer, "value": []}])).changes

    assert change.path == path


def test_depth_is_checked_before_the_value_and_the_attribute() -> None:
    error = refusal(V21, body_of([{"op": "add", "path": "/id/extra"}]))

    assert error.reason == "bad_depth"


# -- 4. Glance's own attribute checks ----------------------------------------------


@pytest.mark.parametrize(
    ("pointer", "reason", "message"),
    [
        *[(f"/{name}", "read_only", f"Attribute '{name}' is read-only.") for name in GLANCE_READ_ONLY_ATTRIBUTES],
        *[(f"/{name}", "reserved", f"Attribute '{name}' is reserved.") for name in GLANCE_RESERVED_ATTRIBUTES],
        ("/os_glance", "reserved", "Attribute 'os_glance' is reserved."),
        ("/os_glance_importing_to_stores", "reserved", "Attribute 'os_glance_importing_to_stores' is reserved."),
        ("/os_glancex", "reserved", "Attribute 'os_glancex' is reserved."),
        ("/ id ", "read_only", "Attribute 'id' is read-only."),
        ("//status", "read_only", "Attribute 'status' is read-only."),
    ],
)  # fmt: skip
@pytest.mark.parametrize("op", OPS)
def test_glance_attribute_checks(op: str, pointer: str, reason: str, message: str) -> None:
    item = {"op": op, "path": pointer, "value": "x"}

    error = refusal(V21, body_of([item]))

    assert (error.status, error.reason, error.message, error.index) == (403, reason, message, 0)
    (change,) = parse(V21, body_of([item]), glance_attribute_checks=False).changes
    assert change.attribute == pointer.strip(" /")


@pytest.mark.parametrize(
    "pointer",
    ["/ID", "/Id", "/Status", "/os_glanc", "/OS_GLANCE_x", "/x_os_glance", "/locations",
     "/owner", "/os_hidden", "/tags", "/name", "/__os_type", "/locationx", "/ideas"],
)  # fmt: skip
def test_names_glance_does_not_protect_pass_its_attribute_checks(pointer: str) -> None:
    (change,) = parse(V21, body_of([{"op": "replace", "path": pointer, "value": []}])).changes

    assert change.pointer == pointer


def test_the_value_is_checked_before_the_attribute() -> None:
    assert refusal(V21, body_of([{"op": "replace", "path": "/id"}])).reason == "missing_value"
    assert refusal(V21, body_of([{"op": "remove", "path": "/id"}])).reason == "read_only"


# -- 1.5: the first failing item decides -------------------------------------------


@pytest.mark.parametrize(
    ("items", "index", "reason", "parsed"),
    [
        (
            [{"op": "add", "path": "/a", "value": "1"}, {"op": "remove", "path": "/b"}, 5,
             {"op": "bogus"}],
            2,
            "bad_operation_object",
            (Change("add", ("a",), "/a", "1"), Change("remove", ("b",), "/b")),
        ),
        (
            [{"op": "replace", "path": "/name", "value": "n"}, {"op": "bogus"}, 5],
            1,
            "bad_op",
            (Change("replace", ("name",), "/name", "n"),),
        ),
        (
            [{"op": "replace", "path": "/id", "value": "x"}, {"op": "bogus"}],
            0,
            "read_only",
            (),
        ),
        (
            [{"op": "add", "path": "/a", "value": "1"}, {"op": "add", "path": "/b/c", "value": "2"},
             {"op": "replace", "path": "/status", "value": "x"}],
            1,
            "bad_depth",
            (Change("add", ("a",), "/a", "1"),),
        ),
    ],
)  # fmt: skip
def test_first_failing_item_decides(
    items: list[Any], index: int, reason: str, parsed: tuple[Change, ...]
) -> None:
    error = refusal(V21, body_of(items))

    assert (error.index, error.reason, error.parsed) == (index, reason, parsed)


def test_first_failing_item_decides_in_v20() -> None:
    items = [{"add": "/a", "value": "1"}, {"remove": "/b"}, {"replace": "no/slash", "value": "x"}]

    error = refusal(V20, body_of(items))

    assert (error.index, error.reason) == (2, "bad_pointer")
    assert error.parsed == (Change("add", ("a",), "/a", "1"), Change("remove", ("b",), "/b"))


# -- duplicate member names --------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "index", "member"),
    [
        (V21, b'[{"op": "add", "path": "/a", "path": "/id", "value": "x"}]', 0, "path"),
        (V21, b'[{"op": "add", "op": "remove", "path": "/a", "value": "x"}]', 0, "op"),
        (V21, b'[{"op": "add", "path": "/a", "value": "x", "value": "y"}]', 0, "value"),
        (V21, b'[{"op": "add", "path": "/a", "value": "x", "junk": 1, "junk": 2}]', 0, "junk"),
        (
            V21,
            b'[{"op": "add", "path": "/a", "value": "x"}, {"op": "remove", "path": "/b"},'
            b' {"op": "remove", "path": "/c", "path": "/name"}]',
            2,
            "path",
        ),
        (V20, b'[{"replace": "/name", "replace": "/id", "value": "x"}]', 0, "replace"),
        (V20, b'[{"add": "/a", "value": 1, "add": "/b"}]', 0, "add"),
        (V21, b'[{"b": 1, "a": 1, "b": 2, "a": 2, "op": "add"}]', 0, "b"),
        (V21, b'[{"op": "add", "path": "/a", "value": "x", "op": "add"}]', 0, "op"),
    ],
)
def test_repeated_member_names_are_refused_when_asked(
    content_type: str, body: bytes, index: int, member: str
) -> None:
    error = refusal(content_type, body, reject_duplicate_members=True)

    assert (error.status, error.reason, error.index) == (400, "duplicate_member", index)
    assert error.message == (
        f'Operation object {index} has the member "{member}" more than once; '
        "the gateway refuses ambiguous operations."
    )
    assert len(error.parsed) == index


def test_repeated_member_names_last_one_wins_by_default() -> None:
    body = b'[{"op": "remove", "path": "/a", "path": "/b", "op": "add", "value": "x"}]'

    assert parse(V21, body).changes == (Change("add", ("b",), "/b", "x"),)


@pytest.mark.parametrize(
    "body",
    [
        b'[{"op": "add", "path": "/a", "value": {"k": 1, "k": 2}}]',
        b'[{"op": "add", "path": "/a", "value": [{"k": 1, "k": 2}]}]',
        b'{"a": 1, "a": 2}',
    ],
)
def test_repeated_names_outside_operation_objects_are_not_the_gateways_concern(
    body: bytes,
) -> None:
    try:
        changes = parse(V21, body, reject_duplicate_members=True).changes
    except PatchError as error:
        assert error.reason == "bad_body_type"
    else:
        assert changes[0].value in ({"k": 2}, [{"k": 2}])
        assert to_v21_json(changes).count(b'"k"') == 1


def test_duplicate_check_comes_after_the_object_check() -> None:
    error = refusal(V21, b'[{"op": "add", "path": "/a", "value": "x"}, 5]', reject_duplicate_members=True)

    assert (error.reason, error.index) == ("bad_operation_object", 1)


# -- PatchError --------------------------------------------------------------------


def test_patch_error_is_a_value_error_whose_text_is_the_message() -> None:
    error = refusal(V21, body_of([{"op": "x"}]))

    assert isinstance(error, ValueError)
    assert str(error) == error.message == invalid_op("x")
    assert error.headers == {}


def test_every_reason_is_declared() -> None:
    # One request per reason, so that REASONS cannot drift from what parse raises.
    samples: list[tuple[str | None, bytes | None]] = [
        (None, b"[]"),
        (V21, None),
        (V21, b"{"),
        (V21, b"{}"),
        (V21, b"[1]"),
        (V21, body_of([{"path": "/a"}])),
        (V21, body_of([{"op": "x"}])),
        (V21, body_of([{"op": "add"}])),
        (V21, body_of([{"op": "add", "path": "a"}])),
        (V21, body_of([{"op": "add", "path": "/a/b"}])),
        (V21, body_of([{"op": "add", "path": "/a"}])),
        (V21, body_of([{"op": "remove", "path": "/id"}])),
        (V21, body_of([{"op": "remove", "path": "/deleted"}])),
        (V21, b'[{"op": "remove", "op": "remove", "path": "/a"}]'),
        (V21, body_of([{"op": "add", "path": "/a", "value": [[["deep"]]]}])),
    ]
    reasons = {refusal(ct, body, reject_duplicate_members=True, max_value_depth=2).reason for ct, body in samples}

    assert reasons == REASONS


# -- to_v21_json and encode_pointer ------------------------------------------------


@pytest.mark.parametrize(
    ("path", "pointer"),
    [
        (("name",), "/name"),
        (("a/b",), "/a~1b"),
        (("a~b",), "/a~0b"),
        (("~1",), "/~01"),
        (("/~",), "/~1~0"),
        (("locations", "0"), "/locations/0"),
        (("",), "/"),
        (("\u00e9",), "/\u00e9"),
    ],
)
def test_encode_pointer(path: tuple[str, ...], pointer: str) -> None:
    assert encode_pointer(path) == pointer
    (change,) = parse(V21, v21_add(pointer, []), glance_attribute_checks=False).changes
    assert change.path == path


def test_canonical_v21_body_for_a_v20_body() -> None:
    patch = parse(
        V20,
        b'[{"replace": "/name", "value": "fedora"}, {"remove": "/sparks", "value": 1},'
        b' {"add": "/bebim", "value": "bap", "op": "x", "path": "/y"}]',
    )

    assert to_v21_json(patch.changes) == (
        b'[{"op": "replace", "path": "/name", "value": "fedora"}, '
        b'{"op": "remove", "path": "/sparks"}, '
        b'{"op": "add", "path": "/bebim", "value": "bap"}]'
    )


@pytest.mark.parametrize(
    ("item", "canonical"),
    [
        ({"replace": "/  name ", "value": "n"}, b'[{"op": "replace", "path": "/name", "value": "n"}]'),
        ({"add": "//name", "value": "n"}, b'[{"op": "add", "path": "/name", "value": "n"}]'),
        ({"add": "/a~1b", "value": "\u00e9"}, b'[{"op": "add", "path": "/a~1b", "value": "\\u00e9"}]'),
        ({"add": "/\u00e9t\u00e9", "value": None}, b'[{"op": "add", "path": "/\\u00e9t\\u00e9", "value": null}]'),
        ({"add": "/x", "value": {"k": [1, 2.5, True]}}, b'[{"op": "add", "path": "/x", "value": {"k": [1, 2.5, true]}}]'),
        ({"add": "/x", "value": "\U0001f600"}, b'[{"op": "add", "path": "/x", "value": "\\ud83d\\ude00"}]'),
        ({"add": "/x", "value": "\ud800"}, b'[{"op": "add", "path": "/x", "value": "\\ud800"}]'),
        ({"remove": "/\u00a0x\u2003"}, b'[{"op": "remove", "path": "/x"}]'),
    ],
)  # fmt: skip
def test_canonical_output_is_ascii_and_names_the_decoded_attribute(
    item: dict[str, Any], canonical: bytes
) -> None:
    changes = parse(V20, body_of([item])).changes

    assert to_v21_json(changes) == canonical


def test_to_v21_json_of_nothing_is_an_empty_array() -> None:
    assert to_v21_json([]) == b"[]"
    assert to_v21_json(iter(())) == b"[]"


@pytest.mark.parametrize(
    "items",
    [
        [{"replace": "/name", "value": "fedora"}, {"remove": "/sparks"}, {"add": "/bebim", "value": "bap"}],
        [{"add": "/ a~1b ", "value": {"nested": [1, None, "x"]}}, {"add": "/~0~1", "value": -0.0}],
        [{"add": "/locations/-", "value": {"url": "u"}}, {"remove": "/locations/0"},
         {"replace": "/locations", "value": []}],
        [{"add": "/x", "value": 10**300}, {"add": "/y", "value": 1e-300}, {"add": "/z", "value": ""}],
        [{"replace": "/\u00e9", "value": "\u4e2d\u6587"}, {"remove": "/", "value": 1}],
    ],
)  # fmt: skip
def test_to_v21_json_round_trips(items: list[dict[str, Any]]) -> None:
    changes = parse(V20, body_of(items), glance_attribute_checks=False).changes

    again = parse(V21, to_v21_json(changes), glance_attribute_checks=False).changes

    assert [(c.op, c.path, c.value) for c in again] == [(c.op, c.path, c.value) for c in changes]


def test_change_and_patch_are_frozen() -> None:
    change = Change("add", ("a",), "/a", "x")

    with pytest.raises(AttributeError):
        change.op = "remove"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Patch(Shape.V21, (change,)).changes = ()  # type: ignore[misc]
    assert Change("remove", ("a",), "/a").value is ABSENT
    assert repr(ABSENT) == "ABSENT"


# -- value depth, the options cache, the fast path (mutation testing found these unchecked) --


@pytest.mark.parametrize(
    ("value", "levels"),
    [
        ("x", 0),
        ([], 1),
        ({"a": 1}, 1),
        ([["a"]], 2),
        ({"a": {"b": 1}}, 2),
        ([{"a": [1]}], 3),
        ({"a": [{"b": {}}]}, 4),
        ([1, [2, [3]], "x"], 3),
    ],
)
def test_a_value_nested_exactly_to_the_limit_passes_and_one_deeper_is_refused(value: Any, levels: int) -> None:
    for limit in range(levels, levels + 2):
        (change,) = parse(V21, v21_add("/team", value), max_value_depth=limit).changes
        assert change.value == value
    if levels:
        body = body_of([{"op": "add", "path": "/team", "value": "ok"}, {"op": "add", "path": "/team", "value": value}])
        error = refusal(V21, body, max_value_depth=levels - 1)
        assert error.index == 1
        assert error.message == f'Operation object 1: the member "value" is nested more than {levels - 1} levels deep.'


@pytest.fixture
def cold_options_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """parse keeps its options per combination; start from none, as a fresh process does."""
    from gateway.patch import parser

    monkeypatch.setattr(parser, "_OPTIONS", {})


@pytest.mark.usefixtures("cold_options_cache")
@pytest.mark.parametrize("warm", [False, True])
def test_every_option_counts_from_a_cold_cache_and_a_warm_one(warm: bool) -> None:
    duplicate = b'[{"add": "/team", "add": "/team", "value": "x"}]'
    deep = body_of([{"add": "/team", "value": [[1]]}])
    read_only = body_of([{"replace": "/status", "value": "active"}])
    for _ in range(2 if warm else 1):
        assert refusal(V20, duplicate, reject_duplicate_members=True).reason == "duplicate_member"
        assert parse(V20, duplicate).changes[0].path == ("team",)
        assert refusal(V20, deep, max_value_depth=1).reason == "too_deep"
        assert parse(V20, deep, max_value_depth=2).changes[0].value == [[1]]
        assert refusal(V20, read_only).status == 403
        assert parse(V20, read_only, glance_attribute_checks=False).changes[0].path == ("status",)
        assert parse(V21, v21_add("/team", {"a": 1}), max_value_depth=1).changes[0].op == "add"
        assert refusal(V21, body_of([{"add": "/team", "value": 1}]), max_value_depth=5).status == 400


@pytest.mark.parametrize(
    ("content_type", "item"),
    [
        (V21, {"replace": "/name", "value": "x"}),
        (V21, {"op": "replace", "value": "x"}),
        (V20, {"op": "replace", "path": "/name", "value": "x"}),
    ],
)
def test_without_attribute_checks_each_shape_is_still_read_as_itself(content_type: str, item: dict[str, Any]) -> None:
    error = refusal(content_type, body_of([item]), glance_attribute_checks=False)
    assert error.status == 400


def test_a_pointer_of_two_slashes_ends_with_a_slash() -> None:
    assert refusal(V21, v21_add("//")).message == 'Pointer `//` end with "/".'
