"""The two bodies of Glance's image PATCH, parsed into one list of changes.

``parse`` follows Glance's ``RequestDeserializer.update`` (glance/api/v2/images.py)
check for check and message for message, so that the gateway refuses exactly what
the upstream would refuse, with the same words. Where Glance answers 500 (a path that
is not a string, a body nested too deeply) this module answers 400 instead, and it
refuses a few inputs Glance would take but that another JSON reader could read
differently (NaN and infinities, lone surrogates in a pointer and, when asked,
repeated member names): the gateway must check exactly what the upstream applies.

``to_v21_json`` writes the canonical v2.1 body the gateway forwards.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from gateway.patch.attributes import (
    GLANCE_READ_ONLY_ATTRIBUTES,
    GLANCE_RESERVED_ATTRIBUTES,
    GLANCE_RESERVED_NAMESPACE,
)
from gateway.vocabulary import Reason, Shape

V20_MEDIA_TYPE: Final = "application/openstack-images-v2.0-json-patch"
V21_MEDIA_TYPE: Final = "application/openstack-images-v2.1-json-patch"
ACCEPT_PATCH: Final = f"{V20_MEDIA_TYPE}, {V21_MEDIA_TYPE}"
OPS: Final = ("add", "remove", "replace")
# The reasons parse() refuses a body for, in Glance's order of checks.
REASONS: Final = frozenset({
    Reason.UNSUPPORTED_MEDIA_TYPE, Reason.MISSING_BODY, Reason.MALFORMED_JSON, Reason.BAD_BODY_TYPE,
    Reason.BAD_OPERATION_OBJECT, Reason.MISSING_OP, Reason.BAD_OP, Reason.MISSING_PATH,
    Reason.BAD_POINTER, Reason.BAD_DEPTH, Reason.MISSING_VALUE, Reason.READ_ONLY, Reason.RESERVED,
    Reason.DUPLICATE_MEMBER, Reason.TOO_DEEP,
})  # fmt: skip


class _Absent(enum.Enum):
    ABSENT = "ABSENT"

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent.ABSENT
"""``Change.value`` of a remove: Glance ignores whatever value a remove carries."""


class Change(NamedTuple):
    """One operation: op, the decoded pointer tokens, the pointer as sent, the value."""

    op: str
    path: tuple[str, ...]
    pointer: str
    value: Any = ABSENT

    @property
    def attribute(self) -> str:
        return self.path[0]


class Patch(NamedTuple):
    shape: Shape
    changes: tuple[Change, ...]


class PatchError(ValueError):
    """A body Glance would refuse, with Glance's status and message.

    ``index`` is the failing operation object (None for the whole body) and
    ``parsed`` holds the changes of the objects before it.
    """

    def __init__(
        self,
        status: int,
        message: str,
        reason: Reason,
        *,
        index: int | None = None,
        parsed: tuple[Change, ...] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        message = _encodable(message)
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.index = index
        self.parsed = parsed
        self.headers = dict(headers or {})


class _Refusal(Exception):
    """An operation object refused; ``parse`` adds its index and the changes before it."""

    def __init__(self, reason: Reason, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


_SHAPES: Final = {V20_MEDIA_TYPE: Shape.V20, V21_MEDIA_TYPE: Shape.V21}
_OP_LIST: Final = ", ".join(OPS)
_READ_ONLY: Final = frozenset(GLANCE_READ_ONLY_ATTRIBUTES)
_RESERVED: Final = frozenset(GLANCE_RESERVED_ATTRIBUTES)
# Glance allows a second token only here (RequestDeserializer._path_depth_limits).
_DEPTH_LIMITS: Final = {"locations": {"add": 2, "remove": 2, "replace": 1}}
_ADJACENT_SLASHES: Final = re.compile(r"/\s*?/")
_BAD_ESCAPE: Final = re.compile(r"~[^01]")
_MALFORMED_JSON: Final = "Malformed JSON in request body."


def shape_of(content_type: str | None) -> Shape:
    """The body shape named by a raw Content-Type header value.

    Glance (webob) compares the raw header up to the first ``;``: no lowercasing and
    no trimming, so ``Application/...`` or a space before ``;`` is a 415 there too.
    """
    raw = content_type or ""
    shape = _SHAPES.get(raw.partition(";")[0])
    if shape is None:
        # webob's explanation, then the detail Glance 33 adds to it.
        raise PatchError(
            415,
            f"The request media type {raw} is not supported by this server. "
            f"Image PATCH expects Content-Type one of: {ACCEPT_PATCH}",
            Reason.UNSUPPORTED_MEDIA_TYPE,
            headers={"Accept-Patch": ACCEPT_PATCH},
        )
    return shape


def parse(
    content_type: str | None,
    body: bytes | None,
    *,
    glance_attribute_checks: bool = True,
    reject_duplicate_members: bool = False,
    max_value_depth: int | None = None,
) -> Patch:
    """Parse an image PATCH as Glance does; raise PatchError for what Glance refuses.

    ``body`` is None when the request had no body at all (no Content-Length above 0
    and no Transfer-Encoding); ``b""`` is an empty body, hence malformed JSON.
    ``glance_attribute_checks`` adds Glance's 403 read-only/reserved checks.
    ``reject_duplicate_members`` refuses an operation object naming a member twice.
    ``max_value_depth`` refuses an operation object with a member nested deeper (a
    string is 0 levels, ``["a"]`` 1): Glance answers 500 for values 400 levels deep.
    """
    shape = shape_of(content_type)
    document = _load(body, reject_duplicate_members)
    if not isinstance(document, list):
        raise PatchError(
            400, "Request body must be a JSON array of operation objects.", Reason.BAD_BODY_TYPE
        )
    if not glance_attribute_checks:
        plain = _plain_changes(document, shape is Shape.V21)
        if plain is not None:
            return Patch(shape, plain)
    options = _OPTIONS.get((shape, glance_attribute_checks, reject_duplicate_members, max_value_depth))
    if options is None:
        options = _Options(
            _locate_v21 if shape is Shape.V21 else _locate_v20,
            glance_attribute_checks,
            reject_duplicate_members,
            max_value_depth,
        )
        if len(_OPTIONS) < 64:
            _OPTIONS[(shape, glance_attribute_checks, reject_duplicate_members, max_value_depth)] = options
    return Patch(shape, _read_changes(document, options))


def _read_changes(document: list[Any], options: _Options) -> tuple[Change, ...]:
    """Every operation object in order, each with all of Glance's checks (and the gateway's)."""
    changes: list[Change] = []
    for index, raw in enumerate(document):
        try:
            changes.append(_change(raw, index, options))
        except _Refusal as refusal:
            raise PatchError(
                refusal.status,
                refusal.message,
                refusal.reason,
                index=index,
                parsed=tuple(changes),
            ) from None
    return tuple(changes)


def to_v21_json(changes: Iterable[Change]) -> bytes:
    """The canonical v2.1 body: op, path (re-encoded from the decoded tokens), value."""
    operations: list[dict[str, Any]] = []
    for change in changes:
        operation: dict[str, Any] = {"op": change.op, "path": encode_pointer(change.path)}
        if change.op != "remove":
            operation["value"] = change.value
        operations.append(operation)
    return _ENCODER.encode(operations).encode("ascii")


def encode_pointer(path: tuple[str, ...]) -> str:
    return "/" + "/".join([token.replace("~", "~0").replace("/", "~1") for token in path])


# -- the body ----------------------------------------------------------------------


class _DuplicateMembers(dict[str, Any]):
    """A JSON object that named a member twice; Python kept the last value."""

    __slots__ = ("duplicate",)

    def __init__(self, members: dict[str, Any], duplicate: str) -> None:
        super().__init__(members)
        self.duplicate = duplicate


def _object_with_duplicates_marked(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) == len(pairs):
        return members
    counts = Counter(name for name, _ in pairs)
    return _DuplicateMembers(members, next(name for name in counts if counts[name] > 1))


def _refuse_constant(literal: str) -> float:
    # Python reads NaN/Infinity like Glance does, but they are not JSON and other
    # readers (the upstream's) may read them differently or not at all.
    raise ValueError(f"{literal} is not JSON")


def _finite_float(literal: str) -> float:
    number = float(literal)
    # 1e400 reads as infinity, which has no JSON spelling for the forwarded body.
    if math.isinf(number):
        raise ValueError(f"{literal} is out of range")
    return number


_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_DUPLICATE_AWARE_DECODER: Final = json.JSONDecoder(
    parse_constant=_refuse_constant,
    parse_float=_finite_float,
    object_pairs_hook=_object_with_duplicates_marked,
)
_ENCODER: Final = json.JSONEncoder(ensure_ascii=True, allow_nan=False)


def _load(body: bytes | None, mark_duplicates: bool) -> Any:
    if body is None:
        raise PatchError(400, "Body expected in request.", Reason.MISSING_BODY)
    decoder = _DUPLICATE_AWARE_DECODER if mark_duplicates else _DECODER
    try:
        # oslo's jsonutils decodes strict UTF-8 first: a BOM, UTF-16 or invalid
        # UTF-8 is malformed, never sniffed as json.loads(bytes) would.
        document = decoder.decode(str(body, "utf-8"))
    except (ValueError, RecursionError):
        raise PatchError(400, _MALFORMED_JSON, Reason.MALFORMED_JSON) from None
    if not isinstance(document, (dict, list)):
        raise PatchError(400, "Unexpected body type. Expected list/dict.", Reason.BAD_BODY_TYPE)
    return document


# -- the common body, read at once ---------------------------------------------------

# A pointer every check below passes and decodes to itself: one token, nothing escaped,
# no whitespace (Glance strips it), no "/" inside, printable ASCII.
_PLAIN_POINTER: Final = re.compile(r"/[A-Za-z0-9_.:@+-]+")
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_V21_MEMBERS: Final = frozenset({"op", "path", "value"})


def _plain_changes(document: list[Any], v21: bool) -> tuple[Change, ...] | None:
    """The changes of a body made only of plain operation objects, or None to read it in full.

    Plain: exactly the members of the shape (v2.1 op, path, value; v2.0 one op and value),
    a known op, a plain one-token pointer (not ``locations``, whose depth rules differ)
    and a scalar value. Every check of ``_change`` passes for such an object and it
    yields the same Change, so the result is the one ``_change`` gives (the property
    test in tests/patch/test_parser.py holds them equal).
    """
    changes = []
    for raw in document:
        if type(raw) is not dict:  # also a _DuplicateMembers object: read in full
            return None
        if v21:
            if len(raw) != 3 or not _V21_MEMBERS.issuperset(raw):
                return None
            op = raw["op"]
            pointer = raw["path"]
        else:
            if len(raw) != 2 or "value" not in raw:
                return None
            op = next(name for name in raw if name != "value")
            pointer = raw[op]
        value = raw["value"]
        if (
            type(op) is not str
            or op not in OPS
            or type(pointer) is not str
            or type(value) not in _SCALARS
            or not _PLAIN_POINTER.fullmatch(pointer)
            or pointer == "/locations"
        ):
            return None
        changes.append(Change(op, (pointer[1:],), pointer, ABSENT if op == "remove" else value))
    return tuple(changes)


# -- one operation object ----------------------------------------------------------

_Locate = Callable[[dict[str, Any]], tuple[str, Any]]


@dataclass(frozen=True, slots=True)
class _Options:
    locate: _Locate
    attribute_checks: bool
    reject_duplicates: bool
    max_value_depth: int | None


_OPTIONS: Final[dict[tuple[Shape, bool, bool, int | None], _Options]] = {}


def _change(raw: Any, index: int, options: _Options) -> Change:
    if not isinstance(raw, dict):
        raise _Refusal(Reason.BAD_OPERATION_OBJECT, "Operations must be JSON objects.")
    if options.reject_duplicates and isinstance(raw, _DuplicateMembers):
        raise _Refusal(
            Reason.DUPLICATE_MEMBER,
            f'Operation object {index} has the member "{raw.duplicate}" more than once; '
            "the gateway refuses ambiguous operations.",
        )
    if options.max_value_depth is not None:
        _check_nesting(raw, index, options.max_value_depth)
    op, pointer = options.locate(raw)
    path = _decode_pointer(pointer)
    _check_depth(op, path)
    if op == "remove":
        value: Any = ABSENT
    elif "value" in raw:
        value = raw["value"]
    else:
        raise _Refusal(Reason.MISSING_VALUE, f'Operation "{op}" requires a member named "value".')
    if options.attribute_checks:
        _check_glance_attribute(path[0])
    return Change(op, path, pointer, value)


def _check_nesting(raw: dict[str, Any], index: int, limit: int) -> None:
    for name, member in raw.items():
        if _deeper_than(member, limit):
            raise _Refusal(
                Reason.TOO_DEEP,
                f'Operation object {index}: the member "{name}" is nested more than {limit} levels deep.',
            )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (``[]`` is one), level by level."""
    level = [value]
    depth = 0
    while True:
        containers = [item for item in level if isinstance(item, list | dict)]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]


