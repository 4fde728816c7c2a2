"""Every setting: its section, default, one line of help and the check of its value.

The frozen dataclasses below are the schema; ``gateway.config.loader`` fills them from
the layers (defaults, file, environment, flags).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.edge import signing
from gateway.patch import policy
from gateway.patch import retirement as deprecation
from gateway.telemetry import clients
from gateway.telemetry.stores import spec as stores
from gateway.vocabulary import Shape


class SettingsError(ValueError):
    """One or more invalid settings; ``problems`` has one line each."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError("HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
        # Each message completes "expected ...", as the other settings' do.
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError("an IPv6 address in the brackets, e.g. [::1]:8080") from None
        elif ":" in host:
            raise ValueError("an IPv6 host in brackets, e.g. [::1]:8080")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("HOST:PORT with a port from 0 to 65535")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _setting(default: Any, help: str, check: Callable[[Any], str | None] | None = None) -> Any:
    """A config key: its default, one line of help, and a check returning what is allowed."""
    return field(default=default, metadata={"help": help, "check": check})


def _positive(value: float) -> str | None:
    return None if value > 0 else "a number > 0"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "a number >= 0"


def _at_least(minimum: int) -> Callable[[int], str | None]:
    return lambda value: None if value >= minimum else f"a whole number >= {minimum}"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    return lambda value: None if value in choices else "one of " + ", ".join(choices)


def _event_loop(value: str) -> str | None:
    if value not in ("auto", "uvloop", "asyncio"):
        return "one of auto, uvloop, asyncio"
    if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "auto or asyncio: uvloop is not installed (pip install 'ims-gateway[uvloop]')"
    return None


def _readable_file_or_empty(value: str) -> str | None:
    if value == "" or (os.access(value, os.R_OK) and Path(value).is_file()):
        return None
    return "the path of a readable file (or empty)"


def _upstream_url(value: str) -> str | None:
    if value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname and not parts.query and not parts.fragment:
        try:
            _ = parts.port
        except ValueError:
            return "an http:// or https:// URL with a valid port"
        if "@" in parts.netloc:
            # They would be logged with the URL and sent to IMS as Basic auth on every request.
            return "a URL without credentials (user:password@); clients send their own X-Auth-Token"
        return None
    return "an http:// or https:// URL with a host and no query (or empty: the built-in emulator)"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: Address = _setting(Address("127.0.0.1", 8080), "where clients connect (HOST:PORT)")
    admin_listen: Address = _setting(
        Address("127.0.0.1", 9090), "admin listener for /healthz, /readyz, /metrics (HOST:PORT)"
    )
    tls_cert: str = _setting("", "PEM certificate chain: serve HTTPS on `listen` (empty: plain HTTP)", _readable_file_or_empty)
    tls_key: str = _setting("", "PEM private key for tls_cert", _readable_file_or_empty)
    max_header_bytes: int = _setting(8190, "largest request line or header field accepted (else 431)", _at_least(1024))
    drain_timeout: float = _setting(30.0, "seconds in-flight requests get to finish after SIGTERM or SIGINT", _non_negative)
    drain_delay: float = _setting(
        5.0,
        "seconds after SIGTERM during which /readyz fails but new connections are still served, "
        "so load balancers stop sending first (keep drain_delay + drain_timeout below the orchestrator's grace period); "
        "SIGINT (Ctrl-C in a terminal) skips it",
        _non_negative,
    )
    header_timeout: float = _setting(
        20.0, "seconds a client has to finish sending a request's headers once it has started (then 408, closed)", _positive
    )
    body_timeout: float = _setting(
        30.0, "seconds a client has to send a whole PATCH /v2/images/{id} body (then 408, closed)", _positive
    )
    keepalive_timeout: float = _setting(75.0, "seconds an idle client connection is kept open waiting for its next request", _positive)
    workers: int = _setting(
        1, "processes serving both listeners (more than 1 needs upstream.url; --workers overrides)", _at_least(1)
    )
    routing_headers: str = _setting(
        "drop",
        "headers that can change the path or method IMS executes (names with '_', SCRIPT_NAME, X-Forwarded-Prefix, "
        "X-Original-URL, ...): drop them before forwarding, or refuse the request with 400",
        _one_of("drop", "refuse"),
    )
    event_loop: str = _setting(
        "auto", "the event loop: auto (uvloop when it is installed, else asyncio's own), uvloop or asyncio", _event_loop
    )


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    url: str = _setting("", "IMS base URL, e.g. https://ims.ap-southeast-1.myhuaweicloud.com (empty: start the built-in emulator)", _upstream_url)
    connect_timeout: float = _setting(
        10.0, "seconds to get a connection to IMS, waiting for a free one of pool_size included (then 504)", _positive
    )
    read_timeout: float = _setting(300.0, "seconds of silence allowed while waiting for IMS to send (then 504); no limit on a whole transfer", _positive)
    pool_size: int = _setting(
        100, "most connections open to IMS at once", _at_least(1)
    )
    ca_file: str = _setting("", "PEM CA bundle to verify IMS with (empty: the system's CA store)", _readable_file_or_empty)
    client_cert: str = _setting("", "PEM client certificate for mutual TLS to IMS (empty: none)", _readable_file_or_empty)
    client_key: str = _setting("", "PEM private key of client_cert (empty: the key is in client_cert)", _readable_file_or_empty)
    verify_tls: bool = _setting(True, "verify IMS's certificate; false is insecure and logged as such at every start")
    preserve_host: bool = _setting(False, "send the client's Host to IMS instead of the upstream's own host")


