"""The pure deprecation core, and the headers and refusals a client sees through the gateway."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import config
from gateway.config import SettingsError
from gateway.config.generation import Config
from gateway.patch import retirement as deprecation
from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from gateway.patch.retirement import Retirement, Schedule, Signals, Window
from gateway.service.state import RUNTIME
from gateway.vocabulary import Reason
from testing.paths import SHIPPED_CONFIG
from tests.conftest import Gateway, GatewayFactory, Recorder

IMAGE = "33ad552d-1149-471c-8190-ff6776174a00"
V20_BODY = b'[{"replace": "/name", "value": "x"}]'
V21_BODY = b'[{"op": "replace", "path": "/name", "value": "x"}]'


def at(text: str) -> datetime:
    return deprecation.parse_instant(text)


# -- header syntax ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "value"),
    [
        ("2023-06-30T23:59:59Z", "@1688169599"),
        ("1970-01-01T00:00:00Z", "@0"),
        ("2023-06-30T23:59:59.999Z", "@1688169599"),
        ("2023-06-30T23:59:59+00:00", "@1688169599"),
    ],
)
def test_the_deprecation_header_is_an_rfc9745_structured_date(moment: str, value: str) -> None:
    assert deprecation.deprecation_value(at(moment)) == value


@pytest.mark.parametrize(
    ("moment", "value"),
    [
        ("2024-06-30T23:59:59Z", "Sun, 30 Jun 2024 23:59:59 GMT"),
        ("2025-01-05T07:08:09.5Z", "Sun, 05 Jan 2025 07:08:09 GMT"),
        ("2024-02-29T00:00:00Z", "Thu, 29 Feb 2024 00:00:00 GMT"),
    ],
)
def test_the_sunset_header_is_an_imf_fixdate_in_gmt(moment: str, value: str) -> None:
    assert deprecation.sunset_value(at(moment)) == value


def test_every_header_of_one_shape_with_links_comma_separated() -> None:
    signals = Signals(
        deprecated_at=at("2023-06-30T23:59:59Z"),
        sunset_at=at("2024-06-30T23:59:59Z"),
        documentation="https://docs.example.com/migrate",
        sunset_policy="https://docs.example.com/policy",
        successor_link=True,
    )
    assert signals.headers(IMAGE, "") == {
        "Deprecation": "@1688169599",
        "Sunset": "Sun, 30 Jun 2024 23:59:59 GMT",
        "Link": '<https://docs.example.com/migrate>; rel="deprecation", '
        '<https://docs.example.com/policy>; rel="sunset", '
        f'</v2/cloudimages/{IMAGE}>; rel="successor-version"',
    }


@pytest.mark.parametrize(
    ("signals", "image", "base", "headers"),
    [
        (Signals(), IMAGE, "", {}),
        (Signals(deprecated_at=at("2023-06-30T23:59:59Z")), IMAGE, "", {"Deprecation": "@1688169599"}),
        (Signals(sunset_at=at("2024-06-30T23:59:59Z")), IMAGE, "", {"Sunset": "Sun, 30 Jun 2024 23:59:59 GMT"}),
        (Signals(sunset_policy="https://p.example/s"), IMAGE, "", {"Link": '<https://p.example/s>; rel="sunset"'}),
        (
            Signals(successor_link=True),
            IMAGE,
            "https://ims.example.com",
            {"Link": f'<https://ims.example.com/v2/cloudimages/{IMAGE}>; rel="successor-version"'},
        ),
        (Signals(successor_link=True), "a b>c", "", {"Link": '</v2/cloudimages/a%20b%3Ec>; rel="successor-version"'}),
        (Signals(successor_link=True), None, "", {}),
    ],
)
def test_only_configured_headers_are_sent(signals: Signals, image: str | None, base: str, headers: dict[str, str]) -> None:
    assert signals.headers(image, base) == headers


@pytest.mark.parametrize(
    ("raw_path", "image", "target"),
    [
        (f"/v2/images/{IMAGE}", IMAGE, f"/v2/cloudimages/{IMAGE}"),
        (f"/v2/images/{IMAGE}?a=1", IMAGE, f"/v2/cloudimages/{IMAGE}?a=1"),
        (f"//v2/./images/{IMAGE}/", IMAGE, f"/v2/cloudimages/{IMAGE}"),
        (f"/V2.1/%69mages/{IMAGE}", IMAGE, f"/v2/cloudimages/{IMAGE}"),
        ("/v2/images/a%2520b", "a b", "/v2/cloudimages/a%20b"),
        ("/v2/images", None, None),
        (f"/v2/images/{IMAGE}/extra", None, None),
    ],
)
def test_the_image_id_and_successor_target_come_from_the_path_as_ims_reads_it(
    raw_path: str, image: str | None, target: str | None
) -> None:
    assert deprecation.image_id(raw_path) == image
    assert deprecation.successor_target(raw_path) == target


def test_the_shape_picks_its_signals() -> None:
    schedule = Schedule(v20=Signals(deprecated_at=at("2020-01-01T00:00:00Z")), v21=Signals(sunset_policy="https://p.example"))
    assert schedule.headers("v2.0", f"/v2/images/{IMAGE}") == {"Deprecation": "@1577836800"}
    for shape in ("v2.1", "unsupported", None):
        assert schedule.headers(shape, f"/v2/images/{IMAGE}") == {"Link": '<https://p.example>; rel="sunset"'}


# -- times and windows -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["", "2024-06-30", "2024-06-30T23:59:59", "2024-06-30T23:59:59+02:00", "yesterday", "2024-13-01T00:00:00Z"],
)
def test_only_utc_times_are_instants(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339 time in UTC"):
        deprecation.parse_instant(text)


@pytest.mark.parametrize(
    ("texts", "problem"),
    [
        (["2024-05-02T09:00:00Z"], "item 1 '2024-05-02T09:00:00Z': START/END"),
        (["2024-05-02T09:00:00Z/tomorrow"], "item 1 '2024-05-02T09:00:00Z/tomorrow': an RFC 3339 time in UTC"),
        (["2024-05-02T10:00:00Z/2024-05-02T09:00:00Z"], "END after START"),
        (["2024-05-02T10:00:00Z/2024-05-02T10:00:00Z"], "END after START"),
        (
            ["2024-05-02T09:00:00Z/2024-05-02T10:00:00Z", "2024-05-02T09:30:00Z/2024-05-02T11:00:00Z"],
            "item 2 '2024-05-02T09:30:00Z/2024-05-02T11:00:00Z' starts before item 1 ends",
        ),
        (
            ["2024-06-02T09:00:00Z/2024-06-02T10:00:00Z", "2024-05-02T09:00:00Z/2024-05-02T10:00:00Z"],
            "item 2 '2024-05-02T09:00:00Z/2024-05-02T10:00:00Z' starts before item 1 ends",
        ),
    ],
)
def test_malformed_overlapping_or_unordered_windows_are_refused(texts: list[str], problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        deprecation.parse_windows(texts)
    assert problem in str(caught.value)


def test_back_to_back_windows_are_allowed() -> None:
    windows = deprecation.parse_windows(
        ["2024-05-02T09:00:00Z/2024-05-02T10:00:00Z", "2024-05-02T10:00:00Z/2024-05-02T11:00:00Z"]
    )
    assert windows == (
        Window(at("2024-05-02T09:00:00Z"), at("2024-05-02T10:00:00Z")),
        Window(at("2024-05-02T10:00:00Z"), at("2024-05-02T11:00:00Z")),
    )


BROWNOUT = Window(at("2024-05-02T09:00:00Z"), at("2024-05-02T10:00:00Z"))
SUNSET = at("2024-06-30T23:59:59Z")
TICK = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("moment", "retirement"),
    [
        (BROWNOUT.start - TICK, None),
        (BROWNOUT.start, Retirement(Reason.BROWNOUT, BROWNOUT.end)),
        (BROWNOUT.end - TICK, Retirement(Reason.BROWNOUT, BROWNOUT.end)),
        (BROWNOUT.end, None),
        (SUNSET - TICK, None),
        (SUNSET, Retirement(Reason.SUNSET, None)),
        (SUNSET + timedelta(days=400), Retirement(Reason.SUNSET, None)),
    ],
)
def test_window_boundaries_start_included_end_excluded_and_the_sunset(moment: datetime, retirement: Retirement | None) -> None:
    schedule = Schedule(v20=Signals(sunset_at=SUNSET), v20_brownouts=(BROWNOUT,))
    assert schedule.retirement(moment) == retirement


def test_after_the_sunset_v20_can_stay_accepted() -> None:
    schedule = Schedule(v20=Signals(sunset_at=SUNSET), v20_refuse_after_sunset=False)
    assert schedule.retirement(SUNSET + timedelta(days=1)) is None


def test_a_v21_sunset_refuses_nothing() -> None:
    assert Schedule(v21=Signals(sunset_at=SUNSET)).retirement(SUNSET + timedelta(days=1)) is None


def test_the_refusal_says_what_to_migrate_to_and_links_the_documentation() -> None:
    schedule = Schedule(v20=Signals(sunset_at=SUNSET, documentation="https://docs.example.com/m"))
    message, details = schedule.refusal(Retirement(Reason.BROWNOUT, BROWNOUT.end), f"/v2/images/{IMAGE}")
    assert message == (
        f"The v2.0 PATCH body shape ({V20_MEDIA_TYPE}) is switched off for a scheduled brownout until "
        "2024-05-02T10:00:00Z; it is retired for good from 2024-06-30T23:59:59Z. Send the same changes as "
        f'{V21_MEDIA_TYPE} ([{{"op": "replace", "path": "/name", "value": "..."}}]), '
        f"or use IMS's successor API PATCH /v2/cloudimages/{IMAGE}. See https://docs.example.com/m"
    )
    assert details == {
        "migrate_to": V21_MEDIA_TYPE,
        "successor": f"/v2/cloudimages/{IMAGE}",
        "documentation": "https://docs.example.com/m",
        "brownout_ends": "2024-05-02T10:00:00Z",
        "sunset": "2024-06-30T23:59:59Z",
    }
    message, details = Schedule().refusal(Retirement(Reason.SUNSET, None), "/v2/images")
    assert "is retired. " in message
    assert details == {"migrate_to": V21_MEDIA_TYPE, "successor": "/v2/cloudimages/{image_id}"}


# -- configuration -------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[deprecation]\nv20_deprecated_at = "2024-06-30T23:59:59Z"\nv20_sunset_at = "2024-06-30T23:59:58Z"\n',
            "deprecation.v20_sunset_at: 2024-06-30T23:59:58Z is before deprecation.v20_deprecated_at (2024-06-30T23:59:59Z)",
        ),
        (
            '[deprecation]\nv21_deprecated_at = "2025-01-01T00:00:00Z"\nv21_sunset_at = "2024-01-01T00:00:00Z"\n',
            "deprecation.v21_sunset_at: 2024-01-01T00:00:00Z is before deprecation.v21_deprecated_at",
        ),
        (
            '[deprecation]\nv20_sunset_at = "2024-06-30"\n',
            'deprecation.v20_sunset_at: "2024-06-30" is not allowed: expected an RFC 3339 time in UTC',
        ),
        (
            '[deprecation]\nv21_deprecated_at = "2024-06-30T12:00:00+08:00"\n',
            'deprecation.v21_deprecated_at: "2024-06-30T12:00:00+08:00" is not allowed',
        ),
        (
            "[deprecation]\nv20_deprecated_at = 2024-06-30T12:00:00Z\n",
            "deprecation.v20_deprecated_at: datetime.datetime(2024, 6, 30, 12, 0, tzinfo=datetime.timezone.utc) is not allowed: expected a string",
        ),
        (
            '[deprecation]\nv20_brownouts = ["2024-05-02T10:00:00Z/2024-05-02T09:00:00Z"]\n',
            "deprecation.v20_brownouts: ['2024-05-02T10:00:00Z/2024-05-02T09:00:00Z'] is not allowed: "
            'expected UTC windows "START/END"',
        ),
        (
            '[deprecation]\nv20_brownouts = ["2024-05-02T09:00:00Z/2024-05-02T11:00:00Z", "2024-05-02T10:00:00Z/2024-05-02T12:00:00Z"]\n',
            "starts before item 1 ends",
        ),
        ('[deprecation]\nv20_documentation = "docs.example.com"\n', 'deprecation.v20_documentation: "docs.example.com" is not allowed: expected an absolute http'),
        ('[deprecation]\nv21_documentation = "ftp://docs.example.com/x"\n', "deprecation.v21_documentation:"),
        ('[deprecation]\nv20_sunset_policy = "https://docs.example.com/a b"\n', "deprecation.v20_sunset_policy:"),
        ('[deprecation]\nv21_sunset_policy = "https://docs.example.com/>"\n', "deprecation.v21_sunset_policy:"),
        ('[deprecation]\nsuccessor_base = "https://"\n', "deprecation.successor_base:"),
        ("[deprecation]\nrefusal_status = 302\n", "deprecation.refusal_status: 302 is not allowed: expected an HTTP status from 400 to 599"),
        ("[deprecation]\nrefusal_status = 600\n", "deprecation.refusal_status: 600 is not allowed"),
        ('[patch]\nmode = "audit"\n', 'patch.mode: "audit" is not allowed: expected one of enforce, observe'),
        (
            '[patch]\nmode = "observe"\nsuccessor_routing = true\n',
            'patch.successor_routing: needs patch.mode = "enforce"',
        ),
        ("[patch]\nrewrite = false\nsuccessor_routing = true\n", "patch.rewrite: must be true with patch.successor_routing"),
    ],
)
def test_invalid_deprecation_settings_name_the_key(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        config.load(write(tmp_path, text), environ={})
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_a_full_schedule_from_file_and_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[deprecation]\nv20_deprecated_at = "2023-06-30T23:59:59Z"\nv20_sunset_at = "2023-06-30T23:59:59Z"\n'
        'v20_documentation = "https://docs.example.com/m?x=1#y"\nsuccessor_base = "https://ims.example.com/"\n',
    )
    environ = {
        "IMS_GATEWAY_DEPRECATION_V20_BROWNOUTS": "2023-05-02T09:00:00Z/2023-05-02T10:00:00Z,2023-06-02T09:00:00Z/2023-06-02T10:00:00Z",
        "IMS_GATEWAY_DEPRECATION_REFUSAL_STATUS": "404",
    }
    schedule = Config.from_settings(config.load(path, environ=environ)).schedule
    assert schedule.v20.deprecated_at == schedule.v20.sunset_at == at("2023-06-30T23:59:59Z")
    assert schedule.successor_base == "https://ims.example.com"
    assert len(schedule.v20_brownouts) == 2
    assert schedule.refusal_status == 404


# -- through the gateway ---------------------------------------------------------------------

HEADERS_V20 = {
    "v20_deprecated_at": "2023-06-30T23:59:59Z",
    "v20_sunset_at": "2024-06-30T23:59:59Z",
    "v20_documentation": "https://docs.example.com/v20",
    "v20_sunset_policy": "https://docs.example.com/sunset",
    "v20_successor_link": True,
}
HEADERS_V21 = {"v21_deprecated_at": "2025-10-22T00:00:00Z", "v21_successor_link": True}
V20_HEADERS = {
    "Deprecation": "@1688169599",
    "Sunset": "Sun, 30 Jun 2024 23:59:59 GMT",
    "Link": '<https://docs.example.com/v20>; rel="deprecation", <https://docs.example.com/sunset>; rel="sunset", '
    f'</v2/cloudimages/{IMAGE}>; rel="successor-version"',
}
V21_HEADERS = {
    "Deprecation": "@1761091200",
    "Link": f'</v2/cloudimages/{IMAGE}>; rel="successor-version"',
}
BEFORE_SUNSET = at("2024-01-01T00:00:00Z")


@pytest.fixture
async def announcing(recorder: Recorder, make_gateway: GatewayFactory) -> Gateway:
    gateway = await make_gateway(recorder.url, deprecation={**HEADERS_V20, **HEADERS_V21})
    gateway.app[RUNTIME].clock = lambda: BEFORE_SUNSET
    return gateway


async def patch(
    http: aiohttp.ClientSession, gateway: Gateway, content_type: str | None, body: bytes, path: str = f"/v2/images/{IMAGE}", **headers: str
) -> tuple[int, Any, Any]:
    sent = dict(headers)
    if content_type is not None:
        sent["Content-Type"] = content_type
    async with http.patch(gateway.url + path, data=body, headers=sent) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None, response.headers


def signals_of(headers: Any) -> dict[str, str]:
    return {name: ", ".join(headers.getall(name)) for name in ("Deprecation", "Sunset", "Link") if name in headers}


@pytest.mark.parametrize(
    ("content_type", "body", "status", "expected"),
    [
        (V20_MEDIA_TYPE, V20_BODY, 200, V20_HEADERS),
        (V21_MEDIA_TYPE, V21_BODY, 200, V21_HEADERS),
        (V20_MEDIA_TYPE, b'[{"replace": "/status", "value": "x"}]', 400, V20_HEADERS),
        (V21_MEDIA_TYPE, b"[", 400, V21_HEADERS),
        ("application/json", V21_BODY, 415, V21_HEADERS),
        (None, V21_BODY, 415, V21_HEADERS),
    ],
)
async def test_patch_responses_carry_the_headers_of_their_shape_refusals_included(
    announcing: Gateway, http: aiohttp.ClientSession, content_type: str | None, body: bytes, status: int, expected: dict[str, str]
) -> None:
    got, _, headers = await patch(http, announcing, content_type, body)
    assert got == status
    assert signals_of(headers) == expected


async def test_an_upstream_failure_answer_carries_them_too(make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    from testing.ports import refusing_port

    with refusing_port() as port:  # held: nothing else can start listening there meanwhile
        gateway = await make_gateway(f"http://127.0.0.1:{port}", deprecation=HEADERS_V21)
        status, _, headers = await patch(http, gateway, V21_MEDIA_TYPE, V21_BODY)
    assert status == 502
    assert signals_of(headers) == V21_HEADERS


async def test_other_requests_carry_none(announcing: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(announcing.url + f"/v2/images/{IMAGE}") as response:
        assert response.status == 200
        assert signals_of(response.headers) == {}


async def test_upstream_link_values_are_kept_ahead_of_ours(announcing: Gateway, recorder: Recorder, http: aiohttp.ClientSession) -> None:
    from aiohttp import web

    async def with_links(request: web.Request, seen: Any) -> web.StreamResponse:
        response = web.json_response({}, headers={"Deprecation": "@1", "Sunset": "x"})
        response.headers.add("Link", "<https://ims.example.com/a>; rel=\"help\"")
        response.headers.add("Link", "<https://ims.example.com/b>; rel=\"about\"")
        return response

    recorder.respond = with_links
    _, _, headers = await patch(http, announcing, V21_MEDIA_TYPE, V21_BODY)
    assert headers.getall("Link") == [
        '<https://ims.example.com/a>; rel="help", <https://ims.example.com/b>; rel="about", ' + V21_HEADERS["Link"]
    ]
    # Ours replace IMS's where configured; IMS's own pass where not.
    assert headers.getall("Deprecation") == ["@1761091200"]
    assert headers.getall("Sunset") == ["x"]


async def test_without_configuration_no_header_is_added(recorder: Recorder, make_gateway: GatewayFactory, http: aiohttp.ClientSession) -> None:
    gateway = await make_gateway(recorder.url)
    for content_type, body in ((V20_MEDIA_TYPE, V20_BODY), (V21_MEDIA_TYPE, V21_BODY), ("text/plain", b"x")):
        _, _, headers = await patch(http, gateway, content_type, body)
        assert signals_of(headers) == {}


# -- brownouts and the sunset through the gateway ------------------------------------------------

SCHEDULE = {
    "v20_deprecated_at": "2023-06-30T23:59:59Z",
    "v20_sunset_at": "2024-06-30T23:59:59Z",
    "v20_documentation": "https://docs.example.com/v20",
    "v20_brownouts": ["2024-05-02T09:00:00Z/2024-05-02T10:00:00Z", "2024-06-02T09:00:00Z/2024-06-02T21:00:00Z"],
}


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


async def scheduled(make_gateway: GatewayFactory, recorder: Recorder, clock: Clock, **deprecation_settings: Any) -> Gateway:
    gateway = await make_gateway(recorder.url, deprecation={**SCHEDULE, **deprecation_settings})
    gateway.app[RUNTIME].clock = clock
    return gateway


@pytest.mark.parametrize(
    ("moment", "refused"),
    [
        ("2024-05-02T08:59:59.999999Z", False),
        ("2024-05-02T09:00:00Z", True),
        ("2024-05-02T09:59:59.999999Z", True),
        ("2024-05-02T10:00:00Z", False),
        ("2024-06-02T20:00:00Z", True),
        ("2024-06-30T23:59:58Z", False),
        ("2024-06-30T23:59:59Z", True),
        ("2030-01-01T00:00:00Z", True),
    ],
)
async def test_v20_is_refused_in_windows_and_after_the_sunset(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession, moment: str, refused: bool
) -> None:
    gateway = await scheduled(make_gateway, recorder, Clock(at(moment)))
    status, returned, headers = await patch(http, gateway, V20_MEDIA_TYPE, V20_BODY)
    if refused:
        assert status == 410
        assert returned["error"]["code"] == "IMSGW.0410"
        assert "https://docs.example.com/v20" in returned["error"]["message"]
        assert returned["error"]["details"]["migrate_to"] == V21_MEDIA_TYPE
        assert recorder.seen == []
    else:
        assert status == 200
        assert len(recorder.seen) == 1
    assert headers["Deprecation"] == "@1688169599"
    assert headers["Sunset"] == "Sun, 30 Jun 2024 23:59:59 GMT"


async def test_v21_bodies_are_never_refused_by_the_schedule(make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession) -> None:
    gateway = await scheduled(make_gateway, recorder, Clock(at("2024-05-02T09:30:00Z")), v21_sunset_at="2024-01-01T00:00:00Z")
    assert (await patch(http, gateway, V21_MEDIA_TYPE, V21_BODY))[0] == 200
    gateway.app[RUNTIME].clock = Clock(at("2031-01-01T00:00:00Z"))
    assert (await patch(http, gateway, V21_MEDIA_TYPE, V21_BODY))[0] == 200
    assert len(recorder.seen) == 2


async def test_the_brownout_refusal_is_ims_shaped_with_the_configured_status(
    make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession
) -> None:
    gateway = await scheduled(make_gateway, recorder, Clock(at("2024-05-02T09:30:00Z")), refusal_status=400)
    status, returned, headers = await patch(http, gateway, V20_MEDIA_TYPE, V20_BODY, **{"X-Request-Id": "req-brownout"})
    assert status == 400
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert returned == {
        "error": {
            "code": "IMSGW.0410",
            "message": returned["error"]["message"],
            "details": {
                "migrate_to": V21_MEDIA_TYPE,
                "successor": f"/v2/cloudimages/{IMAGE}",
                "documentation": "https://docs.example.com/v20",
                "brownout_ends": "2024-05-02T10:00:00Z",
                "sunset": "2024-06-30T23:59:59Z",
            },
            "request_id": "req-brownout",
        }
    }
    assert returned["error"]["message"].startswith(
        f"The v2.0 PATCH body shape ({V20_MEDIA_TYPE}) is switched off for a scheduled brownout until 2024-05-02T10:00:00Z"
    )


async def test_a_brownout_refuses_before_reading_the_body(make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession) -> None:
    gateway = await scheduled(make_gateway, recorder, Clock(at("2024-05-02T09:30:00Z")))
    status, returned, _ = await patch(http, gateway, V20_MEDIA_TYPE, b"not even json")
    assert (status, returned["error"]["code"]) == (410, "IMSGW.0410")


async def test_after_the_sunset_v20_can_keep_being_rewritten(make_gateway: GatewayFactory, recorder: Recorder, http: aiohttp.ClientSession) -> None:
    gateway = await scheduled(make_gateway, recorder, Clock(at("2030-01-01T00:00:00Z")), v20_refuse_after_sunset=False)
    status, _, headers = await patch(http, gateway, V20_MEDIA_TYPE, V20_BODY)
    assert status == 200
    assert recorder.seen[0].body == V21_BODY
    assert recorder.seen[0].headers["Content-Type"] == V21_MEDIA_TYPE
    assert headers["Sunset"] == "Sun, 30 Jun 2024 23:59:59 GMT"


def test_the_shipped_config_ships_no_schedule() -> None:
    settings = config.load(SHIPPED_CONFIG, environ={})
    assert settings.deprecation == config.DeprecationSettings()
    assert settings.patch.mode == "enforce"
    assert settings.patch.rewrite is True
    assert settings.patch.successor_routing is False
