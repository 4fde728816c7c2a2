"""[report] store, retention and replica: the grammar, the messages, and a password never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.config.schema import parse_duration
from gateway.service.cli import main
from gateway.telemetry.stores.spec import (
    MEMORY,
    REDIS,
    SQLITE,
    StoreSpec,
    effective,
    hide_password,
    parse_store,
    state_directory,
)

SECRET = "s3cr3t-p4ss"


@pytest.mark.parametrize(
    ("text", "kind", "shown"),
    [
        ("", "auto", "auto"),
        ("memory", MEMORY, "memory"),
        ("sqlite", SQLITE, "sqlite"),
        ("sqlite:///var/lib/ims-gateway/report.sqlite", SQLITE, "sqlite:///var/lib/ims-gateway/report.sqlite"),
        ("redis://redis:6379/0", REDIS, "redis://redis:6379/0"),
        ("redis://redis", REDIS, "redis://redis"),
        (f"redis://:{SECRET}@redis:6379/1", REDIS, "redis://:***@redis:6379/1"),
        (f"rediss://gateway:{SECRET}@dcs.example:6380", REDIS, "rediss://gateway:***@dcs.example:6380"),
        ("redis://gateway@redis/2", REDIS, "redis://gateway@redis/2"),
        ("redis://[::1]:6379", REDIS, "redis://[::1]:6379"),
    ],
)
def test_the_stores_an_operator_may_name(text: str, kind: str, shown: str) -> None:
    spec = parse_store(text)
    assert (spec.kind, spec.shown) == (kind, shown)
    assert SECRET not in repr(spec)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Memory", "memory, sqlite, sqlite:///ABSOLUTE/PATH, redis://"),
        ("postgres://db/report", "memory, sqlite, sqlite:///ABSOLUTE/PATH, redis://"),
        ("sqlite://relative/report.sqlite", "sqlite:///ABSOLUTE/PATH of a file"),
        ("sqlite:///var/lib/ims-gateway/", "sqlite:///ABSOLUTE/PATH of a file"),
        ("redis://", "a redis:// URL with a host"),
        ("redis://redis:0", "a redis:// URL with a host"),
        ("redis://redis:99999", "a port from 1 to 65535"),
        ("redis://redis:6379/zero", "whose path is a database number"),
        ("redis://redis:6379/0?ssl_cert_reqs=none", "without ?query or #fragment"),
    ],
)
def test_an_impossible_store_is_refused_saying_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("/", "/")):
        parse_store(text)


def test_a_bad_store_is_a_configuration_error_that_never_repeats_the_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[report]\nstore = "redis://:{SECRET}@redis:6379/db"\nretention = "30"\nreplica = "-bad"\n')
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert '  - report.store: "redis://***@redis:6379/db" is not allowed: expected a redis:// URL whose path is a database number' in err
    assert '  - report.retention: "30" is not allowed: expected a duration > 0: a number and s, m, h or d' in err
    assert '  - report.replica: "-bad" is not allowed: expected 1-63 of A-Z a-z 0-9 . _ -' in err
    assert SECRET not in err


def test_a_good_store_passes_check_config_without_being_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'[report]\nstore = "rediss://:{SECRET}@redis:6380/0"\nretention = "12h"\nreplica = "pod-1.zone-a"\n')
    assert main(["check-config", str(good)]) == 0
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    settings = config.load(good, environ={})
    assert (settings.report.retention_seconds, settings.report.replica) == (43200.0, "pod-1.zone-a")


def test_the_store_comes_from_the_environment_too() -> None:
    settings = config.load(None, environ={"IMS_GATEWAY_REPORT_STORE": "memory", "IMS_GATEWAY_REPORT_STORE_TIMEOUT": "0.5"})
    assert (settings.report.store, settings.report.store_timeout) == ("memory", 0.5)


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2592000.0), ("12h", 43200.0), ("90m", 5400.0), ("2s", 2.0), ("0.5s", 0.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "0d", "1w", "-1d", "1 d", "d"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("environ", "directory"),
    [
        ({"XDG_STATE_HOME": "/srv/state", "HOME": "/home/op"}, "/srv/state/ims-gateway"),
        ({"XDG_STATE_HOME": "relative", "HOME": "/home/op"}, "/home/op/.local/state/ims-gateway"),
        ({"HOME": "/home/op"}, "/home/op/.local/state/ims-gateway"),
    ],
)
def test_the_state_directory(environ: dict[str, str], directory: str) -> None:
    assert state_directory(environ) == Path(directory)


@pytest.mark.parametrize(
    ("text", "workers", "shown"),
    [
        ("", 1, "memory"),
        ("", 4, "sqlite:///srv/state/ims-gateway/report.sqlite"),
        ("sqlite", 1, "sqlite:///srv/state/ims-gateway/report.sqlite"),
        ("memory", 4, "memory"),
        ("sqlite:///data/r.sqlite", 4, "sqlite:///data/r.sqlite"),
        ("redis://redis", 4, "redis://redis"),
    ],
)
def test_the_store_a_gateway_uses(text: str, workers: int, shown: str) -> None:
    assert effective(parse_store(text), workers, {"XDG_STATE_HOME": "/srv/state"}).shown == shown


def test_passwords_are_hidden_in_any_text() -> None:
    text = f"Error connecting to redis://user:{SECRET}@h:1/0 and rediss://:{SECRET}@h2"
    assert hide_password(text) == "Error connecting to redis://user:***@h:1/0 and rediss://:***@h2"
    assert StoreSpec(REDIS, url=f"redis://:{SECRET}@h").shown == "redis://:***@h"
