"""Huawei Cloud AK/SK request signatures: read, verify and make them.

Reproduces huaweicloudsdkcore 3.1.219 ``signer/signer.py`` (``Signer``, ``SM3Signer``,
``DerivationAKSKSigner``) byte for byte (tests/edge/test_signing.py checks it against the
SDK's own signers), and verifies a request the way Huawei Cloud's API Gateway is
documented to: the canonical request rebuilt from the client's own SignedHeaders list,
X-Sdk-Date within 15 minutes of the server clock. Pure: no aiohttp, standard library only
(the SDK would bring 13 packages and a synchronous HTTP client for these 400 lines).

Inputs are what an HTTP server sees: the method, the raw path (without ``?query``), the
raw query string, the headers as ``(name, value)`` pairs and the body bytes (or
``UNSIGNED`` when the body is streamed and its hash comes from X-Sdk-Content-Sha256).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Final
from urllib.parse import quote, unquote

HMAC_SHA256 = "SDK-HMAC-SHA256"
HMAC_SM3 = "SDK-HMAC-SM3"
V11_HMAC_SHA256 = "V11-HMAC-SHA256"
# Asymmetric signers of the SDK: recognised, not verifiable here (random-k ECDSA/SM2).
ECDSA_P256_SHA256 = "SDK-ECDSA-P256-SHA256"
SM2_SM3 = "SDK-SM2-SM3"

DATE_FORMAT = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_CLOCK_SKEW = timedelta(minutes=15)
DEFAULT_REQUIRED_SIGNED_HEADERS: tuple[str, ...] = ("x-sdk-date",)


def _sm3_available() -> bool:
    try:
        hashlib.new("sm3", b"")
    except ValueError:
        return False
    return True


SM3_AVAILABLE = _sm3_available()


@dataclass(frozen=True)
class Algorithm:
    name: str
    hash_name: str
    content_header: str  # lower-case name of the header that may carry the body hash
    derived: bool = False

    def hexdigest(self, data: bytes) -> str:
        return hashlib.new(self.hash_name, data).hexdigest()

    def hmac_hex(self, key: bytes, data: bytes) -> str:
        return hmac.new(key, data, self.hash_name).hexdigest()


ALGORITHMS: dict[str, Algorithm] = {
    HMAC_SHA256: Algorithm(HMAC_SHA256, "sha256", "x-sdk-content-sha256"),
    HMAC_SM3: Algorithm(HMAC_SM3, "sm3", "x-sdk-content-sm3"),
    V11_HMAC_SHA256: Algorithm(V11_HMAC_SHA256, "sha256", "x-sdk-content-sha256", derived=True),
}
KNOWN_UNSUPPORTED = frozenset({ECDSA_P256_SHA256, SM2_SM3})

# The header names the SDK itself writes (it keeps the caller's spelling if already present).
_CONTENT_HEADER_SPELLING = {"x-sdk-content-sha256": "X-Sdk-Content-Sha256", "x-sdk-content-sm3": "X-Sdk-Content-Sm3"}


class _Unsigned(Enum):
    UNSIGNED = "UNSIGNED"

    def __repr__(self) -> str:
        return "UNSIGNED"


UNSIGNED: Final = _Unsigned.UNSIGNED
"""The body is not available (streamed): its hash is the content header's value."""
Payload = bytes | _Unsigned
Headers = Sequence[tuple[str, str]]
Query = str | Sequence[tuple[str, object]]


class SigningError(ValueError):
    """The request cannot be canonicalised (a signed header missing or repeated, ...)."""


class MissingHeader(SigningError):
    pass


class DuplicateHeader(SigningError):
    pass


class MalformedAuthorization(ValueError):
    pass


# ---------------------------------------------------------------- canonical request parts


def encode(s: str) -> str:
    """RFC 3986 percent-encoding of UTF-8: only A-Z a-z 0-9 - _ . ~ stay as they are."""
    return quote(s, safe="~")