def _locate_v21(raw: dict[str, Any]) -> tuple[str, Any]:
    op = raw.get("op")
    if op is None:
        raise _Refusal(
            Reason.MISSING_OP,
            f"Unable to find `op` in JSON Schema change. "
            f"It must be one of the following: {_OP_LIST}.",
        )
    if op not in OPS:
        # Glance formats a non-string op with Python's str() and still answers 400.
        raise _Refusal(
            Reason.BAD_OP, f"Invalid operation: `{op}`. It must be one of the following: {_OP_LIST}."
        )
    if "path" not in raw:
        raise _Refusal(Reason.MISSING_PATH, "Unable to find 'path' in JSON Schema change")
    return op, raw["path"]


def _locate_v20(raw: dict[str, Any]) -> tuple[str, Any]:
    present = [op for op in OPS if op in raw]
    if len(present) > 1:
        raise _Refusal(
            Reason.BAD_OP,
            "Operation objects must contain only one member"
            ' named "add", "remove", or "replace".',
        )
    if not present:
        raise _Refusal(
            Reason.BAD_OP,
            "Operation objects must contain exactly one member"
            ' named "add", "remove", or "replace".',
        )
    op = present[0]
    return op, raw[op]


def _decode_pointer(pointer: Any) -> tuple[str, ...]:
    if type(pointer) is not str:
        # Glance answers 500 here (AttributeError on pointer.startswith).
        raise _Refusal(Reason.BAD_POINTER, f"Pointer must be a string, got {_json_type(pointer)}.")
    _check_pointer(pointer)
    tokens = pointer.lstrip("/").split("/")
    if "~" in pointer:
        return tuple([token.replace("~1", "/").replace("~0", "~").strip() for token in tokens])
    return tuple([token.strip() for token in tokens])