@dataclass(frozen=True, slots=True)
class PatchSettings:
    max_body_bytes: int = _setting(65536, "largest PATCH /v2/images/{id} body read (else 413)", _at_least(2))
    max_value_depth: int = _setting(
        8,
        "deepest nesting of arrays and objects in a PATCH operation's members (else 400); IMS values are strings "
        "and Glance's deepest (locations) is 3, while Glance answers 500 from about 400 levels",
        _at_least(1),
    )
    check_add_conflicts: bool = _setting(
        True, "before forwarding a rewritten v2.0 'add', read the image and answer 409 where Glance would"
    )
    mode: str = _setting(
        "enforce",
        "enforce: refuse what the policy forbids; observe: forward every PATCH as received, log and count what enforce would do",
        _one_of("enforce", "observe"),
    )
    rewrite: bool = _setting(True, "in enforce mode, rewrite v2.0 bodies to v2.1 (false: forward them to IMS as v2.0, unchanged)")
    successor_routing: bool = _setting(
        False, "forward accepted PATCH /v2/images/{id} to IMS's successor API PATCH /v2/cloudimages/{id} (v2.1 items, JSON)"
    )


def _instant_or_empty(value: str) -> str | None:
    if value == "":
        return None
    try:
        deprecation.parse_instant(value)
    except ValueError as exc:
        return f"{exc} (or empty)"
    return None


def _windows(value: tuple[str, ...]) -> str | None:
    try:
        deprecation.parse_windows(value)
    except ValueError as exc:
        return f"{deprecation.WINDOW_FORMAT}; {exc}"
    return None


def _link_url_or_empty(value: str) -> str | None:
    parts = urlsplit(value)
    # The value goes into a Link header between < and >: no spaces, quotes or brackets.
    if value == "" or (parts.scheme in ("http", "https") and parts.hostname and re.fullmatch(r"[!#-;=?-~]+", value)):
        return None
    return "an absolute http:// or https:// URL without spaces, quotes or <> (or empty)"


def _error_status(value: int) -> str | None:
    return None if 400 <= value <= 599 else "an HTTP status from 400 to 599"


@dataclass(frozen=True, slots=True)
class Announcement:
    """The keys of ``[deprecation]`` that one body shape has a twin of (``v20_*``, ``v21_*``)."""

    deprecated_at: str
    sunset_at: str
    documentation: str
    sunset_policy: str
    successor_link: bool


