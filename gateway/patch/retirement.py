"""Telling clients that PATCH /v2/images/{id} is going away, and staging its shutdown.

Deprecation (RFC 9745), Sunset (RFC 8594) and Link headers, brownout windows and the
refusal after the sunset. Pure: times and paths in, header values and decisions out.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from gateway.patch.target import image_id
from gateway.vocabulary import Reason, Shape

SUCCESSOR_MEDIA_TYPE = "application/json;charset=UTF-8"
INSTANT_FORMAT = 'an RFC 3339 time in UTC, e.g. "2024-06-30T23:59:59Z"'
WINDOW_FORMAT = 'UTC windows "START/END", e.g. "2024-05-02T09:00:00Z/2024-05-02T10:00:00Z"'


def parse_instant(text: str) -> datetime:
    """An RFC 3339 time with a zero UTC offset; ValueError saying what is allowed otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(INSTANT_FORMAT) from None
    if moment.utcoffset() != timedelta(0):
        raise ValueError(INSTANT_FORMAT)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Window:
    """A brownout: from ``start`` (included) to ``end`` (excluded)."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def parse_window(text: str) -> Window:
    start, sep, end = text.partition("/")
    if not sep:
        raise ValueError(f"START/END, each {INSTANT_FORMAT}")
    window = Window(parse_instant(start), parse_instant(end))
    if window.end <= window.start:
        raise ValueError("END after START")
    return window


def parse_windows(texts: Iterable[str]) -> tuple[Window, ...]:
    """Windows in order and not overlapping; ValueError naming the first bad item (1-based)."""
    windows: list[Window] = []
    for number, text in enumerate(texts, 1):
        try:
            window = parse_window(text)
        except ValueError as exc:
            raise ValueError(f"item {number} {text!r}: {exc}") from None
        if windows and window.start < windows[-1].end:
            raise ValueError(f"item {number} {text!r} starts before item {number - 1} ends: in order, not overlapping")
        windows.append(window)
    return tuple(windows)


def deprecation_value(moment: datetime) -> str:
    """RFC 9745: a structured-field Date, ``@`` and whole seconds since the epoch."""
    return f"@{math.floor(moment.timestamp())}"


def sunset_value(moment: datetime) -> str:
    """RFC 8594: an HTTP-date (IMF-fixdate), always GMT."""
    return email.utils.format_datetime(moment.astimezone(UTC).replace(microsecond=0), usegmt=True)


def link_value(target: str, rel: str) -> str:
    return f'<{target}>; rel="{rel}"'


def successor_path(image: str) -> str:
    """IMS's successor resource, "Updating an Image": ``/v2/cloudimages/{id}``."""
    return f"/v2/cloudimages/{quote(image, safe='')}"


def successor_target(raw_path: str) -> str | None:
    """Where an image PATCH goes under successor routing; the query string is kept."""
    image = image_id(raw_path)
    if image is None:
        return None
    _, sep, query = raw_path.partition("?")
    return successor_path(image) + sep + query


@dataclass(frozen=True, slots=True)
class Signals:
    """What responses to one body shape say about the API's retirement."""

    deprecated_at: datetime | None = None
    sunset_at: datetime | None = None
    documentation: str = ""
    sunset_policy: str = ""
    successor_link: bool = False
    # The headers that do not depend on the image, made once per configuration generation.
    _fixed: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    _fixed_links: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fixed = []
        if self.deprecated_at is not None:
            fixed.append(("Deprecation", deprecation_value(self.deprecated_at)))
        if self.sunset_at is not None:
            fixed.append(("Sunset", sunset_value(self.sunset_at)))
        links = []
        if self.documentation:
            links.append(link_value(self.documentation, "deprecation"))
        if self.sunset_policy:
            links.append(link_value(self.sunset_policy, "sunset"))
        object.__setattr__(self, "_fixed_links", tuple(links))
        if links and not self.successor_link:
            fixed.append(("Link", ", ".join(links)))
        object.__setattr__(self, "_fixed", tuple(fixed))

    def links(self, image: str | None, successor_base: str) -> list[str]:
        links = list(self._fixed_links)
        if self.successor_link and image is not None:
            links.append(link_value(successor_base + successor_path(image), "successor-version"))
        return links

    def headers(self, image: str | None, successor_base: str) -> dict[str, str]:
        """The Deprecation, Sunset and Link headers of a response about ``image`` (a new dict)."""
        headers = dict(self._fixed)
        if self.successor_link:
            links = self.links(image, successor_base)
            if links:
                headers["Link"] = ", ".join(links)
        return headers


@dataclass(frozen=True, slots=True)
class Retirement:
    """Why a v2.0-shaped request is refused now: a brownout (until ``until``) or the sunset."""

    kind: Reason  # BROWNOUT or SUNSET
    until: datetime | None


@dataclass(frozen=True, slots=True)
class Schedule:
    """The deprecation schedule of one configuration generation."""

    v20: Signals = Signals()
    v21: Signals = Signals()
    successor_base: str = ""
    v20_brownouts: tuple[Window, ...] = ()
    v20_refuse_after_sunset: bool = True
    refusal_status: int = 410

    def signals(self, shape: Shape | None) -> Signals:
        """The v2.0 signals for v2.0 bodies; the v2.1 ones for every other PATCH /v2/images/{id}."""
        return self.v20 if shape == Shape.V20 else self.v21

    def headers(self, shape: Shape | None, raw_path: str) -> dict[str, str]:
        signals = self.signals(shape)
        # Only the successor-version link names the image: no path to read otherwise.
        image = image_id(raw_path) if signals.successor_link else None
        return signals.headers(image, self.successor_base)

    def retirement(self, moment: datetime) -> Retirement | None:
        """Whether a v2.0-shaped request is refused at ``moment``."""
        sunset = self.v20.sunset_at
        if self.v20_refuse_after_sunset and sunset is not None and moment >= sunset:
            return Retirement(Reason.SUNSET, None)
        for window in self.v20_brownouts:
            if moment in window:
                return Retirement(Reason.BROWNOUT, window.end)
        return None

    def refusal(self, retirement: Retirement, raw_path: str) -> tuple[str, dict[str, str]]:
        """The message and details of a brownout or sunset refusal: what to migrate to, where to read."""
        image = image_id(raw_path)
        successor = self.successor_base + successor_path(image) if image else "/v2/cloudimages/{image_id}"
        if retirement.until is not None:
            when = f"switched off for a scheduled brownout until {_rfc3339(retirement.until)}"
        else:
            when = "retired"
        sunset = self.v20.sunset_at
        if sunset is not None and retirement.kind is Reason.BROWNOUT:
            when += f"; it is retired for good from {_rfc3339(sunset)}"
        message = (
            f"The v2.0 PATCH body shape ({V20_MEDIA_TYPE}) is {when}. Send the same changes as "
            f'{V21_MEDIA_TYPE} ([{{"op": "replace", "path": "/name", "value": "..."}}]), '
            f"or use IMS's successor API PATCH {successor}."
        )
        details = {"migrate_to": V21_MEDIA_TYPE, "successor": successor}
        if self.v20.documentation:
            message += f" See {self.v20.documentation}"
            details["documentation"] = self.v20.documentation
        if retirement.until is not None:
            details["brownout_ends"] = _rfc3339(retirement.until)
        if sunset is not None:
            details["sunset"] = _rfc3339(sunset)
        return message, details


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_now() -> datetime:
    return datetime.now(UTC)
