"""The body of an image PATCH as Glance reads it: ``RequestDeserializer.update``.

Written after Glance 33's own code (glance/api/v2/images.py, glance/common/wsgi.py
``JSONRequestDeserializer``), not after the gateway's parser: the emulator is the judge of
what the gateway forwards, so it must not share the gateway's mistakes. Where Glance
answers 500 (a path that is not a string), this answers 500 too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ims_emulator.errors import EMPTY_BODY, ImsError

V20: Final = "application/openstack-images-v2.0-json-patch"
V21: Final = "application/openstack-images-v2.1-json-patch"
CONTENT_TYPES: Final = {V20: 4, V21: 10}  # the JSON Schema draft each media type implies

# RequestDeserializer's own lists.
READONLY: Final = (
    "created_at", "updated_at", "status", "checksum", "size", "virtual_size", "direct_url",
    "self", "file", "schema", "id", "os_hash_algo", "os_hash_value",
)  # fmt: skip
RESERVED: Final = ("location", "deleted", "deleted_at")
RESERVED_NAMESPACE: Final = "os_glance"
_DEPTH_LIMITS: Final = {"locations": {"add": 2, "remove": 2, "replace": 1}}
_OPERATIONS: Final = ("add", "remove", "replace")

_VISIBILITIES: Final = ("community", "public", "private", "shared")
CONTAINER_FORMATS: Final = (None, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
# Glance's disk formats plus IMS's zvhd and zvhd2.
DISK_FORMATS: Final = (None, "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop", "zvhd", "zvhd2")


@dataclass(frozen=True, slots=True)
class Change:
    op: str
    path: tuple[str, ...]
    draft: int  # 4: the v2.0 body shape; 10: v2.1
    value: Any = None

    @property
    def name(self) -> str:
        return self.path[0]


def update(content_type: str | None, body: bytes | None) -> list[Change]:
    """``RequestDeserializer.update``: the changes, or the ImsError Glance answers."""
    media_type = (content_type or "").split(";", 1)[0]  # webob: no strip, no lower-casing
    if media_type not in CONTENT_TYPES:
        allowed = ", ".join(sorted(CONTENT_TYPES))
        raise ImsError(
            415,
            f"The request media type {content_type or ''} is not supported by this server. "
            f"Image PATCH expects Content-Type one of: {allowed}",
            headers={"Accept-Patch": allowed},
        )
    return changes_of(request_body(body), CONTENT_TYPES[media_type])


def changes_of(document: Any, draft: int, *, validate: bool = True) -> list[Change]:
    """The operation objects of a body, in order; ``validate``: Glance's attribute and value checks."""
    if not isinstance(document, list):
        raise ImsError(400, "Request body must be a JSON array of operation objects.")
    changes = []
    for raw in document:
        if not isinstance(raw, dict):
            raise ImsError(400, "Operations must be JSON objects.")
        op = _operation_d10(raw) if draft == 10 else _operation_d4(raw)
        pointer = _path_d10(raw) if draft == 10 else raw[op]
        path = decode_pointer(pointer)
        _validate_path(op, path)
        value = None if op == "remove" else _value(raw, op)
        change = Change(op, path, draft, value)
        if validate:
            validate_change(change)
        changes.append(change)
    return changes


def request_body(body: bytes | None) -> Any:
    """``JSONRequestDeserializer.default`` with ``from_json``: strict UTF-8, lists and dicts only."""
    if body is None:
        raise ImsError(400, "Body expected in request.", code=EMPTY_BODY)
    try:
        document = json.loads(body.decode("utf-8"))
    except ValueError:
        raise ImsError(400, "Malformed JSON in request body.") from None
    if not isinstance(document, dict | list):
        raise ImsError(400, "Unexpected body type. Expected list/dict.")
    return document


def _operation_d10(raw: Mapping[str, Any]) -> str:
    op = raw.get("op")
    available = ", ".join(_OPERATIONS)
    if op is None:
        raise ImsError(400, f"Unable to find `op` in JSON Schema change. It must be one of the following: {available}.")
    if op not in _OPERATIONS:
        raise ImsError(400, f"Invalid operation: `{op}`. It must be one of the following: {available}.")
    return str(op)