def canonical_uri(raw_path: str) -> str:
    """Percent-decode, split on '/', re-encode each segment, always end with '/'.

    '%2F' therefore becomes a separator; '.' and '..' are kept; '+' is a literal plus.
    """
    path = "/".join(encode(segment) for segment in unquote(raw_path).split("/"))
    return path if path.endswith("/") else path + "/"


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Split a raw query string into decoded pairs: '&'-separated, first '=' splits,
    a key without '=' has the value '', empty keys are dropped, '+' is not a space."""
    pairs = []
    for item in raw_query.split("&"):
        key, _, value = item.partition("=")
        if key:
            pairs.append((unquote(key), unquote(value)))
    return pairs


def canonical_query(query: Query) -> str:
    """Sort the (key, value) pairs, percent-encode both, join as k=v with '&'.

    A raw string is parsed with ``parse_query`` first. Typed pairs are handled like the
    SDK: sorted before ``str()``, a bool scalar becomes 'true'/'false', a list value is
    sorted and repeated as k=v1&k=v2."""
    pairs = parse_query(query) if isinstance(query, str) else list(query)
    items = []
    for key, value in sorted(pairs):
        if isinstance(value, list):
            items += [f"{encode(str(key))}={encode(str(v))}" for v in sorted(value)]
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            items.append(f"{encode(str(key))}={encode(text)}")
    return "&".join(items)


def header_values(headers: Headers, name: str) -> list[str]:
    lower = name.lower()
    return [value for key, value in headers if key.lower() == lower]


def header_value(headers: Headers, name: str) -> str | None:
    values = header_values(headers, name)
    if len(values) > 1:
        raise DuplicateHeader(f"header {name!r} appears {len(values)} times")
    return values[0] if values else None


def canonical_headers(headers: Headers, signed_headers: Sequence[str]) -> str:
    lines = []
    for name in signed_headers:
        values = header_values(headers, name)
        if not values:
            raise MissingHeader(f"signed header {name!r} is missing")
        if len(values) > 1:
            raise DuplicateHeader(f"signed header {name!r} appears {len(values)} times")
        lines.append(f"{name}:{values[0].strip()}")
    return "\n".join(lines) + "\n"


def payload_hash(algorithm: Algorithm, headers: Headers, body: Payload) -> str:
    """The SDK's rule: empty body -> hash of b''; else the content header's value if any;
    else the hash of the body."""
    if isinstance(body, bytes) and not body:
        return algorithm.hexdigest(b"")
    declared = header_value(headers, algorithm.content_header)
    if declared and declared.strip():
        return declared.strip()
    if body is UNSIGNED:
        raise SigningError(f"body not given and no {algorithm.content_header} header")
    return algorithm.hexdigest(body)


def canonical_request(
    method: str,
    raw_path: str,
    query: Query,
    headers: Headers,
    signed_headers: Sequence[str],
    body: Payload,
    algorithm: str = HMAC_SHA256,
) -> str:
    alg = ALGORITHMS[algorithm]
    return "\n".join(
        (
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(query),
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash(alg, headers, body),
        )
    )


def string_to_sign(algorithm: str, sdk_date: str, canonical: str, scope: str | None = None) -> str:
    alg = ALGORITHMS[algorithm]
    digest = alg.hexdigest(_utf8(canonical))
    parts = [alg.name, sdk_date, scope or "", digest] if alg.derived else [alg.name, sdk_date, digest]
    return "\n".join(parts)


def derive_v11_key(access_key: str, secret_key: str, scope: str) -> str:
    """HKDF-SHA256(salt=AK, ikm=SK, info=scope, L=32) as lower-case hex; the hex text
    (not the raw bytes) is the HMAC key (huaweicloudsdkcore signer/hkdf.py)."""
    prk = hmac.new(_utf8(access_key), _utf8(secret_key), "sha256").digest()
    return hmac.new(prk, _utf8(scope) + b"\x01", "sha256").hexdigest()


def signature(algorithm: str, secret_key: str, to_sign: str, *, access_key: str = "", scope: str = "") -> str:
    alg = ALGORITHMS[algorithm]
    key = derive_v11_key(access_key, secret_key, scope) if alg.derived else secret_key
    return alg.hmac_hex(_utf8(key), _utf8(to_sign))


def _utf8(s: str) -> bytes:
    # surrogateescape: header bytes that a server decoded with surrogateescape come back unchanged
    return s.encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- Authorization header


@dataclass(frozen=True)
class Authorization:
    algorithm: str
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str
    scope: str | None = None  # V11 only: "YYYYMMDD/region/service"

    def header_value(self) -> str:
        """Formatted exactly as the SDK writes it."""
        signed = ";".join(self.signed_headers)
        if self.scope is not None:
            credential = f"Credential={self.access_key}/{self.scope}"
        else:
            credential = f"Access={self.access_key}"
        return f"{self.algorithm} {credential}, SignedHeaders={signed}, Signature={self.signature}"


_AUTH_SHAPE = re.compile(r"([A-Z0-9][A-Z0-9-]*)[ \t]+(\S.*)")
_PARAM = re.compile(r"([A-Za-z]+)=([!-~]+)")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_SCOPE = re.compile(r"(\d{8})/([^/\s,]+)/([^/\s,]+)")
_OWS = " \t"


def parse_authorization(value: str) -> Authorization:
    """Parse ``ALG Access=AK, SignedHeaders=a;b, Signature=hex`` (``Credential=AK/scope``
    for V11). Spaces/tabs are allowed around the commas and around the whole value, one
    or more between the algorithm and the first parameter; nothing else is tolerated."""
    match = _AUTH_SHAPE.fullmatch(value.strip(_OWS))
    if match is None:
        raise MalformedAuthorization("expected '<algorithm> <parameters>'")
    algorithm, rest = match.groups()
    params = _parse_params(rest)
    key_param = "Credential" if algorithm == V11_HMAC_SHA256 else "Access"
    expected = {key_param, "SignedHeaders", "Signature"}
    if set(params) != expected:
        raise MalformedAuthorization(f"expected parameters {sorted(expected)}, got {sorted(params)}")
    access_key, scope = params[key_param], None
    if algorithm == V11_HMAC_SHA256:
        access_key, _, scope = access_key.partition("/")
        if not _SCOPE.fullmatch(scope):
            raise MalformedAuthorization("Credential must be AK/YYYYMMDD/region/service")
    if not access_key:
        raise MalformedAuthorization(f"empty {key_param}")
    return Authorization(algorithm, access_key, _parse_signed_headers(params["SignedHeaders"]),
                         _parse_signature(params["Signature"], hmac_family=algorithm in ALGORITHMS), scope)


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in text.split(","):
        match = _PARAM.fullmatch(item.strip(_OWS))
        if match is None:
            raise MalformedAuthorization(f"malformed parameter {item.strip(_OWS)!r}")
        name, val = match.groups()
        if name in params:
            raise MalformedAuthorization(f"parameter {name} repeated")
        params[name] = val
    return params


def _parse_signed_headers(text: str) -> tuple[str, ...]:
    names = tuple(text.split(";"))
    if not all(_HEADER_NAME.fullmatch(n) for n in names):
        raise MalformedAuthorization("SignedHeaders must be ';'-separated lower-case header names")
    if len(set(names)) != len(names):
        raise MalformedAuthorization("SignedHeaders repeats a name")
    return names


def _parse_signature(text: str, hmac_family: bool) -> str:
    if hmac_family and not _HEX64.fullmatch(text):
        raise MalformedAuthorization("Signature must be 64 lower-case hex digits")
    if not _HEX.fullmatch(text):
        raise MalformedAuthorization("Signature must be lower-case hex")
    return text


# ---------------------------------------------------------------- verify


class Problem(StrEnum):
    MISSING_AUTHORIZATION = "missing Authorization header"
    MALFORMED_AUTHORIZATION = "malformed Authorization header"
    UNKNOWN_ALGORITHM = "unknown signing algorithm"
    UNSUPPORTED_ALGORITHM = "signing algorithm not supported here"
    UNKNOWN_ACCESS_KEY = "access key not listed"
    REQUIRED_HEADER_NOT_SIGNED = "a required header is not in SignedHeaders"
    MISSING_SIGNED_HEADER = "a signed header is missing"
    DUPLICATE_SIGNED_HEADER = "a signed header appears more than once"
    MALFORMED_DATE = "X-Sdk-Date missing or not YYYYMMDDTHHMMSSZ"
    STALE_DATE = "X-Sdk-Date more than 15 minutes from the server clock"
    SCOPE_MISMATCH = "V11 credential scope does not match X-Sdk-Date or the expected region/service"
    PAYLOAD_HASH_MISMATCH = "the content hash header does not match the body"
    BODY_NEEDED = "body not given (UNSIGNED) but no content-hash header declares its hash"
    BAD_SIGNATURE = "signature does not match"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: Problem | None = None
    detail: str = ""
    authorization: Authorization | None = None
    secret_key: str | None = field(default=None, repr=False)  # of the verified key, for re-signing

    def __bool__(self) -> bool:
        return self.ok


_DATE = re.compile(r"\d{8}T\d{6}Z")


def parse_sdk_date(value: str | None) -> datetime | None:
    if value is None or not _DATE.fullmatch(value.strip()):
        return None
    try:
        return datetime.strptime(value.strip(), DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def verify(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Headers,
    body: Payload,
    keys: Mapping[str, str],
    *,
    now: datetime | None = None,
    max_skew: timedelta = MAX_CLOCK_SKEW,
    required_signed_headers: Sequence[str] = DEFAULT_REQUIRED_SIGNED_HEADERS,
    v11_region: str | None = None,
    v11_service: str | None = None,
) -> Verdict:
    """Check the request's Authorization against ``keys`` (AK -> SK)."""
    fail = _Failer()
    try:
        raw_auth = header_value(headers, "Authorization")
    except DuplicateHeader as e:
        return fail(Problem.MALFORMED_AUTHORIZATION, str(e))
    if raw_auth is None:
        return fail(Problem.MISSING_AUTHORIZATION)
    try:
        auth = parse_authorization(raw_auth)
    except MalformedAuthorization as e:
        return fail(Problem.MALFORMED_AUTHORIZATION, str(e))
    fail.auth = auth
    if auth.algorithm in KNOWN_UNSUPPORTED or (auth.algorithm == HMAC_SM3 and not SM3_AVAILABLE):
        return fail(Problem.UNSUPPORTED_ALGORITHM, auth.algorithm)
    if auth.algorithm not in ALGORITHMS:
        return fail(Problem.UNKNOWN_ALGORITHM, auth.algorithm)
    secret_key = keys.get(auth.access_key)
    if secret_key is None:
        return fail(Problem.UNKNOWN_ACCESS_KEY, auth.access_key)
    unsigned = [h for h in required_signed_headers if h.lower() not in auth.signed_headers]
    if unsigned:
        return fail(Problem.REQUIRED_HEADER_NOT_SIGNED, ", ".join(unsigned))
    try:
        sdk_date = header_value(headers, "X-Sdk-Date")
    except DuplicateHeader as e:
        return fail(Problem.DUPLICATE_SIGNED_HEADER, str(e))
    when = parse_sdk_date(sdk_date)
    if when is None or sdk_date is None:
        return fail(Problem.MALFORMED_DATE, repr(sdk_date))
    skew = abs((now or datetime.now(UTC)) - when)
    if skew > max_skew:
        return fail(Problem.STALE_DATE, f"X-Sdk-Date {sdk_date.strip()} is {skew} away")
    if auth.scope is not None and not _scope_matches(auth.scope, sdk_date.strip(), v11_region, v11_service):
        return fail(Problem.SCOPE_MISMATCH, auth.scope)
    try:
        canonical_variants = _canonical_variants(method, raw_path, raw_query, headers, auth, body)
    except MissingHeader as e:
        return fail(Problem.MISSING_SIGNED_HEADER, str(e))
    except DuplicateHeader as e:
        return fail(Problem.DUPLICATE_SIGNED_HEADER, str(e))
    except SigningError as e:
        return fail(Problem.BODY_NEEDED, str(e))
    expected = [
        signature(auth.algorithm, secret_key, string_to_sign(auth.algorithm, sdk_date.strip(), c, auth.scope),
                  access_key=auth.access_key, scope=auth.scope or "")
        for c in canonical_variants
    ]
    if not any(hmac.compare_digest(e, auth.signature) for e in expected):
        return fail(Problem.BAD_SIGNATURE, canonical_variants[0].replace("\n", "|"))
    mismatch = _declared_hash_mismatch(ALGORITHMS[auth.algorithm], headers, body)
    if mismatch:
        return fail(Problem.PAYLOAD_HASH_MISMATCH, mismatch)
    return Verdict(True, authorization=auth, secret_key=secret_key)


