"""Settings: built-in defaults < config file < IMS_GATEWAY_* environment < command-line flags.

Read and validated once at start-up into frozen dataclasses. Every problem names the key,
the value and what is allowed; all problems of a file are reported at once.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway import clients, deprecation, policy

ENV_PREFIX = "IMS_GATEWAY_"


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
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            ipaddress.IPv6Address(host)
        elif ":" in host:
            raise ValueError("an IPv6 host must be in brackets, e.g. [::1]:8080")
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("the port must be a number from 0 to 65535")
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


def _readable_file_or_empty(value: str) -> str | None:
    if value == "" or os.access(value, os.R_OK) and Path(value).is_file():
        return None
    return "the path of a readable file (or empty)"


def _upstream_url(value: str) -> str | None:
    if value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.hostname and not parts.query and not parts.fragment:
        try:
            parts.port
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
    drain_timeout: float = _setting(30.0, "seconds in-flight requests get to finish after SIGTERM", _non_negative)
    drain_delay: float = _setting(
        5.0,
        "seconds after SIGTERM during which /readyz fails but new connections are still served, "
        "so load balancers stop sending first (keep drain_delay + drain_timeout below the orchestrator's grace period)",
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
    if value == "" or parts.scheme in ("http", "https") and parts.hostname and re.fullmatch(r"[!#-;=?-~]+", value):
        return None
    return "an absolute http:// or https:// URL without spaces, quotes or <> (or empty)"


def _error_status(value: int) -> str | None:
    return None if 400 <= value <= 599 else "an HTTP status from 400 to 599"


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


@dataclass(frozen=True, slots=True)
class ReportSettings:
    max_clients: int = _setting(
        1000, "most entries kept in the /deprecations migration report; the least recently seen is dropped", _at_least(1)
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


# Section name -> its dataclass, in declaration order (annotations are strings here).
_SECTION_TYPES: dict[str, type] = typing.get_type_hints(Settings)


def _key_types(section: type) -> dict[str, Any]:
    return typing.get_type_hints(section)


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false"
    if kind is int:
        return "a whole number"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if kind is Address:
        return "a HOST:PORT string"
    return "a list of strings"


def _convert(kind: Any, value: Any) -> Any:
    """A TOML value to the field's type; raises ValueError saying what is allowed."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is Address:
        if isinstance(value, str):
            return Address.parse(value)
    elif typing.get_origin(kind) is tuple:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
    raise ValueError(_describe(kind))


