"""Configuration: the schema of every setting and how the layers fill it."""

from gateway.config.loader import (
    ENV_PREFIX,
    build,
    documented_keys,
    environment_overrides,
    load,
    merge,
    read_file,
    replace,
)
from gateway.config.schema import (
    Address,
    DeprecationSettings,
    LoggingSettings,
    MetricsSettings,
    PatchSettings,
    PolicySettings,
    ReportSettings,
    ServerSettings,
    Settings,
    SettingsError,
    UpstreamSettings,
)

__all__ = [
    "ENV_PREFIX",
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
    "build",
    "documented_keys",
    "environment_overrides",
    "load",
    "merge",
    "read_file",
    "replace",
]
