"""The gateway against readings that are not its own (tests/oracle.py).

- The IMS attribute table, copied from the API reference, against the policy the gateway
  ships (config/gateway.toml) and the one it falls back to (the schema's defaults and
  ``Policy()``), in both directions.
- RFC 6901's reading of a JSON pointer, and Glance's as the RFC's plus its documented
  differences, against the pointers the parser decodes (both shapes, both parse paths).
- The gateway's whole check of a body (``parse_and_check``) against those readings and
  Python's own JSON reader, over generated bodies: forbidden names in every spelling,
  repeated members.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import config
from gateway.config import Settings
from gateway.config.generation import Config
from gateway.context import RequestContext
from gateway.edge import errors
from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE, PatchError, parse
from gateway.patch.policy import Policy
from gateway.proxy.images import parse_and_check
from gateway.vocabulary import AttributeClass, Reason, Route
from testing.paths import SHIPPED_CONFIG
from tests.oracle import (
    GLANCE_OBJECT_NAMES,
    GLANCE_ONLY,
    GLANCE_READ_ONLY,
    GLANCE_RESERVED,
    GLANCE_RESERVED_NAMESPACE,
    IMS_NAMESPACE,
    IMS_SYSTEM_ATTRIBUTES,
    MODIFIABLE_SYSTEM_ATTRIBUTES,
    WHITESPACE,
    PointerRefused,
    gateway_refuses,
    glance_depth_ok,
    glance_tokens,
    may_be_changed,
    rfc6901_tokens,
)

OPS = ("add", "remove", "replace")
SHAPES = (V21_MEDIA_TYPE, V20_MEDIA_TYPE)
GLANCE_NAMES = GLANCE_READ_ONLY | GLANCE_RESERVED | GLANCE_ONLY | GLANCE_OBJECT_NAMES
REFUSED_BY_REFERENCE = sorted((set(IMS_SYSTEM_ATTRIBUTES) - MODIFIABLE_SYSTEM_ATTRIBUTES) | GLANCE_NAMES)
# Customized attributes by the reference's rule: names IMS and Glance do not define,
# Glance's own names in another case (it compares case-sensitively) among them.
CUSTOM_NAMES = [
    "team", "colour", "x", "a b", "a/b", "a~b", "~1", "ñame", "名字", "ID", "Visibility", "NAME",
    "_description", "_DESCRIPTION", "description", "os_glanc", "OS_GLANCE_x", "image", "tags2",
    "min_ram_", "names", "locations_", "_", "",
]  # fmt: skip


def shipped_policy() -> Policy:
    return Config.from_settings(config.load(SHIPPED_CONFIG, environ={})).policy


POLICIES: dict[str, Callable[[], Policy]] = {
    "config/gateway.toml": shipped_policy,
    "schema defaults": lambda: Config.from_settings(Settings()).policy,
    "Policy()": Policy,
}


def encode(name: str) -> str:
    return "/" + name.replace("~", "~0").replace("/", "~1")


def body(content_type: str, *items: tuple[str, str]) -> bytes:
    if content_type == V21_MEDIA_TYPE:
        operations = [{"op": op, "path": pointer, "value": "x"} for op, pointer in items]
    else:
        operations = [{op: pointer, "value": "x"} for op, pointer in items]
    return json.dumps(operations).encode()


def refused_names(policy: Policy, names: list[str]) -> dict[str, list[str]]:
    """For each name, the (shape, op) spellings of a change of it that the policy refuses."""
    refused: dict[str, list[str]] = {}
    for name in names:
        for content_type in SHAPES:
            for op in OPS:
                # Glance takes /locations only with an index for add and remove.
                pointer = encode(name) + ("/0" if name == "locations" and op != "replace" else "")
                (change,) = parse(content_type, body(content_type, (op, pointer)), glance_attribute_checks=False).changes
                assert change.path[0] == name
                if policy.violations([change]) or policy.classify(change) is AttributeClass.SYSTEM:
                    refused.setdefault(name, []).append(f"{content_type[24:28]} {op}")
    return refused


# -- the IMS attribute table --------------------------------------------------------------


def test_the_oracle_table_is_the_references() -> None:
    assert len(IMS_SYSTEM_ATTRIBUTES) == len(set(IMS_SYSTEM_ATTRIBUTES)) == 60
    assert MODIFIABLE_SYSTEM_ATTRIBUTES == {"name", "__description"} < set(IMS_SYSTEM_ATTRIBUTES)
    assert (IMS_SYSTEM_ATTRIBUTES[0], IMS_SYSTEM_ATTRIBUTES[9], IMS_SYSTEM_ATTRIBUTES[-1]) == (
        "file", "name", "__support_agent_list",
    )  # fmt: skip


def test_the_shipped_file_spells_out_the_policy() -> None:
    """The policy tests below read the file, not defaults it would fall back to."""
    section = tomllib.loads(SHIPPED_CONFIG.read_text())["policy"]
    assert set(section) == {"allowed_system_attributes", "forbidden_attributes", "forbidden_prefixes"}


@pytest.mark.parametrize("source", POLICIES)
def test_every_ims_system_attribute_but_name_and_description_is_refused(source: str) -> None:
    policy = POLICIES[source]()
    names = sorted(set(IMS_SYSTEM_ATTRIBUTES) - MODIFIABLE_SYSTEM_ATTRIBUTES)

    refused = refused_names(policy, names)

    assert sorted(set(names) - set(refused)) == []
    assert all(len(spellings) == 2 * len(OPS) for spellings in refused.values()), refused


@pytest.mark.parametrize("source", POLICIES)
def test_every_name_glance_keeps_for_itself_is_refused(source: str) -> None:
    policy = POLICIES[source]()
    names = sorted(GLANCE_NAMES | {GLANCE_RESERVED_NAMESPACE, GLANCE_RESERVED_NAMESPACE + "_import_task"})

    assert sorted(set(names) - set(refused_names(policy, names))) == []


@pytest.mark.parametrize("source", POLICIES)
def test_nothing_the_reference_allows_is_refused(source: str) -> None:
    policy = POLICIES[source]()
    allowed = sorted(MODIFIABLE_SYSTEM_ATTRIBUTES) + CUSTOM_NAMES
    assert all(may_be_changed(name) and not name.startswith(IMS_NAMESPACE) for name in CUSTOM_NAMES)

    assert refused_names(policy, allowed) == {}


@pytest.mark.parametrize("source", POLICIES)
@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=12))
def test_no_customized_attribute_is_refused(source: str, name: str) -> None:
    policy = POLICIES[source]()
    if name != name.strip() or not may_be_changed(name) or name.startswith(IMS_NAMESPACE):
        return
    assert refused_names(policy, [name]) == {}


@pytest.mark.parametrize("source", POLICIES)
def test_the_policy_lists_nothing_the_oracle_cannot_explain(source: str) -> None:
    """Each forbidden name is an IMS system attribute or one Glance keeps; the prefixes
    are IMS's namespace and Glance's; only name and __description are allowed."""
    policy = POLICIES[source]()

    assert policy.allowed_system_attributes == MODIFIABLE_SYSTEM_ATTRIBUTES
    assert sorted(policy.forbidden_attributes - set(IMS_SYSTEM_ATTRIBUTES) - GLANCE_NAMES) == []
    assert sorted(policy.forbidden_attributes) == REFUSED_BY_REFERENCE
    assert set(policy.forbidden_prefixes) == {IMS_NAMESPACE, GLANCE_RESERVED_NAMESPACE}


# -- JSON pointers: RFC 6901, Glance's differences, the gateway -----------------------------

# Pointer -> (RFC 6901's tokens or None where it refuses, Glance's or None): each row is a
# difference the reference documents, or a case where the two agree.
READINGS: dict[str, tuple[tuple[str, ...] | None, tuple[str, ...] | None]] = {
    "/name": (("name",), ("name",)),
    "/a~1b": (("a/b",), ("a/b",)),
    "/a~0b": (("a~b",), ("a~b",)),
    "/~01": (("~1",), ("~1",)),  # ~1 first, then ~0: never "/"
    "/~10": (("/0",), ("/0",)),
    "/~0~1": (("~/",), ("~/",)),
    "/": (("",), ("",)),
    "/locations/-": (("locations", "-"), ("locations", "-")),
    "/a~": (None, None),
    "/a~2": (None, None),
    "noslash": (None, None),
    # Glance refuses what the RFC reads:
    "": ((), None),
    "/a//b": (("a", "", "b"), None),
    "/a/ /b": (("a", " ", "b"), None),
    "/a/": (("a", ""), None),
    "///a": (("", "", "a"), None),
    "/ / ": ((" ", " "), None),
    # Glance drops every leading "/":
    "//a": (("", "a"), ("a",)),
    # Glance strips Unicode whitespace around each token:
    "/ name ": ((" name ",), ("name",)),
    "/\u00a0protected": (("\u00a0protected",), ("protected",)),
    "/ a~1b ": ((" a/b ",), ("a/b",)),
    "/\u3000~01\u2003": (("\u3000~1\u2003",), ("~1",)),
    "/\t__os~1type\n": (("\t__os/type\n",), ("__os/type",)),
    "/a b": (("a b",), ("a b",)),
    "/\u200bid": (("\u200bid",), ("\u200bid",)),  # not whitespace to str.strip
}


@pytest.mark.parametrize("pointer", READINGS, ids=repr)
def test_the_readings_disagree_only_where_documented(pointer: str) -> None:
    rfc, glance = READINGS[pointer]

    assert reading(rfc6901_tokens, pointer) == rfc
    assert reading(glance_tokens, pointer) == glance


def reading(read: Callable[[str], tuple[str, ...]], pointer: str) -> tuple[str, ...] | None:
    try:
        return read(pointer)
    except PointerRefused:
        return None


def gateway_reading(pointer: str, op: str, content_type: str, attribute_checks: bool) -> tuple[str, ...] | str:
    """The tokens the parser decodes from a one-operation body, or the reason it refuses."""
    try:
        patch = parse(content_type, body(content_type, (op, pointer)), glance_attribute_checks=attribute_checks)
    except PatchError as exc:
        return str(exc.reason)
    (change,) = patch.changes
    return change.path


def expected_reading(pointer: str, op: str) -> tuple[str, ...] | str:
    """Glance's tokens, where Glance takes the pointer for this op (one attribute; two for
    add and remove of /locations/N)."""
    tokens = reading(glance_tokens, pointer)
    if tokens is None:
        return str(Reason.BAD_POINTER)
    return tokens if glance_depth_ok(op, tokens) else str(Reason.BAD_DEPTH)


@pytest.mark.parametrize("pointer", READINGS, ids=repr)
@pytest.mark.parametrize("content_type", SHAPES, ids=("v21", "v20"))
@pytest.mark.parametrize("attribute_checks", [True, False], ids=("glance-checks", "gateway-path"))
def test_the_gateway_reads_each_documented_pointer_as_glance(pointer: str, content_type: str, attribute_checks: bool) -> None:
    for op in OPS:
        assert gateway_reading(pointer, op, content_type, attribute_checks) == expected_reading(pointer, op), op


# Names that avoid Glance's read-only and reserved ones, so that both parse paths agree.
TOKEN_CHARS = st.sampled_from(["a", "b", "_", "~", "/", "0", "1", "-", ".", " ", "é", "名"])
PADDING = st.sampled_from(["", "", "", " ", "\t", "\u00a0", "\u3000", "\u2028", "\x1f", "\u200b", *WHITESPACE])


@st.composite
def pointers(draw: st.DrawFn) -> tuple[str, tuple[str, ...], bool]:
    """A pointer built from its tokens by RFC 6901's encoding, perhaps padded with
    whitespace or led by an extra "/"; the tokens; whether it is in a form both read alike."""
    tokens = draw(st.lists(st.text(TOKEN_CHARS, min_size=1, max_size=6), min_size=1, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        tokens = ["locations", *tokens[:1]]
    padded = []
    for token in tokens:
        escaped = token.replace("~", "~0").replace("/", "~1")
        padded.append(draw(PADDING) + escaped + draw(PADDING))
    extra_slash = draw(st.integers(0, 9)) == 0
    pointer = "/" * (1 + extra_slash) + "/".join(padded)
    plain = not extra_slash and all(token == token.strip() != "" for token in tokens) and padded == [
        token.replace("~", "~0").replace("/", "~1") for token in tokens
    ]
    return pointer, tuple(tokens), plain


@settings(max_examples=400, deadline=None)
@given(generated=pointers(), op=st.sampled_from(OPS), content_type=st.sampled_from(SHAPES), attribute_checks=st.booleans())
@example(generated=("/ a~1b ", ("a/b",), False), op="add", content_type=V21_MEDIA_TYPE, attribute_checks=False)
@example(generated=("/\u3000a~01\u3000", ("a~1",), False), op="replace", content_type=V20_MEDIA_TYPE, attribute_checks=True)
@example(generated=("/a~01", ("a~1",), True), op="replace", content_type=V21_MEDIA_TYPE, attribute_checks=False)
@example(generated=("/ ab", ("ab",), False), op="replace", content_type=V21_MEDIA_TYPE, attribute_checks=False)
def test_the_gateway_decodes_pointers_as_rfc_6901_with_glances_differences(
    generated: tuple[str, tuple[str, ...], bool], op: str, content_type: str, attribute_checks: bool
) -> None:
    pointer, tokens, plain = generated
    rfc = rfc6901_tokens(pointer)
    if plain:
        # Where nothing Glance treats differently is present, the readings agree exactly.
        assert rfc == tokens == glance_tokens(pointer)
    else:
        # Otherwise Glance's is the RFC's, leading empty tokens dropped and each stripped.
        stripped = tuple(token.strip() for token in rfc6901_tokens("/" + pointer.lstrip("/")))
        assert reading(glance_tokens, pointer) in (stripped, None)

    assert gateway_reading(pointer, op, content_type, attribute_checks) == expected_reading(pointer, op)


def test_a_lone_surrogate_in_a_pointer_is_the_gateways_own_refusal() -> None:
    # Glance reads "/na\ud800me" (RFC 6901 too); the gateway refuses it on purpose
    # (docs/compatibility.md): readers differ on the name such a string spells.
    pointer = "/na\ud800me"
    assert glance_tokens(pointer) == rfc6901_tokens(pointer) == ("na\ud800me",)

    for content_type in SHAPES:
        assert gateway_reading(pointer, "add", content_type, False) == str(Reason.BAD_POINTER)


# -- the gateway's whole check, against the oracle ------------------------------------------

CONFIGS: dict[str, Callable[[], Config]] = {
    "config/gateway.toml": lambda: Config.from_settings(config.load(SHIPPED_CONFIG, environ={})),
    "schema defaults": lambda: Config.from_settings(Settings()),
}
NAMES = st.sampled_from([*IMS_SYSTEM_ATTRIBUTES, *sorted(GLANCE_NAMES), "os_glance_x", "__x", *filter(None, CUSTOM_NAMES)])


def json_string(text: str, draw: st.DrawFn) -> str:
    """A JSON string literal, non-ASCII as UTF-8 and some characters as \\u escapes."""
    percent = draw(st.sampled_from([0, 0, 30, 100]))
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ((char.isalnum() or char in "_~ ") and draw(st.integers(0, 99)) < percent):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


@st.composite
def operations(draw: st.DrawFn, v21: bool) -> tuple[str, str, tuple[str, ...], bool]:
    """One operation object's JSON text, its op, the name it changes, and whether it is
    refused on its own: it names a member twice (Python's reader keeps the last), or
    Glance's depth rule refuses its path (/locations)."""
    op = draw(st.sampled_from(OPS))
    name = draw(NAMES)
    pointer = "/" * draw(st.sampled_from([1, 1, 1, 2])) + draw(PADDING) + encode(name)[1:] + draw(PADDING)
    path, value = json_string(pointer, draw), '"x"'
    members = [('"op"', f'"{op}"'), ('"path"', path)] if v21 else [(f'"{op}"', path)]
    members.append(('"value"', value))
    repeated = draw(st.integers(0, 5)) == 0
    if repeated:
        # An earlier, harmless spelling of one member, which Python's reader drops.
        key, _ = draw(st.sampled_from(members))
        decoy = {'"op"': '"replace"', '"value"': '"y"'}.get(key, '"/decoy"')
        members.insert(0, (key, decoy))
    text = "{" + ", ".join(f"{key}: {member}" for key, member in members) + "}"
    path_tokens = glance_tokens(pointer)
    return text, op, path_tokens, repeated or not glance_depth_ok(op, path_tokens)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[str, tuple[str, ...], bool]]]:
    content_type = draw(st.sampled_from(SHAPES))
    items = draw(st.lists(operations(content_type == V21_MEDIA_TYPE), min_size=1, max_size=3))
    text = "[" + ", ".join(item[0] for item in items) + "]"
    return content_type, text.encode(), [item[1:] for item in items]


