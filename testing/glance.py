"""A real OpenStack Glance on 127.0.0.1: its own cached virtualenv, a throwaway
configuration (sqlite, filesystem store, no authentication) and a gunicorn process.

Glance and the OpenStack clients never enter the gateway's virtualenv: they live in
``$GLANCE_HARNESS_CACHE/glance-venv`` (default ``~/.cache/ims-gateway``), rebuilt when
requirements.txt, constraints.txt or the Python version change.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

LOG = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "glance-requirements.txt"
DESERIALIZER = HERE / "glance_deserializer.py"
CONSTRAINTS = HERE / "glance-constraints.txt"

# The packages whose versions a report names; the JSON file keeps the full freeze.
REPORTED_PACKAGES = (
    "glance",
    "glance-store",
    "python-glanceclient",
    "openstacksdk",
    "keystoneauth1",
    "gunicorn",
    "webob",
    "oslo-policy",
)

INSTALL_TIMEOUT_S = 1800
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class GlanceEnv:
    """The virtualenv holding Glance, gunicorn, python-glanceclient and openstacksdk."""

    root: Path
    versions: Mapping[str, str]
    install_seconds: float | None = None

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def script(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def reported_versions(self) -> dict[str, str]:
        found = {k: v for k, v in self.versions.items() if k in REPORTED_PACKAGES}
        return {"python": self.versions["python"], **found}


@dataclass(frozen=True)
class GlanceServer:
    """A running Glance API; ``url`` has no trailing slash."""

    url: str
    workdir: Path
    env: GlanceEnv
    pid: int
    log: Path = field(repr=False)
    access_log: Path = field(repr=False)

    @property
    def versions(self) -> Mapping[str, str]:
        return self.env.versions


def cache_dir() -> Path:
    configured = os.environ.get("GLANCE_HARNESS_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "ims-gateway"


def requirements_key() -> str:
    """A digest of everything that decides what the virtualenv holds."""
    digest = hashlib.sha256()
    digest.update(f"{sys.implementation.name} {sys.version_info[:2]}\n".encode())
    digest.update(REQUIREMENTS.read_bytes())
    digest.update(CONSTRAINTS.read_bytes())
    return digest.hexdigest()


def ensure_env(cache: Path | None = None) -> GlanceEnv:
    """Return the cached Glance virtualenv, installing it first when it is missing or
    stale. A file lock keeps concurrent test processes from installing at once."""
    root = cache or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / "glance-venv"
    record = root / "glance-venv.versions.json"
    key = requirements_key()
    with _file_lock(root / "glance-venv.lock"):
        cached = _read_record(record, key, venv)
        if cached is not None:
            return cached
        _tell_the_terminal(f"installing Glance 33 into {venv} for tests/glance (about a minute, once)")
        started = time.monotonic()
        _install(venv, root / "glance-venv.install.log")
        elapsed = time.monotonic() - started
        LOG.warning("installed Glance virtualenv at %s in %.1f s", venv, elapsed)
        versions = _freeze(venv)
        record.write_text(
            json.dumps(
                {"key": key, "install_seconds": round(elapsed, 1), "versions": versions},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        return GlanceEnv(venv, versions, elapsed)


def _tell_the_terminal(line: str) -> None:
    """A line the person waiting sees at once: pytest captures stderr (fd 2 too) while a
    fixture runs, so the controlling terminal itself, when there is one."""
    try:
        with open("/dev/tty", "w", encoding="utf-8") as tty:
            tty.write(f"\n{line}\n")
    except OSError:
        print(line, file=sys.__stderr__, flush=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_record(record: Path, key: str, venv: Path) -> GlanceEnv | None:
    if not record.is_file() or not (venv / "bin" / "python").is_file():
        return None
    data = json.loads(record.read_text())
    if data.get("key") != key:
        return None
    return GlanceEnv(venv, data["versions"])


def _install(venv: Path, log: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    with log.open("w") as out:
        _run_logged([sys.executable, "-m", "venv", str(venv)], out, log)
        _run_logged(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                str(REQUIREMENTS),
                "-c",
                str(CONSTRAINTS),
            ],
            out,
            log,
        )


def _run_logged(argv: list[str], out: TextIO, log: Path) -> None:
    result = subprocess.run(
        argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} ... failed with exit code {result.returncode}:\n"
            + _tail(log)
        )


def _freeze(venv: Path) -> dict[str, str]:
    script = (
        "import importlib.metadata as m, json, platform\n"
        "v = {d.metadata['Name'].lower().replace('_', '-').replace('.', '-'): d.version"
        " for d in m.distributions()}\n"
        "v['python'] = platform.python_version()\n"
        "print(json.dumps(v))\n"
    )
    output = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return dict(sorted(json.loads(output).items()))


def deserialize(env: GlanceEnv, requests: list[tuple[str | None, bytes | None]]) -> list[dict[str, Any]]:
    """Glance's RequestDeserializer.update on each (Content-Type, body) request, in one
    process of the Glance virtualenv (glance_deserializer.py says what comes back)."""
    payload = [[content_type, None if body is None else base64.b64encode(body).decode()] for content_type, body in requests]
    result = subprocess.run(
        [str(env.python), "-I", str(DESERIALIZER)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{DESERIALIZER.name} failed with exit code {result.returncode}:\n{result.stderr[-3000:]}")
    answers: list[dict[str, Any]] = json.loads(result.stdout)
    return answers


def api_config(workdir: Path, paste_ini: Path) -> str:
    """glance-api.conf for a single-node, no-auth Glance over sqlite and a folder."""
    return f"""\