def _check_pointer(pointer: str) -> None:
    """Glance's five pointer checks in Glance's order, then the gateway's own."""
    if not pointer.startswith("/"):
        raise _Refusal(Reason.BAD_POINTER, f'Pointer `{pointer}` does not start with "/".')
    if _ADJACENT_SLASHES.search(pointer, 1):
        raise _Refusal(Reason.BAD_POINTER, f'Pointer `{pointer}` contains adjacent "/".')
    if len(pointer) > 1 and pointer.endswith("/"):
        raise _Refusal(Reason.BAD_POINTER, f'Pointer `{pointer}` end with "/".')
    if pointer[1:].strip() == "/":
        raise _Refusal(Reason.BAD_POINTER, f"Pointer `{pointer}` does not contains valid token.")
    if "~" in pointer and (_BAD_ESCAPE.search(pointer) or pointer.endswith("~")):
        raise _Refusal(
            Reason.BAD_POINTER,
            f'Pointer `{pointer}` contains "~" not part of a recognized escape sequence.',
        )
    if not pointer.isascii() and _has_lone_surrogate(pointer):
        # JSON lets "\ud800" through; readers differ on what name it then spells
        # (dropped, replaced, refused), so the name checked may not be the name applied.
        raise _Refusal(
            Reason.BAD_POINTER,
            f"Pointer {json.dumps(pointer)} contains an unpaired surrogate escape; "
            "attribute names must be valid Unicode.",
        )


def _check_depth(op: str, path: tuple[str, ...]) -> None:
    limit = _DEPTH_LIMITS[path[0]][op] if path[0] in _DEPTH_LIMITS else 1
    if len(path) != limit:
        joined = "/".join(path)
        raise _Refusal(Reason.BAD_DEPTH, f"Invalid JSON pointer for this resource: '/{joined}'")


def _check_glance_attribute(attribute: str) -> None:
    if attribute in _READ_ONLY:
        raise _Refusal(Reason.READ_ONLY, f"Attribute '{attribute}' is read-only.", 403)
    if attribute in _RESERVED or attribute.startswith(GLANCE_RESERVED_NAMESPACE):
        raise _Refusal(Reason.RESERVED, f"Attribute '{attribute}' is reserved.", 403)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "array" if isinstance(value, list) else "object"


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _encodable(message: str) -> str:
    """The message, with lone surrogates spelled out so it can be sent as UTF-8."""
    if _has_lone_surrogate(message):
        return message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message