def gateway_answer(cfg: Config, content_type: str, data: bytes) -> tuple[int, str] | list[tuple[str, tuple[str, ...]]]:
    """The gateway's refusal (status, code), or the changes it lets through."""
    request = SimpleNamespace(headers={"Content-Type": content_type})
    context = RequestContext(request_id="oracle", route=Route.IMAGE_PATCH, config=cfg)
    try:
        patch = parse_and_check(request, context, data)  # type: ignore[arg-type]
    except errors.GatewayError as exc:
        return exc.status, exc.code
    return [(change.op, change.path) for change in patch.changes]


def oracle_answer(items: list[tuple[str, tuple[str, ...], bool]]) -> tuple[int, str] | list[tuple[str, tuple[str, ...]]]:
    """What the README's policy answers, read with the oracle's tokens: the first
    operation object refused on its own ends the body, refused unless a forbidden change
    came before it."""
    checked = []
    for op, path, refused in items:
        if refused:
            break
        checked.append((op, path))
    if any(gateway_refuses(path) for _, path in checked):
        return 400, errors.FORBIDDEN_ATTRIBUTE
    if len(checked) < len(items):
        return 400, errors.BAD_REQUEST
    return checked


@pytest.mark.parametrize("source", CONFIGS)
@settings(max_examples=300, deadline=None)
@given(generated=bodies())
@example(generated=(V21_MEDIA_TYPE, b'[{"op": "replace", "path": "/ \\u0069d", "value": "x"}]', [("replace", ("id",), False)]))
@example(generated=(V20_MEDIA_TYPE, b'[{"replace": "/visibility", "replace": "/name", "value": "x"}]', [("replace", ("name",), True)]))
@example(generated=(V20_MEDIA_TYPE, b'[{"add": "/team", "value": "x"}, {"replace": "/\\u00a0visibility", "value": "x"}]', [("add", ("team",), False), ("replace", ("visibility",), False)]))
@example(generated=(V21_MEDIA_TYPE, b'[{"op": "add", "path": "/ __os~1type\\u3000", "value": "x"}]', [("add", ("__os/type",), False)]))
@example(generated=(V21_MEDIA_TYPE, b'[{"op": "add", "path": "/a~01", "value": "x"}]', [("add", ("a~1",), False)]))
def test_the_gateway_refuses_exactly_what_the_oracle_refuses(
    source: str, generated: tuple[str, bytes, list[tuple[str, tuple[str, ...], bool]]]
) -> None:
    content_type, data, items = generated
    # The oracle's own reading of the body: Python's JSON reader, the last member winning.
    document = json.loads(data)
    assert [len(item) for item in document] == [3 if content_type == V21_MEDIA_TYPE else 2] * len(items)

    assert gateway_answer(CONFIGS[source](), content_type, data) == oracle_answer(items)
