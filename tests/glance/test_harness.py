"""The parts of the harness and the client driver that need no running Glance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testing.glance import _read_record, requirements_key

from .client_flow import parse_table

pytestmark = [pytest.mark.glance, pytest.mark.e2e]


def write_cache(root: Path, key: str, *, with_python: bool = True) -> Path:
    venv = root / "glance-venv"
    (venv / "bin").mkdir(parents=True)
    if with_python:
        (venv / "bin" / "python").write_text("")
    record = root / "glance-venv.versions.json"
    record.write_text(json.dumps({"key": key, "versions": {"glance": "33.0.0", "python": "3.11.7"}}))
    return record


def test_a_record_for_the_current_requirements_is_reused(tmp_path: Path) -> None:
    record = write_cache(tmp_path, requirements_key())

    env = _read_record(record, requirements_key(), tmp_path / "glance-venv")

    assert env is not None
    assert env.versions["glance"] == "33.0.0"
    assert env.install_seconds is None


def test_a_record_for_other_requirements_forces_a_reinstall(tmp_path: Path) -> None:
    record = write_cache(tmp_path, "0" * 64)

    assert _read_record(record, requirements_key(), tmp_path / "glance-venv") is None


def test_a_venv_without_python_forces_a_reinstall(tmp_path: Path) -> None:
    record = write_cache(tmp_path, requirements_key(), with_python=False)

    assert _read_record(record, requirements_key(), tmp_path / "glance-venv") is None


def test_glance_cli_tables_are_read_with_wrapped_values() -> None:
    table = """\
+---------------+----------------------------------+
| Property      | Value                            |
+---------------+----------------------------------+
| id            | 1303d76e-7246-44c9-8353          |
| os_hash_value | cf83e1357eefb8bdf1542850d66d8007 |
|               | ff8318d2877eec2f63b931bd47417a81 |
| name          | a | b                            |
+---------------+----------------------------------+
"""
    assert parse_table(table) == {
        "id": "1303d76e-7246-44c9-8353",
        "os_hash_value": "cf83e1357eefb8bdf1542850d66d8007ff8318d2877eec2f63b931bd47417a81",
        "name": "a | b",
    }