[DEFAULT]
# Multi-store is the only store configuration Glance 33 fully supports; the two
# reserved stores below must then be file stores of their own.
enabled_backends = fs:file
enabled_import_methods = []
image_cache_dir = {workdir}/cache
use_stderr = true
debug = false

[database]
connection = sqlite:///{workdir}/glance.sqlite

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = {workdir}/images

[os_glance_staging_store]
filesystem_store_datadir = {workdir}/staging

[os_glance_tasks_store]
filesystem_store_datadir = {workdir}/tasks

[oslo_concurrency]
lock_path = {workdir}/locks

[oslo_policy]
# The unauthenticated context has no roles; with only the new (role-based) defaults
# it may not even create an image. The legacy defaults let it act as admin.
enforce_new_defaults = false

[paste_deploy]
# No flavour: the default pipeline, which uses the unauthenticated-context filter.
flavor =
config_file = {paste_ini}
"""


def configure(env: GlanceEnv, workdir: Path) -> Path:
    """Write the configuration into ``workdir/etc`` and create the database; returns
    the configuration folder."""
    etc = workdir / "etc"
    for sub in ("etc", "images", "staging", "tasks", "cache", "locks"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    paste_ini = etc / "glance-api-paste.ini"
    shutil.copyfile(env.root / "etc" / "glance" / "glance-api-paste.ini", paste_ini)
    conf = etc / "glance-api.conf"
    conf.write_text(api_config(workdir, paste_ini))
    with (workdir / "db_sync.log").open("w") as out:
        result = subprocess.run(
            [str(env.script("glance-manage")), "--config-file", str(conf), "db_sync"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_server_environ(etc),
            timeout=300,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError("glance-manage db_sync failed:\n" + _tail(workdir / "db_sync.log"))
    return etc


def _server_environ(etc: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}
    environ["OS_GLANCE_CONFIG_DIR"] = str(etc)
    return environ


@contextlib.contextmanager
def run_glance(env: GlanceEnv, workdir: Path) -> Iterator[GlanceServer]:
    """Configure, start and finally stop a Glance API bound to a free loopback port."""
    etc = configure(env, workdir)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    log = workdir / "glance-api.log"
    access_log = workdir / "access.log"
    with listener, log.open("wb") as log_file:
        process = subprocess.Popen(
            _gunicorn_argv(env, listener.fileno(), access_log),
            cwd=workdir,
            env=_server_environ(etc),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    server = GlanceServer(
        url=f"http://127.0.0.1:{port}",
        workdir=workdir,
        env=env,
        pid=process.pid,
        log=log,
        access_log=access_log,
    )
    try:
        wait_until_ready(server.url, process, log)
        yield server
    finally:
        stop(process)


def _gunicorn_argv(env: GlanceEnv, fd: int, access_log: Path) -> list[str]:
    return [
        str(env.python),
        "-I",
        "-m",
        "gunicorn",
        "--bind",
        f"fd://{fd}",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--timeout",
        "300",
        "--graceful-timeout",
        "10",
        "--no-control-socket",
        "--access-logfile",
        str(access_log),
        "glance.wsgi.api:application",
    ]


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``GET /versions`` until Glance answers 200, or fail with its log."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Glance exited with code {process.returncode} while starting:\n{_tail(log)}"
            )
        if answers(url, "/versions"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"Glance did not answer within {START_TIMEOUT_S} s:\n{_tail(log)}")


def answers(url: str, path: str) -> bool:
    """Whether GET ``path`` on the server at ``url`` answers 200 (a readiness poll)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Ask gunicorn to shut down gracefully; kill it if it does not."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
