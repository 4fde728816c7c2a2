"""PATCH /v2/images/{id} bodies and what real Glance 33 answers to each, applied to an
image created from ``BASE_IMAGE``.

Plain data, so that the same case can be sent to Glance directly and through the
gateway. ``status`` and ``message`` are Glance's observed answer (checked by
test_glance_baseline.py); where Glance's answer differs from
/work/shared/reference/glance-json-patch.md, FINDINGS.md says so.
``gateway_status`` is set where the gateway deliberately answers otherwise (README,
"Where the gateway deliberately differs from Glance"): 400 for a non-string path or op
member (Glance: 500), for NaN/Infinity literals and for an operation object naming a
member twice, and 400 ``IMSGW.0403`` for every attribute its policy forbids: the IMS
system attributes other than ``name`` and ``__description`` and Glance's protected ones
(Glance: 403 or success).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.oracle import WHITESPACE

from .imageapi import V20, V21

# Every case starts from an image created with these attributes.
BASE_IMAGE: Mapping[str, Any] = {
    "name": "patch-case",
    "disk_format": "raw",
    "container_format": "bare",
    "sparks": "fly",
    "__description": "before",
}

ACCEPT_PATCH = f"{V20}, {V21}"

UNSUPPORTED = "Image PATCH expects Content-Type one of"
MALFORMED = "Malformed JSON in request body."
NOT_LIST_OR_DICT = "Unexpected body type. Expected list/dict."
NOT_ARRAY = "Request body must be a JSON array of operation objects."
NOT_OBJECT = "Operations must be JSON objects."
NO_OP = "Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace."
NO_PATH = "Unable to find 'path' in JSON Schema change"
V20_MANY = 'Operation objects must contain only one member named "add", "remove", or "replace".'
V20_NONE = 'Operation objects must contain exactly one member named "add", "remove", or "replace".'
SCHEMA = "Provided object does not match schema 'image'"
SERVER_ERROR = "The server has either erred or is incapable of performing the requested operation."


@dataclass(frozen=True)
class PatchCase:
    name: str
    content_type: str | None
    body: bytes
    status: int
    message: str | None = None
    # After a 200: attributes that must hold these values, and attributes that must
    # be gone. After any other status the image must be unchanged.
    result: Mapping[str, Any] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    gateway_status: int | None = None


def ops(*items: Any) -> bytes:
    return json.dumps(list(items)).encode()


def v21(op: str, path: Any, *value: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"op": op, "path": path}
    if value:
        item["value"] = value[0]
    return item


def v20(op: str, path: Any, *value: Any) -> dict[str, Any]:
    item: dict[str, Any] = {op: path}
    if value:
        item["value"] = value[0]
    return item


def _read_only(attr: str) -> str:
    return f"Attribute '{attr}' is read-only."


def _reserved(attr: str) -> str:
    return f"Attribute '{attr}' is reserved."


def _requires_value(op: str) -> str:
    return f'Operation "{op}" requires a member named "value".'


def _invalid_op(op: str) -> str:
    return f"Invalid operation: `{op}`. It must be one of the following: add, remove, replace."


def _pointer(p: str, rule: str) -> str:
    return f"Pointer `{p}` {rule}"


def _depth(p: str) -> str:
    return f"Invalid JSON pointer for this resource: '{p}'"


MEDIA_TYPE_CASES = [
    PatchCase("ct-v21-empty-list", V21, b"[]", 200),
    PatchCase("ct-v20-empty-list", V20, b"[]", 200),
    PatchCase("ct-v21-charset", f"{V21}; charset=UTF-8", b"[]", 200),
    PatchCase("ct-v20-charset", f"{V20};charset=utf-8", b"[]", 200),
    PatchCase("ct-json", "application/json", b"[]", 415, UNSUPPORTED),
    PatchCase("ct-json-patch-rfc6902", "application/json-patch+json", b"[]", 415, UNSUPPORTED),
    PatchCase("ct-json-patch", "application/json-patch", b"[]", 415, UNSUPPORTED),
    PatchCase("ct-upper-case", V21.upper(), b"[]", 415, UNSUPPORTED),
    PatchCase("ct-space-before-semicolon", f"{V21} ;charset=UTF-8", b"[]", 415, UNSUPPORTED),
    PatchCase("ct-v22", "application/openstack-images-v2.2-json-patch", b"[]", 415, UNSUPPORTED),
    PatchCase("ct-missing", None, b"[]", 415, UNSUPPORTED),
    PatchCase("ct-checked-before-body", "application/json", b"[{", 415, UNSUPPORTED),
    PatchCase("ct-trailing-space", f"{V21} ", b"[]", 200),
    PatchCase("ct-leading-space", f" {V21}", b"[]", 200),
]

BODY_CASES = [
    PatchCase("body-empty-v21", V21, b"", 400, "Body expected in request."),
    PatchCase("body-empty-v20", V20, b"", 400, "Body expected in request."),
    PatchCase("json-truncated", V21, b"[{", 400, MALFORMED),
    PatchCase("json-trailing-garbage", V21, b"[] x", 400, MALFORMED),
    PatchCase(
        "json-invalid-utf8",
        V21,
        b'[{"op": "replace", "path": "/name", "value": "\xff"}]',
        400,
        MALFORMED,
    ),
    PatchCase("json-bom", V21, b"\xef\xbb\xbf[]", 400, MALFORMED),
    PatchCase("json-whitespace-around", V21, b" \n [ ] \n ", 200),
    PatchCase(
        "json-duplicate-key-last-wins",
        V21,
        b'[{"op": "replace", "path": "/name", "value": "first", "value": "last"}]',
        200,
        result={"name": "last"},
        gateway_status=400,
    ),
    PatchCase(
        "json-nan-value",
        V21,
        b'[{"op": "replace", "path": "/name", "value": NaN}]',
        400,
        SCHEMA,
        gateway_status=400,
    ),
    PatchCase(
        "json-nan-in-ignored-value",
        V21,
        b'[{"op": "remove", "path": "/sparks", "value": NaN}]',
        200,
        removed=("sparks",),
        gateway_status=400,
    ),
    PatchCase(
        "json-infinity-in-ignored-value",
        V20,
        b'[{"remove": "/sparks", "value": -Infinity}]',
        200,
        removed=("sparks",),
        gateway_status=400,
    ),
    PatchCase(
        "json-lone-surrogate-value",
        V21,
        b'[{"op": "replace", "path": "/name", "value": "a\\ud800b"}]',
        500,
        SERVER_ERROR,
    ),
    PatchCase("top-object", V21, b'{"op": "replace", "path": "/name", "value": "x"}', 400, NOT_ARRAY),
    PatchCase("top-empty-object", V21, b"{}", 400, NOT_ARRAY),
    PatchCase("top-string", V21, b'"string"', 400, NOT_LIST_OR_DICT),
    PatchCase("top-number", V21, b"123", 400, NOT_LIST_OR_DICT),
    PatchCase("top-true", V21, b"true", 400, NOT_LIST_OR_DICT),
    PatchCase("top-false", V21, b"false", 400, NOT_LIST_OR_DICT),
    PatchCase("top-null", V21, b"null", 400, NOT_LIST_OR_DICT),
    PatchCase("top-string-v20", V20, b'"string"', 400, NOT_LIST_OR_DICT),
    PatchCase("top-object-v20", V20, b'{"replace": "/name", "value": "x"}', 400, NOT_ARRAY),
    PatchCase("item-list", V21, b'[["a", "list"]]', 400, NOT_OBJECT),
    PatchCase("item-string", V21, b'["string"]', 400, NOT_OBJECT),
    PatchCase("item-number", V21, b"[123]", 400, NOT_OBJECT),
    PatchCase("item-true", V21, b"[true]", 400, NOT_OBJECT),
    PatchCase("item-false", V21, b"[false]", 400, NOT_OBJECT),
    PatchCase("item-null", V21, b"[null]", 400, NOT_OBJECT),
    PatchCase("item-null-v20", V20, b"[null]", 400, NOT_OBJECT),
    PatchCase(
        "item-second-not-object",
        V21,
        ops(v21("replace", "/name", "x"), 5),
        400,
        NOT_OBJECT,
    ),
]

V21_OP_CASES = [
    PatchCase("v21-op-missing", V21, ops({"path": "/colburn", "value": "arcata"}), 400, NO_OP),
    PatchCase("v21-op-null", V21, ops({"op": None, "path": "/name", "value": "x"}), 400, NO_OP),
    PatchCase(
        "v21-op-invalid",
        V21,
        ops({"op": "invalid", "path": "/name", "value": "fedora"}),
        400,
        _invalid_op("invalid"),
    ),
    PatchCase("v21-op-test", V21, ops(v21("test", "/name", "x")), 400, _invalid_op("test")),
    PatchCase("v21-op-move", V21, ops(v21("move", "/name", "x")), 400, _invalid_op("move")),
    PatchCase("v21-op-copy", V21, ops(v21("copy", "/name", "x")), 400, _invalid_op("copy")),
    PatchCase("v21-op-capitalised", V21, ops(v21("Replace", "/name", "x")), 400, _invalid_op("Replace")),
    PatchCase("v21-op-empty", V21, ops(v21("", "/name", "x")), 400, _invalid_op("")),
    PatchCase("v21-op-number", V21, ops(v21(5, "/name", "x")), 400, _invalid_op("5")),
    PatchCase("v21-op-before-path", V21, ops({"op": "invalid"}), 400, _invalid_op("invalid")),
    PatchCase("v21-path-missing", V21, ops({"op": "replace", "value": "arcata"}), 400, NO_PATH),
    PatchCase("v21-path-missing-remove", V21, ops({"op": "remove"}), 400, NO_PATH),
    PatchCase(
        "v21-value-missing-replace",
        V21,
        ops(v21("replace", "/colburn")),
        400,
        _requires_value("replace"),
    ),
    PatchCase("v21-value-missing-add", V21, ops(v21("add", "/colburn")), 400, _requires_value("add")),
    PatchCase(
        "v21-remove-ignores-value",
        V21,
        ops(v21("remove", "/sparks", "ignored")),
        200,
        removed=("sparks",),
    ),
    PatchCase(
        "v21-extra-keys-ignored",
        V21,
        ops({"op": "replace", "path": "/name", "value": "x", "from": "/y", "extra": 1}),
        200,
        result={"name": "x"},
    ),
    PatchCase(
        "v21-path-number",
        V21,
        ops(v21("replace", 5, "x")),
        500,
        SERVER_ERROR,
        gateway_status=400,
    ),
    PatchCase(
        "v21-path-null",
        V21,
        ops(v21("replace", None, "x")),
        500,
        SERVER_ERROR,
        gateway_status=400,
    ),
    PatchCase(
        "v21-path-list",
        V21,
        ops(v21("replace", ["/name"], "x")),
        500,
        SERVER_ERROR,
        gateway_status=400,
    ),
]

V20_OP_CASES = [
    PatchCase(
        "v20-two-ops",
        V20,
        ops({"replace": "/foo", "add": "/bar", "value": "snore"}),
        400,
        V20_MANY,
    ),
    PatchCase("v20-no-op", V20, ops({"value": "arcata"}), 400, V20_NONE),
    PatchCase("v20-v21-shaped-item", V20, ops(v21("replace", "/name", "x")), 400, V20_NONE),
    PatchCase(
        "v20-value-missing-replace",
        V20,
        ops({"replace": "/colburn"}),
        400,
        _requires_value("replace"),
    ),
    PatchCase("v20-value-missing-add", V20, ops({"add": "/colburn"}), 400, _requires_value("add")),
    PatchCase(
        "v20-stray-op-and-path-ignored",
        V20,
        ops({"op": "x", "path": "/other", "replace": "/name", "value": "y"}),
        200,
        result={"name": "y"},
    ),
    PatchCase(
        "v20-remove-ignores-value",
        V20,
        ops(v20("remove", "/sparks", "ignored")),
        200,
        removed=("sparks",),
    ),
    PatchCase(
        "v20-path-number",
        V20,
        ops(v20("replace", 5, "x")),
        500,
        SERVER_ERROR,
        gateway_status=400,
    ),
    PatchCase(
        "v20-path-null",
        V20,
        ops(v20("replace", None, "x")),
        500,
        SERVER_ERROR,
        gateway_status=400,
    ),
    PatchCase(
        "v20-path-list",
        V20,
        ops(v20("remove", ["/sparks"])),
        500,
        SERVER_ERROR,
        gateway_status=400,
    ),
]

_BAD_POINTERS = [
    ("noslash", 'does not start with "/".'),
    ("", 'does not start with "/".'),
    ("///twoslash", 'contains adjacent "/".'),
    ("/two/   /slash", 'contains adjacent "/".'),
    ("/      /      ", "does not contains valid token."),
    ("/trailingslash/", 'end with "/".'),
    ("/ /", 'end with "/".'),
    ("/lone~tilde", 'contains "~" not part of a recognized escape sequence.'),
    ("/trailingtilde~", 'contains "~" not part of a recognized escape sequence.'),
    ("/~2x", 'contains "~" not part of a recognized escape sequence.'),
]

POINTER_CASES = [
    PatchCase(
        f"pointer-{shape}-{index}",
        content_type,
        ops(make("replace", pointer, "x")),
        400,
        _pointer(pointer, rule),
    )
    for index, (pointer, rule) in enumerate(_BAD_POINTERS)
    for shape, content_type, make in (("v21", V21, v21), ("v20", V20, v20))
] + [
    PatchCase(
        "pointer-escaped-slash",
        V21,
        ops(v21("add", "/keywith~1slash", "x")),
        200,
        result={"keywith/slash": "x"},
    ),
    PatchCase(
        "pointer-escaped-tilde",
        V21,
        ops(v21("add", "/keywith~0tilde", "x")),
        200,
        result={"keywith~tilde": "x"},
    ),
    PatchCase(
        "pointer-tricky-escape-order",
        V20,
        ops(v20("add", "/tricky~01", "x")),
        200,
        result={"tricky~1": "x"},
    ),
    PatchCase(
        "pointer-whitespace-stripped",
        V21,
        ops(v21("replace", "/  name  ", "spaced")),
        200,
        result={"name": "spaced"},
    ),
    PatchCase(
        "pointer-whitespace-read-only",
        V21,
        ops(v21("replace", "/ id", "x")),
        403,
        _read_only("id"),
        gateway_status=400,
    ),
    PatchCase(
        "pointer-case-sensitive",
        V21,
        ops(v21("add", "/ID", "x")),
        200,
        result={"ID": "x"},
    ),
    PatchCase(
        "pointer-unicode",
        V21,
        ops(v21("add", "/\u00f1ame", "\u00e9t\u00e9")),
        200,
        result={"\u00f1ame": "\u00e9t\u00e9"},
    ),
    PatchCase(
        "pointer-root-is-the-empty-attribute",
        V21,
        ops(v21("add", "/", "x")),
        200,
        result={"": "x"},
    ),
    PatchCase("depth-locations-3", V21, ops(v21("add", "/locations/1/2", "x")), 400, _depth("/locations/1/2")),
    PatchCase("depth-tags-dash", V21, ops(v21("add", "/tags/-", "x")), 400, _depth("/tags/-")),
    PatchCase("depth-two-tokens", V21, ops(v21("add", "/a/b", "x")), 400, _depth("/a/b")),
    PatchCase("depth-before-read-only", V20, ops(v20("replace", "/id/extra", "x")), 400, _depth("/id/extra")),
    PatchCase(
        "depth-locations-replace",
        V21,
        ops(v21("replace", "/locations/0", [])),
        400,
        _depth("/locations/0"),
    ),
    PatchCase(
        "depth-decoded-in-message",
        V21,
        ops(v21("add", "/a~1b/c", "x")),
        400,
        _depth("/a/b/c"),
    ),
]

_READ_ONLY = ["created_at", "updated_at", "status", "checksum", "size", "virtual_size", "direct_url", "self", "file", "schema", "id", "os_hash_algo", "os_hash_value"]

ATTRIBUTE_CASES = [
    PatchCase(
        f"read-only-{attr}",
        V21,
        ops(v21("replace", f"/{attr}", "x")),
        403,
        _read_only(attr),
        gateway_status=400,
    )
    for attr in _READ_ONLY
] + [
    PatchCase("read-only-add-v20", V20, ops(v20("add", "/checksum", "x")), 403, _read_only("checksum"), gateway_status=400),
    PatchCase(
        "read-only-remove", V21, ops(v21("remove", "/os_hash_value")), 403, _read_only("os_hash_value"), gateway_status=400
    ),
    PatchCase("reserved-location", V21, ops(v21("replace", "/location", "x")), 403, _reserved("location"), gateway_status=400),
    PatchCase("reserved-deleted", V21, ops(v21("replace", "/deleted", "x")), 403, _reserved("deleted"), gateway_status=400),
    PatchCase("reserved-deleted-at", V20, ops(v20("add", "/deleted_at", "x")), 403, _reserved("deleted_at"), gateway_status=400),
    PatchCase(
        "reserved-os-glance-prefix", V21, ops(v21("add", "/os_glance_x", "x")), 403, _reserved("os_glance_x"), gateway_status=400
    ),
    PatchCase("reserved-remove", V21, ops(v21("remove", "/deleted")), 403, _reserved("deleted"), gateway_status=400),
    PatchCase("value-checked-before-read-only", V21, ops(v21("replace", "/id")), 400, _requires_value("replace")),
    PatchCase("custom-number", V21, ops(v21("add", "/foo", 123)), 400, SCHEMA),
    PatchCase("custom-list", V21, ops(v21("add", "/foo", ["bar", "baz"])), 400, SCHEMA),
    PatchCase("custom-null", V21, ops(v21("add", "/foo", None)), 400, SCHEMA),
    PatchCase("custom-string", V21, ops(v21("add", "/foo", "bar")), 200, result={"foo": "bar"}),
    PatchCase("name-null", V21, ops(v21("replace", "/name", None)), 200, result={"name": None}),
    PatchCase("name-255", V21, ops(v21("replace", "/name", "n" * 255)), 200, result={"name": "n" * 255}),
    PatchCase("name-256", V21, ops(v21("replace", "/name", "n" * 256)), 400, SCHEMA),
    PatchCase("name-number", V20, ops(v20("replace", "/name", 5)), 400, SCHEMA),
    PatchCase(
        "description-replace",
        V21,
        ops(v21("replace", "/__description", "after")),
        200,
        result={"__description": "after"},
    ),
    PatchCase(
        "description-remove-v20",
        V20,
        ops(v20("remove", "/__description")),
        200,
        removed=("__description",),
    ),
    PatchCase("min-ram-string", V21, ops(v21("replace", "/min_ram", "x")), 400, SCHEMA, gateway_status=400),
    PatchCase(
        "min-ram-int",
        V21,
        ops(v21("replace", "/min_ram", 512)),
        200,
        result={"min_ram": 512},
        gateway_status=400,
    ),
    PatchCase("protected-string", V21, ops(v21("replace", "/protected", "yes")), 400, SCHEMA, gateway_status=400),
    PatchCase("visibility-bogus", V21, ops(v21("replace", "/visibility", "bogus")), 400, SCHEMA, gateway_status=400),
    PatchCase(
        "visibility-private",
        V21,
        ops(v21("replace", "/visibility", "private")),
        200,
        result={"visibility": "private"},
        gateway_status=400,
    ),
    PatchCase(
        "tags-replace",
        V21,
        ops(v21("replace", "/tags", ["a", "b"])),
        200,
        result={"tags": ["a", "b"]},
        gateway_status=400,
    ),
    PatchCase(
        "disk-format-replace",
        V20,
        ops(v20("replace", "/disk_format", "qcow2")),
        200,
        result={"disk_format": "qcow2"},
        gateway_status=400,
    ),
    PatchCase(
        "ims-system-custom-attribute",
        V21,
        ops(v21("add", "/__os_version", "Ubuntu 24.04")),
        200,
        result={"__os_version": "Ubuntu 24.04"},
        gateway_status=400,
    ),
    PatchCase(
        "owner-replace",
        V21,
        ops(v21("replace", "/owner", "someone-else")),
        200,
        result={"owner": "someone-else"},
        gateway_status=400,
    ),
    PatchCase(
        "locations-replace-empty",
        V21,
        ops(v21("replace", "/locations", [])),
        403,
        "Cannot set locations to empty list.",
        gateway_status=400,
    ),
    PatchCase(
        "locations-add",
        V21,
        ops(v21("add", "/locations/-", {"url": "file:///etc/hostname", "metadata": {}})),
        403,
        "It's not allowed to add locations if locations are invisible.",
        gateway_status=400,
    ),
    PatchCase(
        "locations-remove",
        V20,
        ops(v20("remove", "/locations/0")),
        403,
        "It's not allowed to remove locations if locations are invisible.",
        gateway_status=400,
    ),
    PatchCase(
        "os-hidden", V21, ops(v21("replace", "/os_hidden", True)), 200, result={"os_hidden": True}, gateway_status=400
    ),
]

UPSTREAM_CASES = [
    PatchCase(
        "replace-missing-custom",
        V21,
        ops(v21("replace", "/colburn", "arcata")),
        409,
        "Property colburn does not exist.",
    ),
    PatchCase("remove-missing-custom", V21, ops(v21("remove", "/colburn")), 409, "Property colburn does not exist."),
    PatchCase("remove-base-attribute", V21, ops(v21("remove", "/name")), 403, "Property name may not be removed."),
    PatchCase("remove-custom", V21, ops(v21("remove", "/sparks")), 200, removed=("sparks",)),
    PatchCase(
        "v20-add-existing-custom",
        V20,
        ops(v20("add", "/sparks", "again")),
        409,
        "Property sparks already present.",
    ),
    PatchCase(
        "v21-add-existing-custom",
        V21,
        ops(v21("add", "/sparks", "again")),
        200,
        result={"sparks": "again"},
    ),
    PatchCase(
        "v20-add-existing-base",
        V20,
        ops(v20("add", "/name", "again")),
        409,
        "Property name already present.",
    ),
    PatchCase(
        "v21-add-existing-base",
        V21,
        ops(v21("add", "/name", "again")),
        200,
        result={"name": "again"},
    ),
    PatchCase(
        "v20-add-twice",
        V20,
        ops(v20("add", "/bebim", "one"), v20("add", "/bebim", "two")),
        409,
        "Property bebim already present.",
    ),
    PatchCase(
        "v21-add-twice",
        V21,
        ops(v21("add", "/bebim", "one"), v21("add", "/bebim", "two")),
        200,
        result={"bebim": "two"},
    ),
    PatchCase(
        "later-failure-saves-nothing",
        V21,
        ops(v21("replace", "/name", "changed"), v21("replace", "/colburn", "x")),
        409,
        "Property colburn does not exist.",
    ),
    PatchCase(
        "first-failing-item-decides-read-only",
        V21,
        ops(v21("replace", "/id", "x"), {"op": "bogus"}),
        403,
        _read_only("id"),
        gateway_status=400,
    ),
    PatchCase(
        "first-failing-item-decides-op",
        V21,
        ops({"op": "bogus"}, v21("replace", "/id", "x")),
        400,
        _invalid_op("bogus"),
    ),
    PatchCase(
        "conformance-v20-three-ops",
        V20,
        ops(
            v20("replace", "/name", "fedora"),
            v20("remove", "/sparks"),
            v20("add", "/bebim", "bap"),
        ),
        200,
        result={"name": "fedora", "bebim": "bap"},
        removed=("sparks",),
    ),
    PatchCase(
        "conformance-v21-three-ops",
        V21,
        ops(
            v21("replace", "/name", "fedora"),
            v21("remove", "/sparks"),
            v21("add", "/bebim", "bap"),
        ),
        200,
        result={"name": "fedora", "bebim": "bap"},
        removed=("sparks",),
    ),
    PatchCase(
        "property-quota",
        V21,
        ops(*(v21("add", f"/quota{i:03d}", "x") for i in range(130))),
        413,
        "The limit has been exceeded on the number of allowed image properties."
        " Attempted: 132, Maximum: 128",
    ),
]

# v2.0 add conflicts the gateway must find itself when it rewrites v2.0 to v2.1, and the
# changes around them that decide whether the add is reached at all.
V20_ADD_CASES = [
    PatchCase("v20-add-new-custom", V20, ops(v20("add", "/bebim", "bap")), 200, result={"bebim": "bap"}),
    PatchCase(
        "v20-add-existing-description",
        V20,
        ops(v20("add", "/__description", "again")),
        409,
        "Property __description already present.",
    ),
    PatchCase(
        "v20-add-null-name-exists",
        V20,
        ops(v20("replace", "/name", None), v20("add", "/name", "again")),
        409,
        "Property name already present.",
    ),
    PatchCase(
        "v20-remove-then-add",
        V20,
        ops(v20("remove", "/sparks"), v20("add", "/sparks", "new")),
        200,
        result={"sparks": "new"},
    ),
    PatchCase(
        "v20-add-then-remove-then-add",
        V20,
        ops(v20("add", "/bebim", "one"), v20("remove", "/bebim"), v20("add", "/bebim", "two")),
        200,
        result={"bebim": "two"},
    ),
    PatchCase(
        "v20-remove-description-then-add-existing",
        V20,
        ops(v20("remove", "/__description"), v20("add", "/sparks", "again")),
        409,
        "Property sparks already present.",
    ),
    PatchCase(
        "v20-remove-description-then-add-it",
        V20,
        ops(v20("remove", "/__description"), v20("add", "/__description", "new")),
        200,
        result={"__description": "new"},
    ),
    PatchCase(
        "v20-add-after-failing-replace",
        V20,
        ops(v20("replace", "/colburn", "x"), v20("add", "/sparks", "again")),
        409,
        "Property colburn does not exist.",
    ),
    PatchCase(
        "v20-add-after-failing-remove",
        V20,
        ops(v20("remove", "/name"), v20("add", "/sparks", "again")),
        403,
        "Property name may not be removed.",
    ),
    PatchCase(
        "v20-add-twice-after-valid-changes",
        V20,
        ops(v20("replace", "/name", "x"), v20("add", "/bebim", "one"), v20("add", "/bebim", "two")),
        409,
        "Property bebim already present.",
    ),
    PatchCase(
        "v20-add-escaped-existing",
        V20,
        b'[{"add": "/ sp\\u0061rks ", "value": "again"}]',
        409,
        "Property sparks already present.",
    ),
    # Glance tests hasattr() on its image object, which has attributes its JSON never
    # shows (FINDINGS.md, "Glance's image object").
    PatchCase(
        "v20-add-glance-object-attribute",
        V20,
        ops(v20("add", "/member", "x")),
        409,
        "Property member already present.",
        gateway_status=400,
    ),
    PatchCase(
        "v20-add-glance-method",
        V20,
        ops(v20("add", "/delete", "x")),
        409,
        "Property delete already present.",
        gateway_status=400,
    ),
    PatchCase(
        "v20-add-after-replace-of-glance-object-attribute",
        V20,
        ops(v20("replace", "/context", "x"), v20("add", "/sparks", "again")),
        409,
        "Property sparks already present.",
        gateway_status=400,
    ),
]

# Allowed and forbidden changes in one body: the gateway refuses the whole body.
MIX_CASES = [
    PatchCase(
        "mix-allowed-then-forbidden",
        V21,
        ops(v21("replace", "/name", "mixed"), v21("replace", "/min_ram", 5)),
        200,
        result={"name": "mixed", "min_ram": 5},
        gateway_status=400,
    ),
    PatchCase(
        "mix-v20-custom-then-ims-system",
        V20,
        ops(v20("add", "/bebim", "x"), v20("add", "/__os_type", "Windows")),
        200,
        result={"bebim": "x", "__os_type": "Windows"},
        gateway_status=400,
    ),
    PatchCase(
        "mix-forbidden-before-a-malformed-item",
        V20,
        ops(v20("replace", "/visibility", "private"), {"value": "x"}),
        400,
        V20_NONE,
        gateway_status=400,
    ),
    PatchCase(
        "mix-malformed-item-before-a-forbidden-one",
        V21,
        ops({"op": "replace", "value": "x"}, v21("replace", "/visibility", "private")),
        400,
        NO_PATH,
    ),
    PatchCase(
        "forbidden-spelled-with-a-json-escape",
        V20,
        b'[{"add": "/\\u005f_os_type", "value": "Windows"}]',
        200,
        result={"__os_type": "Windows"},
        gateway_status=400,
    ),
    PatchCase(
        "forbidden-spelled-with-whitespace",
        V21,
        ops(v21("add", "/ __os_type\t", "Windows")),
        200,
        result={"__os_type": "Windows"},
        gateway_status=400,
    ),
    PatchCase(
        "forbidden-remove-of-ims-system-property",
        V21,
        ops(v21("add", "/bebim", "x"), v21("remove", "/__os_type")),
        409,
        "Property __os_type does not exist.",
        gateway_status=400,
    ),
    PatchCase(
        "forbidden-prefix-double-underscore",
        V21,
        ops(v21("add", "/__anything", "x")),
        200,
        result={"__anything": "x"},
        gateway_status=400,
    ),
]


# -- whitespace, "~" escapes and forbidden names together ------------------------------
# What tests/patch covers, sent to the real Glance: every character str.strip() removes
# (WHITESPACE, all 29), next to and between escapes, around forbidden names.

def _u(char: str) -> str:
    return f"U+{ord(char):04X}"


def _shaped(index: int) -> tuple[str, str, Any]:
    return ("v21", V21, v21) if index % 2 == 0 else ("v20", V20, v20)


# One forbidden name per whitespace character, in turn: (op, name, value, Glance's
# status, Glance's message). Glance takes the IMS ones and some of its own; it refuses
# its read-only and reserved ones with 403. The gateway refuses them all with 400.
_FORBIDDEN_IN_TURN: list[tuple[str, str, Any, int, str | None]] = [
    ("replace", "min_ram", 512, 200, None),
    ("add", "__os_type", "Linux", 200, None),
    ("replace", "visibility", "private", 200, None),
    ("replace", "id", "x", 403, _read_only("id")),
    ("add", "os_glance_x", "x", 403, _reserved("os_glance_x")),
    ("add", "__platform", "Ubuntu", 200, None),
    ("replace", "min_disk", 3, 200, None),
    ("replace", "checksum", "x", 403, _read_only("checksum")),
    ("add", "__support_kvm", "true", 200, None),
    ("replace", "os_hidden", True, 200, None),
]

WHITESPACE_ESCAPE_CASES = [
    *(
        PatchCase(
            f"pointer-every-unicode-whitespace-{shape}",
            content_type,
            ops(*(make("add", f"/{char}ws{index:02d}{char}", "x") for index, char in enumerate(WHITESPACE))),
            200,
            result={f"ws{index:02d}": "x" for index in range(len(WHITESPACE))},
        )
        for shape, content_type, make in (_shaped(0), _shaped(1))
    ),
    *(
        PatchCase(
            f"pointer-every-unicode-whitespace-around-escapes-{shape}",
            content_type,
            ops(*(make("add", f"/{char}~0e{index:02d}~1{char}", "x") for index, char in enumerate(WHITESPACE))),
            200,
            result={f"~e{index:02d}/": "x" for index in range(len(WHITESPACE))},
        )
        for shape, content_type, make in (_shaped(0), _shaped(1))
    ),
    *(
        PatchCase(
            f"forbidden-{name}-padded-with-{_u(char)}",
            _shaped(index)[1],
            ops(_shaped(index)[2](op, f"/{char}{name}{char * (index % 3)}", value)),
            status,
            message,
            result={name: value} if status == 200 else {},
            gateway_status=400,
        )
        for index, char in enumerate(WHITESPACE)
        for op, name, value, status, message in [_FORBIDDEN_IN_TURN[index % len(_FORBIDDEN_IN_TURN)]]
    ),
    PatchCase(
        "forbidden-escaped-slash-in-ims-namespace",
        V21,
        ops(v21("add", "/__os~1type", "Linux")),
        200,
        result={"__os/type": "Linux"},
        gateway_status=400,
    ),
    PatchCase(
        "forbidden-escaped-tilde-in-ims-namespace-padded",
        V20,
        ops(v20("add", "/\u00a0__os~0type\u3000", "Linux")),
        200,
        result={"__os~type": "Linux"},
        gateway_status=400,
    ),
    PatchCase(
        "forbidden-after-an-allowed-escaped-change",
        V21,
        ops(v21("add", "/ a~1b ", "x"), v21("replace", "/\u2003min_ram", 512)),
        200,
        result={"a/b": "x", "min_ram": 512},
        gateway_status=400,
    ),
    PatchCase(
        "reserved-escaped-and-padded",
        V21,
        ops(v21("add", "/\u2003os_glance~1x\u2003", "x")),
        403,
        _reserved("os_glance/x"),
        gateway_status=400,
    ),
    PatchCase(
        "read-only-padded-next-to-an-escape",
        V20,
        ops(v20("add", "/\tsize\x0b", 1)),
        403,
        _read_only("size"),
        gateway_status=400,
    ),
    PatchCase("pointer-escaped-slash-padded", V21, ops(v21("add", "/ ~1 ", "x")), 200, result={"/": "x"}),
    PatchCase("pointer-escape-order-padded", V20, ops(v20("add", "/\t~01\u3000", "x")), 200, result={"~1": "x"}),
    PatchCase(
        "pointer-whitespace-between-tilde-and-digit",
        V21,
        ops(v21("add", "/a~ 1b", "x")),
        400,
        _pointer("/a~ 1b", 'contains "~" not part of a recognized escape sequence.'),
    ),
    PatchCase(
        "pointer-whitespace-after-a-lone-tilde",
        V20,
        ops(v20("add", "/ab~\u00a0", "x")),
        400,
        _pointer("/ab~\u00a0", 'contains "~" not part of a recognized escape sequence.'),
    ),
    PatchCase("pointer-padded-escape-depth", V21, ops(v21("add", "/ a~1b / c", "x")), 400, _depth("/a/b/c")),
    PatchCase(
        "pointer-zero-width-space-is-not-whitespace",
        V21,
        ops(v21("add", "/\u200bname", "x")),
        200,
        result={"\u200bname": "x"},
    ),
    *(
        PatchCase(
            f"pointer-lone-surrogate-{shape}",
            content_type,
            ops(make("add", "/ na\ud800me", "x")),
            500,
            SERVER_ERROR,
            gateway_status=400,
        )
        for shape, content_type, make in (_shaped(0), _shaped(1))
    ),
    PatchCase("pointer-only-whitespace-is-the-empty-attribute", V20, ops(v20("add", "/\u3000", "x")), 200, result={"": "x"}),
]

ALL_CASES: tuple[PatchCase, ...] = tuple(
    MEDIA_TYPE_CASES
    + BODY_CASES
    + V21_OP_CASES
    + V20_OP_CASES
    + POINTER_CASES
    + ATTRIBUTE_CASES
    + UPSTREAM_CASES
    + V20_ADD_CASES
    + MIX_CASES
    + WHITESPACE_ESCAPE_CASES
)