@dataclass(frozen=True, slots=True)
class DeprecationSettings:
    v20_deprecated_at: str = _setting(
        "", 'Deprecation header on v2.0-shaped PATCH responses: RFC 3339 UTC, e.g. "2023-06-30T23:59:59Z" (empty: none)', _instant_or_empty
    )
    v20_sunset_at: str = _setting(
        "", "Sunset header on v2.0-shaped PATCH responses, not before v20_deprecated_at; v2.0 is refused from then on (empty: none)", _instant_or_empty
    )
    v20_documentation: str = _setting(
        "", 'migration guide URL: Link rel="deprecation" on v2.0-shaped responses, and quoted in brownout/sunset refusals', _link_url_or_empty
    )
    v20_sunset_policy: str = _setting("", 'sunset policy URL: Link rel="sunset" on v2.0-shaped responses (empty: none)', _link_url_or_empty)
    v20_successor_link: bool = _setting(False, 'Link rel="successor-version" to /v2/cloudimages/{id} on v2.0-shaped responses')
    v21_deprecated_at: str = _setting(
        "", "Deprecation header on every other PATCH /v2/images/{id} response (v2.1 and unrecognised bodies) (empty: none)", _instant_or_empty
    )
    v21_sunset_at: str = _setting(
        "", "Sunset header on those responses, not before v21_deprecated_at; informational only, nothing is refused (empty: none)", _instant_or_empty
    )
    v21_documentation: str = _setting("", 'migration guide URL: Link rel="deprecation" on those responses (empty: none)', _link_url_or_empty)
    v21_sunset_policy: str = _setting("", 'sunset policy URL: Link rel="sunset" on those responses (empty: none)', _link_url_or_empty)
    v21_successor_link: bool = _setting(False, 'Link rel="successor-version" to /v2/cloudimages/{id} on those responses')
    successor_base: str = _setting(
        "", "base URL of the successor-version link (empty: the relative /v2/cloudimages/{id}, which the gateway forwards too)", _link_url_or_empty
    )
    v20_brownouts: tuple[str, ...] = _setting(
        (), 'UTC windows "START/END", in order, during which v2.0 bodies are refused, e.g. ["2024-05-02T09:00:00Z/2024-05-02T10:00:00Z"]', _windows
    )
    v20_refuse_after_sunset: bool = _setting(True, "refuse v2.0 bodies from v20_sunset_at on (false: keep accepting them)")
    refusal_status: int = _setting(410, "HTTP status of a brownout or post-sunset refusal", _error_status)

    def announcement(self, shape: Shape) -> Announcement:
        """The v20_* keys for v2.0 bodies; the v21_* ones for every other image PATCH."""
        if shape is Shape.V20:
            return Announcement(
                self.v20_deprecated_at, self.v20_sunset_at, self.v20_documentation,
                self.v20_sunset_policy, self.v20_successor_link,
            )  # fmt: skip
        return Announcement(
            self.v21_deprecated_at, self.v21_sunset_at, self.v21_documentation,
            self.v21_sunset_policy, self.v21_successor_link,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PolicySettings:
    allowed_system_attributes: tuple[str, ...] = _setting(
        policy.DEFAULT_ALLOWED_SYSTEM_ATTRIBUTES, "IMS system attributes that may be changed"
    )
    forbidden_attributes: tuple[str, ...] = _setting(
        policy.DEFAULT_FORBIDDEN_ATTRIBUTES, "attribute names that may not be changed"
    )
    forbidden_prefixes: tuple[str, ...] = _setting(
        policy.DEFAULT_FORBIDDEN_PREFIXES, "attribute name prefixes that may not be changed (allowed names win)"
    )


def _client_rules(value: tuple[str, ...]) -> str | None:
    for text in value:
        try:
            clients.parse_rule(text)
        except ValueError as exc:
            return f"SUBSTRING=LABEL rules, but {exc}"
    return None


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = _setting(
        True, "count requests in the metrics and the /deprecations report (false only to measure what they cost)"
    )
    client_label_cap: int = _setting(
        50, "most distinct User-Agent product tokens kept as client labels; later ones count as 'other'", _at_least(0)
    )
    client_label_map: tuple[str, ...] = _setting(
        (),
        "SUBSTRING=LABEL rules: a User-Agent containing SUBSTRING (any case) gets client label LABEL; first match wins",
        _client_rules,
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_REPLICA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def parse_duration(text: str) -> float:
    """Seconds of a duration such as "30d", "12h", "90m" or "45s"; ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration(value: str) -> str | None:
    try:
        parse_duration(value)
    except ValueError:
        return 'a duration > 0: a number and s, m, h or d, e.g. "30d" or "12h"'
    return None


def _store(value: str) -> str | None:
    try:
        stores.parse_store(value)
    except ValueError as exc:
        return str(exc)
    return None


def _replica_name(value: str) -> str | None:
    if value == "" or _REPLICA.fullmatch(value):
        return None
    return "1-63 of A-Z a-z 0-9 . _ - starting with a letter or digit (or empty: the host name)"


@dataclass(frozen=True, slots=True)
class ReportSettings:
    max_clients: int = _setting(
        1000,
        "most entries kept in the /deprecations migration report (fleet-wide with a shared store); the least recently seen is dropped",
        _at_least(1),
    )
    store: str = _setting(
        "",
        'where the report is kept: "memory" (this process), "sqlite" or "sqlite:///ABSOLUTE/PATH" (the workers of one machine, '
        'kept across restarts), "redis://[:PASSWORD@]HOST[:PORT][/DB]" or "rediss://..." (a fleet); '
        "empty: memory for one process, sqlite for --workers N (restart to change)",
        _store,
    )
    retention: str = _setting(
        "30d", 'entries not seen for this long are dropped: a number and s, m, h or d ("30d": the sunset\'s 30-day window)', _duration
    )
    store_timeout: float = _setting(
        2.0, "seconds a flush or a /deprecations read may wait for the store; /deprecations then serves this process's own view", _positive
    )
    replica: str = _setting(
        "", "this gateway's name in the report's per-replica detail (empty: the host name, a pod's name in Kubernetes; restart to change)", _replica_name
    )

    @property
    def retention_seconds(self) -> float:
        return parse_duration(self.retention)


def _credentials_file(value: str) -> str | None:
    if value == "":
        return None
    if not (os.access(value, os.R_OK) and Path(value).is_file()):
        return "the path of a readable file of ACCESS_KEY:SECRET_KEY lines (or empty)"
    try:
        signing.load_keys(Path(value).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return f"a readable UTF-8 file ({type(exc).__name__})"
    except ValueError as exc:  # names the line, never its content
        return f"ACCESS_KEY:SECRET_KEY lines, '#' comments; {exc}"
    return None


@dataclass(frozen=True, slots=True)
class SigningSettings:
    credentials_file: str = _setting(
        "",
        "file of ACCESS_KEY:SECRET_KEY lines ('#' comments): requests signed with a listed key are verified and, "
        "once rewritten, signed again with it (empty: signed requests pass with all they signed unchanged)",
        _credentials_file,
    )


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    credentials_file: str = _setting(
        "",
        "the embedded emulator's ACCESS_KEY:SECRET_KEY file: it then verifies every request's signature as IMS does (empty: none)",
        _credentials_file,
    )


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    level: str = _setting("info", "debug, info, warning or error", _one_of("debug", "info", "warning", "error"))
    access_log: bool = _setting(True, "one line per request (method, route class, status, duration, request id)")


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    patch: PatchSettings = field(default_factory=PatchSettings)
    deprecation: DeprecationSettings = field(default_factory=DeprecationSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    signing: SigningSettings = field(default_factory=SigningSettings)
    emulator: EmulatorSettings = field(default_factory=EmulatorSettings)