def _from_text(kind: Any, text: str) -> Any:
    """An environment variable or flag value to the TOML value it stands for."""
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError("true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("a whole number") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    if typing.get_origin(kind) is tuple:
        return [item.strip() for item in text.split(",") if item.strip()]
    return text


_USERINFO = re.compile(r"(?<=://)[^/?#]*@")


def _show(value: Any) -> str:
    """A value for an error message; a URL's credentials are never repeated."""
    return repr(value) if not isinstance(value, str) else '"' + _USERINFO.sub("***@", value) + '"'


def build(raw: Mapping[str, Any], source: str = "") -> Settings:
    """Validated settings from a nested mapping shaped like config/gateway.toml."""
    problems: list[str] = []
    built: dict[str, Any] = {}
    known_sections = _SECTION_TYPES
    for name in raw:
        if name not in known_sections:
            problems.append(f"unknown section [{name}] (known: {', '.join(known_sections)})")
    for name, section in known_sections.items():
        table = raw.get(name, {})
        if not isinstance(table, Mapping):
            problems.append(f"{name}: must be a table ([{name}])")
            continue
        kinds = _key_types(section)
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in kinds:
                problems.append(f"{name}.{key}: unknown key (known: {', '.join(kinds)})")
                continue
            try:
                values[key] = _convert(kinds[key], value)
            except ValueError as exc:
                problems.append(f"{name}.{key}: {_show(value)} is not allowed: expected {exc}")
        for f in dataclasses.fields(section):
            check = f.metadata.get("check")
            if f.name in values and check and (allowed := check(values[f.name])):
                problems.append(f"{name}.{f.name}: {_show(table[f.name])} is not allowed: expected {allowed}")
        built[name] = section(**values)
    if problems:
        raise SettingsError(problems, source)
    settings = Settings(**built)
    problems = _cross_checks(settings)
    if problems:
        raise SettingsError(problems, source)
    return settings


def _cross_checks(settings: Settings) -> list[str]:
    problems = []
    server, upstream = settings.server, settings.upstream
    if bool(server.tls_cert) != bool(server.tls_key):
        problems.append("server.tls_cert and server.tls_key: set both (HTTPS) or neither (HTTP)")
    if upstream.client_key and not upstream.client_cert:
        problems.append("upstream.client_key: set only together with upstream.client_cert")
    if server.workers > 1 and not upstream.url:
        problems.append("server.workers: more than 1 needs upstream.url; the built-in emulator keeps images in one process")
    if server.listen == server.admin_listen and server.listen.port != 0:
        problems.append(f"server.admin_listen: {server.admin_listen} is also server.listen; use another port")
    for name in settings.policy.allowed_system_attributes:
        if name in settings.policy.forbidden_attributes:
            problems.append(f"policy.allowed_system_attributes: {name!r} is also in policy.forbidden_attributes")
    return problems + _mode_checks(settings.patch) + _deprecation_checks(settings.deprecation)


def _mode_checks(patch: PatchSettings) -> list[str]:
    problems = []
    if patch.successor_routing and patch.mode != "enforce":
        problems.append('patch.successor_routing: needs patch.mode = "enforce"; observe forwards every PATCH as received')
    if patch.successor_routing and not patch.rewrite:
        problems.append("patch.rewrite: must be true with patch.successor_routing; the successor API takes only v2.1 items")
    return problems


def _deprecation_checks(section: DeprecationSettings) -> list[str]:
    problems = []
    for shape in ("v20", "v21"):
        deprecated, sunset = getattr(section, f"{shape}_deprecated_at"), getattr(section, f"{shape}_sunset_at")
        if deprecated and sunset and deprecation.parse_instant(sunset) < deprecation.parse_instant(deprecated):
            problems.append(
                f"deprecation.{shape}_sunset_at: {sunset} is before deprecation.{shape}_deprecated_at ({deprecated}); "
                "a resource cannot be sunset before it is deprecated"
            )
    return problems


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise SettingsError([f"cannot read the file: {exc.strerror}"], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"not valid TOML: {exc}"], str(path)) from None


def environment_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """IMS_GATEWAY_<SECTION>_<KEY> variables as a nested mapping (IMS_GATEWAY_UPSTREAM_URL -> upstream.url)."""
    overrides: dict[str, dict[str, Any]] = {}
    problems = []
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        section, _, key = variable[len(ENV_PREFIX):].lower().partition("_")
        kinds = _key_types(_SECTION_TYPES[section]) if section in _SECTION_TYPES else {}
        if key not in kinds:
            problems.append(f"{variable}: no such setting (variables are {ENV_PREFIX}<SECTION>_<KEY>, e.g. {ENV_PREFIX}UPSTREAM_URL)")
            continue
        try:
            overrides.setdefault(section, {})[key] = _from_text(kinds[key], text)
        except ValueError as exc:
            problems.append(f"{variable}: {text!r} is not allowed: expected {exc}")
    if problems:
        raise SettingsError(problems, "the environment")
    return overrides


def merge(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        for section, table in layer.items():
            if isinstance(table, Mapping) and isinstance(merged.get(section, {}), Mapping):
                merged[section] = {**merged.get(section, {}), **table}
            else:
                merged[section] = table
    return merged


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Settings from the layers, the later winning: defaults, file, environment, overrides (flags)."""
    file_values = read_file(path) if path is not None else {}
    env_values = environment_overrides(os.environ if environ is None else environ)
    return build(merge(file_values, env_values, overrides or {}), str(path) if path else "")


def documented_keys() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, help) for every setting, in declaration order."""
    rows = []
    for section_name, section in _SECTION_TYPES.items():
        for f in dataclasses.fields(section):
            rows.append((section_name, f.name, f.default, f.metadata["help"]))
    return rows


def replace(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """A copy with some keys changed (tests, and `serve` pointing at its embedded emulator)."""
    changed = {name: dataclasses.replace(getattr(settings, name), **values) for name, values in sections.items()}
    return dataclasses.replace(settings, **changed)


__all__ = [
    "Address",
    "DeprecationSettings",
    "LoggingSettings",
    "MetricsSettings",
    "PatchSettings",
    "PolicySettings",
    "ReportSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "UpstreamSettings",
    "documented_keys",
    "environment_overrides",
    "load",
    "read_file",
    "replace",
]
