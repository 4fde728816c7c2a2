"""One generation of configuration, and what is derived from it once instead of per request."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gateway.config.schema import DeprecationSettings, Settings
from gateway.edge.signing import Credentials, load_keys
from gateway.patch.policy import Policy
from gateway.patch.retirement import Schedule, Signals, parse_instant, parse_windows
from gateway.vocabulary import Mode, Shape


@dataclass(frozen=True, slots=True)
class Config:
    """One generation of configuration: what a request is decided under, start to finish.

    A reload swaps the whole object; a request keeps the one it started with.
    """

    settings: Settings
    policy: Policy
    generation: int = 0
    schedule: Schedule = Schedule()
    # signing.credentials_file, read once per generation (a reload re-reads it).
    credentials: Credentials = field(default_factory=Credentials)
    mode: Mode = Mode.ENFORCE  # patch.mode

    @classmethod
    def from_settings(cls, settings: Settings, generation: int = 0) -> Config:
        return cls(
            settings=settings,
            policy=Policy(
                allowed_system_attributes=settings.policy.allowed_system_attributes,
                forbidden_attributes=settings.policy.forbidden_attributes,
                forbidden_prefixes=settings.policy.forbidden_prefixes,
            ),
            generation=generation,
            schedule=_schedule(settings.deprecation),
            credentials=read_credentials(settings.signing.credentials_file),
            mode=Mode(settings.patch.mode),
        )


def read_credentials(path: str) -> Credentials:
    """The keys of a credentials file (checked by the settings already), or none."""
    return load_keys(Path(path).read_text(encoding="utf-8")) if path else Credentials()


def _instant(text: str) -> datetime | None:
    return parse_instant(text) if text else None


def _signals(section: DeprecationSettings, shape: Shape) -> Signals:
    keys = section.announcement(shape)
    return Signals(
        deprecated_at=_instant(keys.deprecated_at),
        sunset_at=_instant(keys.sunset_at),
        documentation=keys.documentation,
        sunset_policy=keys.sunset_policy,
        successor_link=keys.successor_link,
    )


def _schedule(section: DeprecationSettings) -> Schedule:
    return Schedule(
        v20=_signals(section, Shape.V20),
        v21=_signals(section, Shape.V21),
        successor_base=section.successor_base.rstrip("/"),
        v20_brownouts=parse_windows(section.v20_brownouts),
        v20_refuse_after_sunset=section.v20_refuse_after_sunset,
        refusal_status=section.refusal_status,
    )
