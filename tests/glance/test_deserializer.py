"""The gateway's parser against Glance's own RequestDeserializer, on generated bodies.

A few thousand bodies, generated from a fixed seed (printed), go in one batch to
``glance.api.v2.images.RequestDeserializer().update(request)`` in the Glance virtualenv
(testing/glance_deserializer.py) and to ``gateway.patch.parser.parse``. Both must accept
and refuse the same bodies with the same status and, where they accept, decode the same
changes (op, path tokens, value); where they refuse, the same changes read before the
failing operation object. The differences are the documented ones (docs/compatibility.md,
"Where the gateway deliberately differs from Glance"): a non-string ``path`` or op member
(Glance 500, gateway 400), a ``path`` with a lone surrogate (Glance's deserializer reads
it, the gateway refuses it) and, with ``reject_duplicate_members``, a repeated member.

Glance's value schema is left out of the comparison (``attributes`` mode: Glance's
read-only and reserved checks, any value): IMS validates values itself (the same table,
"value types"); ``full`` mode is checked to differ from it by schema errors only.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from typing import Any

import pytest

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE, PatchError, parse
from gateway.vocabulary import Reason
from testing.glance import GlanceEnv, deserialize
from tests.oracle import GLANCE_ONLY, GLANCE_READ_ONLY, GLANCE_RESERVED, IMS_SYSTEM_ATTRIBUTES, WHITESPACE

pytestmark = [pytest.mark.glance, pytest.mark.e2e]

SEED = 18_2026
BODIES = 4000
SCHEMA = "Provided object does not match schema 'image'"

NAMES = [
    *IMS_SYSTEM_ATTRIBUTES,
    *sorted(GLANCE_READ_ONLY | GLANCE_RESERVED | GLANCE_ONLY),
    "os_glance_import_task", "os_glance_x", "__x", "team", "a b", "a/b", "a~b", "~1", "~0", "/", "~",
    "ñame", "名字", "Visibility", "_description", "locations", "-", "0",
]  # fmt: skip
# Inside a token: an escape split or joined by whitespace, or a bad one.
ODD_TOKENS = ["~ 1", "~1 ", " ~0", "~0~1", "~10", "~01", "~", "~2", "a~", "~~", "a ~1b", "__os~1type", "\u200b", "na\ud800me"]
ODD_OPS: list[Any] = ["ADD", "move", "copy", "test", "", " add", "add ", "remove\u00a0", 5, None, ["add"], True]
ODD_POINTERS: list[Any] = ["", "name", " /name", "/", "//", "/ /", "/a/", "/a//b", "/a/ /b", "///x", 7, None, ["/x"], {"a": 1}]
VALUES: list[Any] = ["x", "", 0, 1.5, None, True, [], ["a", 1], {"k": "v"}, {"a": {"b": [1]}}, "é"]
ODD_CONTENT_TYPES: list[str | None] = [
    None, "application/json", "Application/openstack-images-v2.1-json-patch",
    "application/openstack-images-v2.1-json-patch ", "application/openstack-images-v2.0-json-patch; charset=utf-8",
    "application/openstack-images-v2.1-json-patch;x=y", " application/openstack-images-v2.1-json-patch",
]  # fmt: skip
# (b"" is left out: webob reads it as no body, the gateway as an empty chunked one.)
NOT_A_LIST = [b"{}", b'{"op": "add"}', b'"x"', b"1", b"null", b"[", b"[1,]", b"[] x", b"\xff", b"[NaN"]


def escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def json_string(text: str, rng: random.Random) -> str:
    """A JSON string literal, sometimes with \\u escapes for whitespace and letters."""
    escape_some = rng.random() < 0.3
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or 0xD800 <= ord(char) < 0xE000 or (escape_some and (char.isspace() or char.isalpha() or char == "~") and rng.random() < 0.5):
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


class Generator:
    """Bodies from one seed; every Unicode whitespace character used in turn."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.spaces = 0

    def space(self) -> str:
        roll = self.rng.random()
        if roll < 0.5:
            return ""
        if roll < 0.6:
            return " "  # the common case, and the one a fast path may take for a name character
        self.spaces += 1
        return WHITESPACE[self.spaces % len(WHITESPACE)] * self.rng.choice([1, 1, 2])

    def token(self) -> str:
        rng = self.rng
        if rng.random() < 0.15:
            raw = rng.choice(ODD_TOKENS)
        else:
            raw = escape(rng.choice(NAMES))
            if rng.random() < 0.1:
                # whitespace inside the token, next to an escape or not
                at = rng.randrange(len(raw) + 1)
                raw = raw[:at] + (self.space() or " ") + raw[at:]
        return self.space() + raw + self.space()

    def pointer(self) -> Any:
        rng = self.rng
        if rng.random() < 0.06:
            return rng.choice(ODD_POINTERS)
        tokens = [self.token()]
        if rng.random() < 0.15:
            tokens = [self.space() + "locations" + self.space(), rng.choice(["0", "-", " 1 ", "x", "~1"])]
        if rng.random() < 0.05:
            tokens.append(self.token())
        return "/" * rng.choice([1, 1, 1, 1, 2]) + "/".join(tokens)

    def member(self, value: Any) -> str:
        return json_string(value, self.rng) if isinstance(value, str) else json.dumps(value)

    def operation(self, v21: bool) -> tuple[str, bool]:
        """One operation object's JSON text; whether it names a member twice."""
        rng = self.rng
        op = rng.choice(["add", "remove", "replace"]) if rng.random() > 0.08 else rng.choice(ODD_OPS)
        members: list[tuple[str, str]] = []
        pointer = self.pointer()
        if v21:
            if rng.random() > 0.03:
                members.append(('"op"', self.member(op)))
            if rng.random() > 0.03:
                members.append(('"path"', self.member(pointer)))
        elif isinstance(op, str) and rng.random() > 0.03:
            members.append((self.member(op), self.member(pointer)))
            if rng.random() < 0.04:
                members.append((self.member(rng.choice(["add", "remove", "replace"])), self.member(pointer)))
        if rng.random() > (0.7 if op == "remove" else 0.05):
            members.append(('"value"', json.dumps(rng.choice(VALUES))))
        if rng.random() < 0.03:
            members.append(('"from"', '"/x"'))
        if members and rng.random() < 0.08:
            key, _ = rng.choice(members)
            members.insert(rng.randrange(len(members) + 1), (key, self.member(rng.choice(["replace", "/decoy", "y"]))))
        keys = [json.loads(key) for key, _ in members]
        return "{" + ", ".join(f"{key}: {value}" for key, value in members) + "}", len(set(keys)) < len(keys)

    def request(self) -> tuple[str | None, bytes | None, bool]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.03:
            content_type = rng.choice(ODD_CONTENT_TYPES)
        else:
            content_type = rng.choice([V21_MEDIA_TYPE, V20_MEDIA_TYPE])
        if rng.random() < 0.01:
            return content_type, None, False
        if rng.random() < 0.03:
            return content_type, rng.choice(NOT_A_LIST), False
        v21 = content_type is not None and "2.1" in content_type
        items = [self.operation(v21) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        if rng.random() < 0.02:
            items.append((rng.choice(["1", '"x"', "null", "[]"]), False))
        text = "[" + ", ".join(text for text, _ in items) + "]"
        return content_type, text.encode(), any(repeated for _, repeated in items)


def change_list(changes: Any) -> list[list[Any]]:
    out = []
    for change in changes:
        entry: list[Any] = [change.op, list(change.path)]
        if change.op != "remove":
            entry.append(change.value)
        out.append(entry)
    return json.loads(json.dumps(out))


def gateway_outcome(content_type: str | None, body: bytes | None, **options: Any) -> dict[str, Any]:
    try:
        patch = parse(content_type, body, **options)
    except PatchError as exc:
        return {"status": exc.status, "changes": change_list(exc.parsed), "reason": str(exc.reason), "message": exc.message}
    return {"status": 200, "changes": change_list(patch.changes), "reason": None, "message": None}


def expected(glance: dict[str, Any]) -> dict[str, Any]:
    """Glance's outcome with the documented difference applied: its 500 is our 400."""
    return {"status": 400 if glance["status"] == 500 else glance["status"], "changes": glance["changes"]}


def surrogate_refusal(ours: dict[str, Any], glance: dict[str, Any]) -> bool:
    """The documented difference: a pointer with a lone surrogate, which Glance's
    deserializer reads (storing the name then fails), is refused by the gateway; the
    changes before it are Glance's."""
    return (
        ours["reason"] == Reason.BAD_POINTER
        and "unpaired surrogate" in ours["message"]
        and glance["changes"][: len(ours["changes"])] == ours["changes"]
    )


def same_message(ours: dict[str, Any], glance: dict[str, Any]) -> bool:
    """Glance's message, but for its 500s (documented) and its 415, whose body is webob's
    explanation followed by the detail the deserializer raised with."""
    if glance["status"] == 500:
        return True
    if glance["message"] is None:
        return ours["message"] is None
    # A lone surrogate cannot be sent as UTF-8: the gateway spells it out (\\ud800).
    message = glance["message"].encode("utf-8", "backslashreplace").decode("utf-8")
    if glance["status"] == 415:
        return bool(ours["message"].endswith(message))
    return bool(ours["message"] == message)


@pytest.fixture(scope="module")
def generated(glance_env: GlanceEnv) -> list[tuple[str | None, bytes | None, bool, dict[str, Any]]]:
    print(f"\ngenerating {BODIES} PATCH bodies with seed {SEED}")
    generator = Generator(SEED)
    requests = [generator.request() for _ in range(BODIES)]
    started = time.monotonic()
    answers = deserialize(glance_env, [(content_type, body) for content_type, body, _ in requests])
    print(f"Glance's RequestDeserializer read them in {time.monotonic() - started:.1f} s")
    return [(*request, answer) for request, answer in zip(requests, answers, strict=True)]


def describe(content_type: str | None, body: bytes | None, ours: dict[str, Any], glance: dict[str, Any]) -> str:
    return f"{content_type!r} {body!r}\n  gateway: {ours}\n  Glance:  {glance}"


def test_the_bodies_cover_what_the_brief_names(generated: list[tuple[Any, ...]]) -> None:
    """The generator reaches every outcome and every whitespace character (a generator
    that stopped producing them would make the comparisons below vacuous)."""
    statuses = Counter(glance["attributes"]["status"] for *_, glance in generated)
    assert {200, 400, 403, 415, 500} <= set(statuses), statuses
    assert statuses[200] > BODIES // 5 and statuses[403] > BODIES // 20, statuses
    bodies = b"".join(body or b"" for _, body, _, _ in generated).decode("utf-8", "replace")
    decoded = "".join(json.dumps(glance["attributes"]["changes"], ensure_ascii=False) for *_, glance in generated)
    missing = [char for char in WHITESPACE if char not in bodies and f"\\u{ord(char):04x}" not in bodies]
    assert missing == []
    assert "~1" in bodies and "~0" in bodies and "__os/type" in decoded
    assert sum(repeated for _, _, repeated, _ in generated) > BODIES // 20
    surrogates = [
        body for content_type, body, _, glance in generated if surrogate_refusal(gateway_outcome(content_type, body), glance["attributes"])
    ]
    assert len(surrogates) > 10


@pytest.mark.parametrize("mode", ["attributes", "structural"])
def test_the_gateway_reads_every_body_as_glance(generated: list[tuple[Any, ...]], mode: str) -> None:
    """Same status, changes and message. ``attributes``: parse() with Glance's 403
    checks; ``structural``: without them (the parse the gateway's own policy runs on,
    fast path included)."""
    differences = []
    for content_type, body, _, glance in generated:
        ours = gateway_outcome(content_type, body, glance_attribute_checks=mode == "attributes")
        if surrogate_refusal(ours, glance[mode]):
            continue
        if {"status": ours["status"], "changes": ours["changes"]} != expected(glance[mode]) or not same_message(
            ours, glance[mode]
        ):
            differences.append(describe(content_type, body, ours, glance[mode]))
    assert differences == [], f"{len(differences)} of {len(generated)} differ, seed {SEED}:\n" + "\n".join(differences[:15])


def test_glances_500s_are_the_documented_non_string_members(generated: list[tuple[Any, ...]]) -> None:
    for content_type, body, _, glance in generated:
        if glance["attributes"]["status"] == 500:
            ours = gateway_outcome(content_type, body)
            assert (ours["status"], ours["reason"]) in {(400, Reason.BAD_POINTER), (400, Reason.BAD_OP)}, describe(
                content_type, body, ours, glance["attributes"]
            )
            assert glance["attributes"]["message"].startswith(("AttributeError", "TypeError")), glance


def test_a_repeated_member_is_the_only_other_refusal(generated: list[tuple[Any, ...]]) -> None:
    """With ``reject_duplicate_members`` (what the gateway runs), the answer is Glance's
    but for bodies with a repeated member, which are refused (documented)."""
    for content_type, body, repeated, glance in generated:
        ours = gateway_outcome(content_type, body, reject_duplicate_members=True)
        if ours["reason"] == Reason.DUPLICATE_MEMBER:
            assert repeated, describe(content_type, body, ours, glance["attributes"])
        elif not surrogate_refusal(ours, glance["attributes"]):
            assert {"status": ours["status"], "changes": ours["changes"]} == expected(glance["attributes"]), describe(
                content_type, body, ours, glance["attributes"]
            )
        if repeated and glance["attributes"]["status"] == 200:
            assert ours["status"] == 400, describe(content_type, body, ours, glance["attributes"])


def test_glances_full_check_differs_only_by_its_value_schema(generated: list[tuple[Any, ...]]) -> None:
    differing = [glance for *_, glance in generated if glance["full"] != glance["attributes"]]
    assert len(differing) > BODIES // 20  # the schema is in play, and nothing else differs
    for glance in differing:
        assert glance["full"]["status"] == 400 and glance["full"]["message"].startswith(SCHEMA), glance