def _operation_d4(raw: Mapping[str, Any]) -> str:
    found = None
    for key in _OPERATIONS:
        if key in raw:
            if found is not None:
                raise ImsError(400, 'Operation objects must contain only one member named "add", "remove", or "replace".')
            found = key
    if found is None:
        raise ImsError(400, 'Operation objects must contain exactly one member named "add", "remove", or "replace".')
    return found


def _path_d10(raw: Mapping[str, Any]) -> Any:
    if "path" not in raw:
        raise ImsError(400, "Unable to find 'path' in JSON Schema change")
    return raw["path"]


def decode_pointer(pointer: Any) -> tuple[str, ...]:
    if not isinstance(pointer, str):
        raise ImsError(500, "The server has either erred or is incapable of performing the requested operation.")
    if not pointer.startswith("/"):
        raise ImsError(400, f'Pointer `{pointer}` does not start with "/".')
    if re.search(r"/\s*?/", pointer[1:]):
        raise ImsError(400, f'Pointer `{pointer}` contains adjacent "/".')
    if len(pointer) > 1 and pointer.endswith("/"):
        raise ImsError(400, f'Pointer `{pointer}` end with "/".')
    if pointer[1:].strip() == "/":
        raise ImsError(400, f"Pointer `{pointer}` does not contains valid token.")
    if re.search("~[^01]", pointer) or pointer.endswith("~"):
        raise ImsError(400, f'Pointer `{pointer}` contains "~" not part of a recognized escape sequence.')
    return tuple(part.replace("~1", "/").replace("~0", "~").strip() for part in pointer.lstrip("/").split("/"))


def _validate_path(op: str, path: tuple[str, ...]) -> None:
    if len(path) != _DEPTH_LIMITS.get(path[0], {}).get(op, 1):
        joined = "/".join(path)
        raise ImsError(400, f"Invalid JSON pointer for this resource: '/{joined}'")


def _value(raw: Mapping[str, Any], op: str) -> Any:
    if "value" not in raw:
        raise ImsError(400, f'Operation "{op}" requires a member named "value".')
    return raw["value"]


def validate_change(change: Change) -> None:
    """``_validate_change``: read-only and reserved names first, then the value's schema."""
    root = change.name
    if root in READONLY:
        raise ImsError(403, f"Attribute '{root}' is read-only.")
    if root in RESERVED or root.startswith(RESERVED_NAMESPACE):
        raise ImsError(403, f"Attribute '{root}' is reserved.")
    if change.op == "remove" or root == "locations":
        return
    if len(change.path) == 1:
        check_value(root, change.value)


# -- values: a subset of Glance's image schema, with jsonschema-like reasons -------------


def schema_error(reason: str) -> ImsError:
    return ImsError(400, f"Provided object does not match schema 'image': {reason}")


def type_reason(value: Any, expected: str) -> str:
    return f"{value!r} is not of type '{expected}'"


def _string(value: Any, *, nullable: bool = False, max_length: int | None = None) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        return type_reason(value, "string")
    if max_length is not None and len(value) > max_length:
        return f"{value!r} is too long"
    return None


def _enum(value: Any, allowed: tuple[str | None, ...]) -> str | None:
    return None if value in allowed else f"{value!r} is not one of {list(allowed)!r}"


def non_negative_integer(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return type_reason(value, "integer")
    return f"{value} is less than the minimum of 0" if value < 0 else None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else type_reason(value, "boolean")


def _tags(value: Any) -> str | None:
    if not isinstance(value, list):
        return type_reason(value, "array")
    return next((reason for tag in value if (reason := _string(tag, max_length=255))), None)


BASE_CHECKS: Final[Mapping[str, Callable[[Any], str | None]]] = {
    "name": lambda v: _string(v, nullable=True, max_length=255),
    "owner": lambda v: _string(v, nullable=True, max_length=255),
    "visibility": lambda v: _enum(v, _VISIBILITIES),
    "container_format": lambda v: _enum(v, CONTAINER_FORMATS),
    "disk_format": lambda v: _enum(v, DISK_FORMATS),
    "min_disk": non_negative_integer,
    "min_ram": non_negative_integer,
    "protected": _boolean,
    "os_hidden": _boolean,
    "tags": _tags,
}


def check_value(name: str, value: Any) -> None:
    """Glance's schema: the base attributes' types; every other (custom) value is a string."""
    check = BASE_CHECKS.get(name, _string)
    if reason := check(value):
        raise schema_error(reason)
