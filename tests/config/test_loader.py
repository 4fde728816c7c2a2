"""Settings: layering, validation messages, and the shipped config file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.config import Address, Settings, SettingsError
from testing.paths import SHIPPED_CONFIG

SHIPPED = SHIPPED_CONFIG


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_the_shipped_config_documents_every_option_with_its_default() -> None:
    text = SHIPPED.read_text()
    assert config.load(SHIPPED, environ={}) == Settings()
    values = tomllib.loads(text)
    for section, key, _default, help in config.documented_keys():
        assert key in values[section], f"{section}.{key} missing from config/gateway.toml"
        assert f"# {help}" in text, f"{section}.{key}: its help line is missing"


def test_defaults_without_a_file() -> None:
    settings = config.load(None, environ={})
    assert settings.server.listen == Address("127.0.0.1", 8080)
    assert settings.upstream.url == ""
    assert settings.patch.max_body_bytes == 65536


def test_layers_flags_over_environment_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[upstream]\nurl = "http://file.example"\nread_timeout = 20\n[server]\nlisten = "127.0.0.1:1111"\n',
    )
    environ = {"IMS_GATEWAY_UPSTREAM_URL": "http://env.example", "IMS_GATEWAY_SERVER_DRAIN_TIMEOUT": "7.5", "HOME": "/x"}
    settings = config.load(path, environ=environ, overrides={"upstream": {"url": "https://flag.example"}})
    assert settings.upstream.url == "https://flag.example"
    assert settings.server.drain_timeout == 7.5
    assert settings.upstream.read_timeout == 20.0
    assert settings.server.listen == Address("127.0.0.1", 1111)
    assert settings.upstream.connect_timeout == 10.0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("IMS_GATEWAY_UPSTREAM_VERIFY_TLS", "false", ("upstream", "verify_tls", False)),
        ("IMS_GATEWAY_UPSTREAM_VERIFY_TLS", "1", ("upstream", "verify_tls", True)),
        ("IMS_GATEWAY_UPSTREAM_POOL_SIZE", "7", ("upstream", "pool_size", 7)),
        ("IMS_GATEWAY_SERVER_ADMIN_LISTEN", "[::1]:9999", ("server", "admin_listen", Address("::1", 9999))),
        (
            "IMS_GATEWAY_POLICY_FORBIDDEN_PREFIXES",
            "__, os_glance,x_",
            ("policy", "forbidden_prefixes", ("__", "os_glance", "x_")),
        ),
    ],
)
def test_environment_values_are_typed(variable: str, value: str, expected: tuple[str, str, Any]) -> None:
    settings = config.load(None, environ={variable: value})
    section, key, wanted = expected
    assert getattr(getattr(settings, section), key) == wanted


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[upstream]\nur = "x"\n', "upstream.ur: unknown key (known: url, connect_timeout"),
        ("[upstreams]\n", "unknown section [upstreams]"),
        ("upstream = 3\n", "upstream: must be a table ([upstream])"),
        ('[upstream]\nconnect_timeout = "5"\n', 'upstream.connect_timeout: "5" is not allowed: expected a number'),
        ("[upstream]\nconnect_timeout = 0\n", "upstream.connect_timeout: 0 is not allowed: expected a number > 0"),
        ("[upstream]\nverify_tls = 1\n", "upstream.verify_tls: 1 is not allowed: expected true or false"),
        ("[upstream]\npool_size = 0\n", "upstream.pool_size: 0 is not allowed: expected a whole number >= 1"),
        ("[upstream]\npool_size = 2.5\n", "upstream.pool_size: 2.5 is not allowed: expected a whole number"),
        ('[upstream]\nurl = "ftp://x"\n', 'upstream.url: "ftp://x" is not allowed: expected an http:// or https:// URL'),
        ('[upstream]\nurl = "http://h:99999"\n', "upstream.url: \"http://h:99999\" is not allowed: expected an http:// or https:// URL with a valid port"),
        ('[upstream]\nca_file = "/nonexistent/ca.pem"\n', 'upstream.ca_file: "/nonexistent/ca.pem" is not allowed: expected the path of a readable file'),
        ('[server]\nlisten = "8080"\n', 'server.listen: "8080" is not allowed: expected HOST:PORT'),
        ('[server]\nlisten = "h:70000"\n', 'server.listen: "h:70000" is not allowed: expected HOST:PORT with a port from 0 to 65535'),
        ('[server]\nlisten = "::1:80"\n', 'server.listen: "::1:80" is not allowed: expected an IPv6 host in brackets, e.g. [::1]:8080'),
        ('[server]\nlisten = "[zz]:80"\n', 'server.listen: "[zz]:80" is not allowed: expected an IPv6 address in the brackets, e.g. [::1]:8080'),
        ('[server]\nlisten = "127.0.0.1:9000"\nadmin_listen = "127.0.0.1:9000"\n', "server.admin_listen: 127.0.0.1:9000 is also server.listen"),
        ("[server]\nmax_header_bytes = 10\n", "expected a whole number >= 1024"),
        ('[logging]\nlevel = "loud"\n', 'logging.level: "loud" is not allowed: expected one of debug, info, warning, error'),
        ("[policy]\nforbidden_prefixes = [1]\n", "policy.forbidden_prefixes: [1] is not allowed: expected a list of strings"),
        ('[policy]\nallowed_system_attributes = ["name", "id"]\n', "policy.allowed_system_attributes: 'id' is also in policy.forbidden_attributes"),
        ("[patch]\nmax_body_bytes = 1\n", "patch.max_body_bytes: 1 is not allowed"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_invalid_files_name_the_key_the_value_and_what_is_allowed(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        config.load(write(tmp_path, text), environ={})
    assert any(problem in line for line in caught.value.problems), caught.value.problems
    assert str(tmp_path) in str(caught.value)


def test_tls_cert_and_key_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError, match="set both"):
        config.load(write(tmp_path, f'[server]\ntls_cert = "{cert}"\n'), environ={})
    with pytest.raises(SettingsError, match=r"only together with upstream\.client_cert"):
        config.load(write(tmp_path, f'[upstream]\nclient_key = "{cert}"\n'), environ={})


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        config.load(write(tmp_path, "[upstream]\npool_size = 0\nread_timeout = -1\nnope = 1\n"), environ={})
    assert len(caught.value.problems) == 3


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the file: No such file or directory"):
        config.load(tmp_path / "absent.toml", environ={})


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("IMS_GATEWAY_UPSTREAM_NOPE", "1", "IMS_GATEWAY_UPSTREAM_NOPE: no such setting"),
        ("IMS_GATEWAY_NOPE", "1", "IMS_GATEWAY_NOPE: no such setting"),
        ("IMS_GATEWAY_UPSTREAM_VERIFY_TLS", "maybe", "IMS_GATEWAY_UPSTREAM_VERIFY_TLS: 'maybe' is not allowed: expected true or false"),
        ("IMS_GATEWAY_UPSTREAM_POOL_SIZE", "many", "expected a whole number"),
        ("IMS_GATEWAY_UPSTREAM_READ_TIMEOUT", "soon", "expected a number"),
        ("IMS_GATEWAY_SERVER_LISTEN", "nowhere", 'server.listen: "nowhere" is not allowed'),
    ],
)
def test_invalid_environment_variables(variable: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        config.load(None, environ={variable: value})
    assert any(problem in line for line in caught.value.problems), caught.value.problems
