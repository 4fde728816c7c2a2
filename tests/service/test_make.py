"""`make run` and `make test` as a newcomer types them: what they install, when, and what
they print. The Makefile runs for real, against a venv whose pip and ims-gateway are
stand-ins that record how they were called."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testing.paths import REPO

pytestmark = pytest.mark.e2e

BANNER = "Successfully installed ims-gateway-0 (an editable install's banner)"


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A venv the Makefile takes as made: bin/python exists; pip and ims-gateway record their arguments."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("")
    for name in ("pip", "ims-gateway"):
        script = bin_dir / name
        script.write_text(
            f'#!/bin/sh\necho "$*" >> "{tmp_path}/{name}.calls"\n'
            + ('[ -f "$0.fails" ] && { echo "ERROR: no matching distribution"; exit 1; }\n' if name == "pip" else "")
            + (f'echo "{BANNER}"\n' if name == "pip" else 'echo "serving"\n')
        )
        script.chmod(0o755)
    return tmp_path / "venv"


def make(target: str, venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), target, f"VENV={venv}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def calls(venv: Path, name: str) -> list[str]:
    path = venv.parent / f"{name}.calls"
    return path.read_text().splitlines() if path.exists() else []


def test_make_run_installs_the_runtime_dependencies_once_and_quietly(venv: Path) -> None:
    first = make("run", venv)
    assert first.returncode == 0, first.stderr
    assert calls(venv, "pip") == ["install --quiet -e .[uvloop]"]  # no test extras
    assert BANNER not in first.stdout + first.stderr
    assert first.stdout.splitlines()[0].startswith("installing ims-gateway and its runtime dependencies into")
    assert first.stdout.splitlines()[-1] == "serving"
    assert calls(venv, "ims-gateway") == ["serve --config config/gateway.toml"]

    again = make("run", venv)
    assert again.returncode == 0
    assert calls(venv, "pip") == ["install --quiet -e .[uvloop]"]  # nothing changed, nothing installed
    assert "installing" not in again.stdout
    assert calls(venv, "ims-gateway") == ["serve --config config/gateway.toml"] * 2


def test_make_install_keeps_the_test_extras_and_make_run_then_installs_nothing(venv: Path) -> None:
    assert make("install", venv).returncode == 0
    assert calls(venv, "pip") == ["install --quiet -e .[test,uvloop]"]
    assert make("install", venv).returncode == 0
    assert make("run", venv).returncode == 0
    assert calls(venv, "pip") == ["install --quiet -e .[test,uvloop]"]


def test_a_changed_pyproject_installs_again(venv: Path) -> None:
    assert make("run", venv).returncode == 0
    os.utime(venv / ".installed-runtime", (0, 0))  # older than pyproject.toml, as after editing it
    assert make("run", venv).returncode == 0
    assert calls(venv, "pip") == ["install --quiet -e .[uvloop]"] * 2


def test_a_failing_install_shows_pips_output_and_runs_nothing(venv: Path) -> None:
    (venv / "bin" / "pip.fails").write_text("")
    result = make("run", venv)
    assert result.returncode != 0
    assert "ERROR: no matching distribution" in result.stdout
    assert calls(venv, "ims-gateway") == []
    assert not (venv / ".installed-runtime").exists()  # the next make run tries again


def test_installing_glance_says_so_on_the_terminal_under_pytests_capture(tmp_path: Path) -> None:
    """`make test` on a terminal: the line is seen while the install runs, not only in a failure's captured output."""
    (tmp_path / "test_install.py").write_text(
        textwrap.dedent(
            """
            import testing.glance as glance

            def test_first_run(tmp_path, monkeypatch):
                monkeypatch.setattr(glance, "_install", lambda venv, log: None)
                monkeypatch.setattr(glance, "_freeze", lambda venv: {"glance": "33"})
                glance.ensure_env(tmp_path / "cache")
            """
        )
    )
    main, terminal = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    # A session of its own whose controlling terminal is the pty, as a shell gives `make test`.
    on_the_terminal = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execv(sys.executable, [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'test_install.py'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", on_the_terminal],
        cwd=tmp_path, env=env, stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    assert proc.wait(timeout=60) == 0
    text = seen.decode().replace("\r\n", "\n")
    assert "1 passed" in text
    (line,) = [line for line in text.splitlines() if line.startswith("installing Glance 33 into ")]
    assert line.endswith("/cache/glance-venv for tests/glance (about a minute, once)")