class _Failer:
    auth: Authorization | None = None

    def __call__(self, reason: Problem, detail: str = "") -> Verdict:
        return Verdict(False, reason, detail, self.auth)


def _scope_matches(scope: str, sdk_date: str, region: str | None, service: str | None) -> bool:
    day, scope_region, scope_service = scope.split("/")
    return (day == sdk_date[:8] and region in (None, scope_region) and service in (None, scope_service))


def _canonical_variants(
    method: str, raw_path: str, raw_query: str, headers: Headers, auth: Authorization, body: Payload
) -> list[str]:
    """The canonical request; for an empty body that carries a content-hash header, also
    the variant that uses the header's value (APIG's signing SDKs and the Go SDK do that,
    the Python SDK hashes b'')."""
    first = canonical_request(method, raw_path, raw_query, headers, auth.signed_headers, body, auth.algorithm)
    declared = header_value(headers, ALGORITHMS[auth.algorithm].content_header)
    if body == b"" and declared and declared.strip():
        head, _, _ = first.rpartition("\n")
        return [first, f"{head}\n{declared.strip()}"]
    return [first]


def _declared_hash_mismatch(alg: Algorithm, headers: Headers, body: Payload) -> str:
    """Stricter than APIG is known to be: a hex hash in the content header must be the body's."""
    declared = (header_value(headers, alg.content_header) or "").strip()
    if not isinstance(body, bytes) or not body or not declared or declared == UNSIGNED_PAYLOAD:
        return ""
    actual = alg.hexdigest(body)
    return "" if hmac.compare_digest(declared.lower(), actual) else f"declared {declared}, body {actual}"


