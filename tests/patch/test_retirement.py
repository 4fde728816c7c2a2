"""The deprecation schedule's values as the headers and refusals show them, whatever the
machine's time zone (the container runs in UTC; an operator's laptop may not)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.patch.retirement import (
    Retirement,
    Schedule,
    Signals,
    Window,
    parse_instant,
    parse_window,
    successor_path,
    sunset_value,
    utc_now,
)
from gateway.vocabulary import Reason

SUNSET = datetime(2024, 6, 30, 23, 59, 59, tzinfo=UTC)
BROWNOUT = Window(datetime(2024, 5, 2, 9, tzinfo=UTC), datetime(2024, 5, 2, 10, tzinfo=UTC))


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone 5 h 30 min east of UTC (a POSIX TZ: no tzdata needed)."""
    monkeypatch.setenv("TZ", "IST-05:30")
    time.tzset()
    assert time.timezone == -(5 * 3600 + 30 * 60)
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_clock_is_aware_and_in_utc(far_from_utc: None) -> None:
    now = utc_now()
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_an_instant_reads_as_utc_whatever_the_local_zone(far_from_utc: None) -> None:
    moment = parse_instant("2024-06-30T23:59:59Z")
    assert moment.utcoffset() == timedelta(0)
    assert moment.isoformat() == "2024-06-30T23:59:59+00:00"


def test_the_sunset_header_is_gmt_whatever_the_local_zone(far_from_utc: None) -> None:
    assert sunset_value(SUNSET) == "Sun, 30 Jun 2024 23:59:59 GMT"
    assert dict(Signals(sunset_at=SUNSET).headers(None, ""))["Sunset"] == "Sun, 30 Jun 2024 23:59:59 GMT"


def test_a_brownout_refusal_names_its_end_in_utc_whatever_the_local_zone(far_from_utc: None) -> None:
    message, details = Schedule(v20=Signals(sunset_at=SUNSET)).refusal(Retirement(Reason.BROWNOUT, BROWNOUT.end), "/v2/images/a")
    assert details["brownout_ends"] == "2024-05-02T10:00:00Z"
    assert details["sunset"] == "2024-06-30T23:59:59Z"
    assert "until 2024-05-02T10:00:00Z; it is retired for good from 2024-06-30T23:59:59Z." in message


def test_a_brownout_without_a_sunset_says_nothing_of_retiring_for_good() -> None:
    message, details = Schedule().refusal(Retirement(Reason.BROWNOUT, BROWNOUT.end), "/v2/images/a")
    assert "for good" not in message
    assert "sunset" not in details
    assert details["brownout_ends"] == "2024-05-02T10:00:00Z"


def test_a_sunset_refusal_says_retired_once() -> None:
    message, details = Schedule(v20=Signals(sunset_at=SUNSET)).refusal(Retirement(Reason.SUNSET, None), "/v2/images/a")
    assert " is retired. Send the same changes" in message
    assert "for good" not in message
    assert details["sunset"] == "2024-06-30T23:59:59Z"


def test_a_window_that_ends_before_it_starts_says_so() -> None:
    with pytest.raises(ValueError, match=r"^END after START$"):
        parse_window("2024-05-02T10:00:00Z/2024-05-02T09:00:00Z")


def test_a_successor_path_keeps_the_image_id_one_segment() -> None:
    assert successor_path("a/b c") == "/v2/cloudimages/a%2Fb%20c"


def test_every_documentation_link_goes_in_one_link_header() -> None:
    signals = Signals(documentation="https://docs.example/m", sunset_policy="https://docs.example/p")
    assert signals.headers(None, "")["Link"] == '<https://docs.example/m>; rel="deprecation", <https://docs.example/p>; rel="sunset"'


def test_a_brownout_includes_its_start_and_excludes_its_end() -> None:
    schedule = Schedule(v20_brownouts=(BROWNOUT,))
    tick = timedelta(microseconds=1)
    assert schedule.retirement(BROWNOUT.start - tick) is None
    assert schedule.retirement(BROWNOUT.start) == Retirement(Reason.BROWNOUT, BROWNOUT.end)
    assert schedule.retirement(BROWNOUT.end - tick) == Retirement(Reason.BROWNOUT, BROWNOUT.end)
    assert schedule.retirement(BROWNOUT.end) is None
