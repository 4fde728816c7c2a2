"""Settings: built-in defaults < config file < IMS_GATEWAY_* environment < command-line flags.

Read and validated once at start-up into frozen dataclasses (``gateway.config.schema``).
Every problem names the key, the value and what is allowed; all problems of a file are
reported at once.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Any

from gateway.config.schema import (
    Address,
    DeprecationSettings,
    PatchSettings,
    Settings,
    SettingsError,
)
from gateway.patch import retirement
from gateway.vocabulary import Shape

ENV_PREFIX = "IMS_GATEWAY_"


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
    for shape, prefix in ((Shape.V20, "v20"), (Shape.V21, "v21")):
        keys = section.announcement(shape)
        deprecated, sunset = keys.deprecated_at, keys.sunset_at
        if deprecated and sunset and retirement.parse_instant(sunset) < retirement.parse_instant(deprecated):
            problems.append(
                f"deprecation.{prefix}_sunset_at: {sunset} is before deprecation.{prefix}_deprecated_at ({deprecated}); "
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


__all__ = ["ENV_PREFIX", "build", "documented_keys", "environment_overrides", "load", "merge", "read_file", "replace"]