# ---------------------------------------------------------------- sign


@dataclass(frozen=True)
class SignedRequest:
    headers: list[tuple[str, str]]  # to send as they are (values stripped, like the SDK sends them)
    query: str  # canonical query string: send exactly this (the SDK does)
    target: str  # raw path + '?' + query
    canonical_request: str
    string_to_sign: str
    authorization: Authorization


def sign(
    method: str,
    host: str,
    raw_path: str,
    query: Query,
    headers: Headers,
    body: Payload,
    access_key: str,
    secret_key: str,
    *,
    algorithm: str = HMAC_SHA256,
    now: Callable[[], datetime] | None = None,
    region: str | None = None,
    service: str | None = None,
) -> SignedRequest:
    """Sign as huaweicloudsdkcore does: add X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD when a
    Content-Type is present that starts with neither application/json nor application/bson,
    X-Sdk-Date (unless present), Host (unless present); sign every header whose name has
    no '_'; append Authorization. ``host`` is the Host value (host[:port]) to sign."""
    if not access_key or not secret_key:
        raise ValueError("access key and secret key are required")
    alg = ALGORITHMS.get(algorithm)
    if alg is None or (algorithm == HMAC_SM3 and not SM3_AVAILABLE):
        raise ValueError(f"cannot sign with {algorithm}")
    if alg.derived and not (region and service):
        raise ValueError("V11-HMAC-SHA256 needs region and service")
    out = [(name, str(value)) for name, value in headers]
    if header_values(out, "Authorization"):
        raise SigningError("remove the incoming Authorization header before signing")
    _set_unsigned_payload_header(out, alg)
    sdk_date = _ensure_date(out, now)
    if not header_values(out, "Host"):
        out.append(("Host", host))
    out = [(name, value.strip()) for name, value in out]
    signed = tuple(sorted(name.lower() for name, _ in out if "_" not in name))
    if len(set(signed)) != len(signed):
        raise DuplicateHeader("a header to be signed appears more than once")
    scope = f"{sdk_date[:8]}/{region}/{service}" if alg.derived else None
    canonical = canonical_request(method, raw_path, query, out, signed, body, algorithm)
    to_sign = string_to_sign(algorithm, sdk_date, canonical, scope)
    sig = signature(algorithm, secret_key, to_sign, access_key=access_key, scope=scope or "")
    auth = Authorization(algorithm, access_key, signed, sig, scope)
    out.append(("Authorization", auth.header_value()))
    q = canonical_query(query)
    return SignedRequest(out, q, f"{raw_path}?{q}" if q else raw_path, canonical, to_sign, auth)


