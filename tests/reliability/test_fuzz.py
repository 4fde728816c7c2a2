"""100,000+ generated PATCH requests through the running gateway.

Bodies come from hypothesis (structure: both shapes, every attribute class, escapes,
padding, duplicate members, odd values), from the corpus of nasty bodies in ``corpus/``,
and from a seeded byte mutator over both. They go over a few keep-alive connections to a
gateway process in front of a recording upstream. The request around each body is varied
too: the method, the query (``_method`` spellings), Accept (Glance's version negotiation)
and routing headers (SCRIPT_NAME, names with "_"). Asserted: the gateway never answers 5xx
and answers every refusal in the IMS shape; the upstream receives a PATCH exactly when the
client got the upstream's 200; no forwarded body changes a forbidden attribute, read
independently of the gateway's parser with last-wins and first-wins duplicate handling;
the process stays up, logs no traceback, and its RSS does not grow once warm.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from testing.faulty_upstream import FaultyUpstream, Received
from tests.oracle import GLANCE_OBJECT_NAMES, GLANCE_READ_ONLY, IMS_SYSTEM_ATTRIBUTES, may_be_changed
from tests.reliability.conftest import GatewayProcess, RawConnection, Response

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TOTAL = 100_000
CONNECTIONS = 8
HYPOTHESIS_EXAMPLES = 600
WARM = TOTAL // 5
# RSS once warm may grow by at most this much by the end: allocator noise, not a leak.
RSS_DRIFT = 0.10
SEED = 20240507
CORPUS = Path(__file__).parent / "corpus"

ALLOWED = ["name", "__description", "team", "colour", "x", "Status", "NAME", "ñame", "a/b", "a~b"]
FORBIDDEN = [
    *(name for name in IMS_SYSTEM_ATTRIBUTES if name not in ("name", "__description")),
    *sorted(GLANCE_READ_ONLY | GLANCE_OBJECT_NAMES), "locations", "os_hidden", "os_glance", "os_glance_import_task",
]
PADDING = ["", " ", "\t", "\n", "\u3000", "\u00a0", "\u2003", "\u200b", "\x1f", "\u0085"]
OPS = ["add", "remove", "replace", "test", "move", "REPLACE", "Replace", "", None, 1, ["replace"]]
CONTENT_TYPES = [V21_MEDIA_TYPE, V20_MEDIA_TYPE, V21_MEDIA_TYPE + "; charset=UTF-8", V20_MEDIA_TYPE + ";charset=utf-8"]
TARGETS = [
    "/v2/images/{id}", "/v2/images/{id}", "/v2/images/{id}", "/v2/images/{id}/", "//v2/images/{id}",
    "/V2/IMAGES/{id}", "/v2.1/images/{id}", "/v2/%69mages/{id}", "/v2/./images/{id}", "/v2/images/{id}?x=1",
    "/images/{id}", "/foo/v2/images/{id}", "/v2/images/{id}%0A", "/v2/images/{id}/file", "/v2/images",
]  # fmt: skip
# What goes around a body: another method, a query, Accept, routing headers.
METHODS = ["PATCH"] * 12 + ["POST", "PUT", "GET", "DELETE"]
QUERIES = ["", "", "", "", "?_method=PATCH", "?_method=patch", "?x=_method&%5Fmethod=PATCH", "?a=1;_method=PATCH", "?x=1", "?_METHOD=DELETE"]
EXTRA_HEADERS = [
    "", "", "", "", "Accept: application/vnd.openstack.images-v2\r\n", "Accept: application/vnd.openstack.images-v2.1, \r\n",
    "SCRIPT_NAME: /foo\r\n", "Script-Name: /foo\r\n", f"Content_Type: {V20_MEDIA_TYPE}\r\n", "X-Forwarded-Prefix: /foo\r\n",
    "X-HTTP-Method-Override: PATCH\r\n", "Connection: Content-Type\r\n",
]  # fmt: skip


# -- bodies with structure: hypothesis ---------------------------------------------------


def _string(text: str, escapes: random.Random) -> str:
    """A JSON string literal, some characters written as \\u escapes."""
    out = ['"']
    for char in json.dumps(text, ensure_ascii=escapes.random() < 0.5)[1:-1]:
        out.append(f"\\u{ord(char):04x}" if char.isalnum() and escapes.random() < 0.15 else char)
    out.append('"')
    return "".join(out)


def _literal(value: Any, escapes: random.Random) -> str:
    if isinstance(value, str):
        return _string(value, escapes)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item, escapes) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(k, escapes)}: {_literal(v, escapes)}" for k, v in value.items()) + "}"
    if isinstance(value, RawLiteral):
        return value.text
    return json.dumps(value)


class RawLiteral:
    def __init__(self, text: str) -> None:
        self.text = text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.sampled_from([RawLiteral("NaN"), RawLiteral("-Infinity"), RawLiteral("1e999"), RawLiteral("-0"), RawLiteral("9" * 30)]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)


@st.composite
def pointers(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from([None, 5, ["/name"], {"p": "/name"}, True]))
    tokens = [draw(st.sampled_from(ALLOWED) | st.sampled_from(FORBIDDEN) | st.text(max_size=6))]
    tokens += draw(st.lists(st.sampled_from(["-", "0", "x", ""]), max_size=1))
    spelled = []
    for token in tokens:
        escaped = token.replace("~", "~0").replace("/", "~1")
        spelled.append(draw(st.sampled_from(PADDING)) + escaped + draw(st.sampled_from(PADDING)))
    return draw(st.sampled_from(["/", "", "//"])) + "/".join(spelled) + draw(st.sampled_from(["", "", "", "/"]))


@st.composite
def operations(draw: st.DrawFn, shape: str) -> list[tuple[str, Any]]:
    """An operation object as (member, value) pairs: order, duplicates and extras kept."""
    op = draw(st.sampled_from(OPS))
    pointer = draw(pointers())
    pairs: list[tuple[str, Any]] = []
    if shape == "v2.1":
        pairs += [("op", op), ("path", pointer)]
    else:
        pairs.append((op if isinstance(op, str) else "replace", pointer))
    if draw(st.booleans()) or op != "remove":
        pairs.append(("value", draw(json_values)))
    for _ in range(draw(st.integers(0, 2))):
        pairs.append((draw(st.sampled_from(["op", "path", "value", "add", "remove", "replace", "from", "x"])), draw(pointers())))
    return draw(st.permutations(pairs))


@st.composite
def patch_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    shape = draw(st.sampled_from(["v2.0", "v2.1"]))
    content_type = V20_MEDIA_TYPE if shape == "v2.0" else V21_MEDIA_TYPE
    if draw(st.integers(0, 9)) == 0:
        content_type = draw(st.sampled_from(CONTENT_TYPES))
    escapes = random.Random(draw(st.integers(0, 2**32)))
    items = draw(st.lists(operations(shape), max_size=4))
    text = "[" + ", ".join("{" + ", ".join(f"{_string(k, escapes)}: {_literal(v, escapes)}" for k, v in item) + "}" for item in items) + "]"
    return content_type, text.encode("utf-8", "surrogatepass")


def harvest(count: int) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(patch_bodies())
    def collect(body: tuple[str, bytes]) -> None:
        found.append(body)

    collect()
    return found


# -- bodies without structure: a seeded mutator ---------------------------------------------

TOKENS = [
    b'"__os_type"', b"\\u005f", b"~0", b"~1", b"/", b'"path"', b'"op"', b'"value"', b'"add"', b'"remove"',
    b'"replace"', b"NaN", b"1e999", b"[", b"]", b"{", b"}", b",", b":", b'"', b"\\", b"\x00", b"\xff", b"\xc0\xaf",
    b" ", "\u3000".encode(), b'"/status"', b'"/ id "', b"os_glance", b"null", b"true", b"-0", b"9" * 40, b"\\ud800",
]  # fmt: skip
NAME_SPOT = re.compile(rb'"/[^"/]*"')


def mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        position = rng.randint(0, len(data))
        if choice < 0.3:
            spots = NAME_SPOT.findall(data)
            name = rng.choice(FORBIDDEN).replace("_", rng.choice(["_", "\\u005f"]), 1)
            pad = rng.choice(["", " ", "\\u3000", "\\t"])
            data = data.replace(rng.choice(spots), f'"/{pad}{name}{pad}"'.encode(), 1) if spots else data
        elif choice < 0.5:
            data = data[:position] + rng.choice(TOKENS) + data[position:]
        elif choice < 0.65 and data:
            data = data[:position] + bytes([rng.randrange(256)]) + data[position + 1 :]
        elif choice < 0.75:
            data = data[:position] + data[position + rng.randint(1, 8) :]
        elif choice < 0.85:
            end = min(len(data), position + rng.randint(1, 64))
            data = data[:end] + data[position:end] + data[end:]
        else:
            other = rng.choice(seeds)
            cut = rng.randint(0, len(other))
            data = data[:position] + other[cut:]
    return data


def requests(seeds: list[tuple[str, bytes]], corpus: list[tuple[str, bytes]]) -> Iterator[tuple[bytes, str]]:
    """(request bytes, what was sent as the body's media type), endlessly, deterministic."""
    rng = random.Random(SEED)
    pool = seeds + corpus
    raw = [body for _, body in pool]
    serial = 0
    while True:
        serial += 1
        content_type, body = rng.choice(pool)
        if rng.random() < 0.5:
            body = mutate(rng, body, raw)
        if rng.random() < 0.1:
            content_type = rng.choice(CONTENT_TYPES)
        target = rng.choice(TARGETS).format(id=f"img-{serial % 97}") + (rng.choice(QUERIES) if rng.random() < 0.2 else "")
        method = rng.choice(METHODS)
        extra = rng.choice(EXTRA_HEADERS) if rng.random() < 0.2 else ""
        head = f"{method} {target} HTTP/1.1\r\nHost: gw\r\nX-Auth-Token: tok-fuzz\r\n{extra}Content-Type: {content_type}\r\n"
        if rng.random() < 0.1:
            pieces = [body[i : i + 37] for i in range(0, len(body), 37)]
            framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
            yield (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed, content_type
        else:
            yield (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body, content_type


def corpus_bodies() -> list[tuple[str, bytes]]:
    bodies = []
    for path in sorted(CORPUS.iterdir()):
        kind = path.name.split("-", 1)[0]
        content_type = {"v20": V20_MEDIA_TYPE, "v21": V21_MEDIA_TYPE}.get(kind, V21_MEDIA_TYPE)
        bodies.append((content_type, path.read_bytes()))
    return bodies


# -- the independent oracle ------------------------------------------------------------------

def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members: dict[str, Any] = {}
    for key, value in pairs:
        members.setdefault(key, value)
    return members


def _forbid_constants(literal: str) -> Any:
    raise ValueError(f"{literal} forwarded")


def forbidden_changes(seen: Received) -> list[str]:
    """What a forwarded PATCH would change that the default policy forbids, read as IMS could."""
    problems = []
    if not seen.headers.get("content-type", "").startswith(V21_MEDIA_TYPE):
        problems.append(f"forwarded as {seen.headers.get('content-type')!r}")
    for hook in (None, _first_wins):
        try:
            document = json.loads(seen.body.decode("utf-8"), object_pairs_hook=hook, parse_constant=_forbid_constants)
        except (ValueError, RecursionError) as exc:
            return [f"forwarded a body that is not JSON: {exc}"]
        if not isinstance(document, list):
            return ["forwarded a body that is not a list"]
        for item in document:
            if not isinstance(item, dict) or item.get("op") not in ("add", "remove", "replace") or not isinstance(item.get("path"), str):
                problems.append(f"forwarded a malformed operation {item!r:.80}")
                continue
            pointer = item["path"]
            if not pointer.startswith("/") or any(len(tokens) != 1 or not may_be_changed(tokens[0]) for tokens in readings(pointer)):
                problems.append(f"forwarded {item['op']} {pointer!r}")
    return problems


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def readings(pointer: str) -> list[tuple[str, ...]]:
    """The attribute paths a pointer may name: Glance's reading (leading slashes dropped,
    tokens stripped), and the first token as RFC 6901 reads it, stripped or not."""
    glance = tuple(_unescape(token).strip() for token in pointer.lstrip("/").split("/"))
    first = _unescape(pointer[1:].split("/", maxsplit=1)[0])
    return [glance, (first,), (first.strip(),)]


# -- the run ---------------------------------------------------------------------------------


@pytest.fixture
def gateway(faulty_upstream: FaultyUpstream, tmp_path: Path) -> Iterator[GatewayProcess]:
    # The access log is off: 100,000 lines would measure the logger, not the gateway.
    process = GatewayProcess(tmp_path, faulty_upstream.url, {"logging": {"access_log": False}})
    yield process
    process.stop()


async def test_100k_generated_patches_never_get_a_5xx_or_through_the_policy(
    gateway: GatewayProcess, upstream: FaultyUpstream
) -> None:
    seeds = harvest(HYPOTHESIS_EXAMPLES)
    generated = requests(seeds, corpus_bodies())
    statuses: Counter[int] = Counter()
    bad_answers: list[tuple[bytes, Response]] = []
    rss: dict[str, int] = {}
    sent = 0
    started = time.perf_counter()

    async def client() -> None:
        nonlocal sent
        connection = RawConnection(gateway.url)
        try:
            while sent < TOTAL:
                data, _ = next(generated)
                sent += 1
                if sent == WARM:
                    rss["warm"] = gateway.rss_bytes()
                response = await connection.request(data)
                statuses[response.status] += 1
                if response.status >= 500 or (response.status != 200 and b'"code": "IMSGW.' not in response.body):
                    bad_answers.append((data[:300], response))
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    rss["end"] = gateway.rss_bytes()
    patches = [seen for seen in upstream.requests if seen.method == "PATCH"]
    forwarded_problems = [(seen.body[:200], problems) for seen in patches if (problems := forbidden_changes(seen))]
    print(
        f"\nfuzz: {sent} PATCH requests in {elapsed:.1f} s ({sent / elapsed:.0f}/s) over {CONNECTIONS} connections; "
        f"{len(seeds)} hypothesis bodies + {len(corpus_bodies())} corpus bodies, half mutated; "
        f"statuses {dict(sorted(statuses.items()))}; {len(patches)} forwarded; "
        f"RSS warm {rss['warm'] / 2**20:.1f} MiB, end {rss['end'] / 2**20:.1f} MiB"
    )
    assert sent >= TOTAL
    assert bad_answers == []
    assert forwarded_problems == []
    assert len(patches) == statuses[200]
    # Only plain image PATCHes reached IMS: no override, no routing header, no other method.
    # (and the v2.0 add check's reads, of the canonical image URL alone).
    assert {seen.method for seen in upstream.requests} <= {"PATCH", "GET"}
    assert not [seen.path for seen in upstream.requests if seen.method == "GET" and not re.fullmatch(r"/v2/images/img-\d+", seen.path)]
    assert not [seen.path for seen in patches if "_method" in seen.path.lower() or "\n" in seen.path]
    assert not [name for seen in patches for name in seen.headers if "_" in name or name in ("script-name", "x-forwarded-prefix")]
    assert gateway.process.poll() is None
    assert "Traceback" not in gateway.log()
    assert rss["end"] <= rss["warm"] * (1 + RSS_DRIFT)