def _set_unsigned_payload_header(headers: list[tuple[str, str]], alg: Algorithm) -> None:
    content_type = header_value(headers, "Content-Type")
    if not content_type or content_type.startswith(("application/json", "application/bson")):
        return
    for i, (name, _) in enumerate(headers):
        if name.lower() == alg.content_header:
            headers[i] = (name, UNSIGNED_PAYLOAD)
            return
    headers.append((_CONTENT_HEADER_SPELLING[alg.content_header], UNSIGNED_PAYLOAD))


def _ensure_date(headers: list[tuple[str, str]], now: Callable[[], datetime] | None) -> str:
    present = header_value(headers, "X-Sdk-Date")
    if present is not None:
        if parse_sdk_date(present) is None:
            raise SigningError(f"X-Sdk-Date {present!r} is not YYYYMMDDTHHMMSSZ")
        return present.strip()
    when = (now or (lambda: datetime.now(UTC)))().astimezone(UTC)
    value = when.strftime(DATE_FORMAT)
    headers.append(("X-Sdk-Date", value))
    return value


# ---------------------------------------------------------------- the credentials file


class Credentials(Mapping[str, str]):
    """Access key -> secret key. Its repr and str name how many keys it holds, never a secret."""

    def __init__(self, keys: Mapping[str, str] | None = None) -> None:
        self._keys = dict(keys or {})

    def __getitem__(self, access_key: str) -> str:
        return self._keys[access_key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<Credentials: {len(self._keys)} access keys>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Credentials) and self._keys == other._keys

    __hash__ = None  # type: ignore[assignment]


def load_keys(text: str) -> Credentials:
    """``ACCESS_KEY:SECRET_KEY`` per line; blank lines and '#' comments ignored.

    A ValueError names the line, never its content: the file holds secrets.
    """
    keys: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        ak, sep, sk = line.partition(":")
        ak, sk = ak.strip(), sk.strip()
        if not sep or not ak or not sk or any(c.isspace() for c in ak + sk):
            raise ValueError(f"line {number}: expected ACCESS_KEY:SECRET_KEY")
        if ak in keys:
            raise ValueError(f"line {number}: an access key listed twice")
        keys[ak] = sk
    return Credentials(keys)
