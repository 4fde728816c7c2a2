"""``[report] store``: what an operator may write, and how it is shown (never a password).

- ``memory``: this process only (the default of a single process);
- ``sqlite``, ``sqlite:///ABSOLUTE/PATH``: one file shared by the workers of a machine and
  kept across restarts; plain ``sqlite`` is ``report.sqlite`` in the state directory;
- ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://...`` (TLS): one Redis for a fleet;
- empty: ``memory`` for one process, ``sqlite`` for ``serve --workers N``.

Pure: no I/O, nothing imported beyond the standard library.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

AUTO: Final = "auto"
MEMORY: Final = "memory"
SQLITE: Final = "sqlite"
REDIS: Final = "redis"

STORE_FORMAT: Final = (
    "memory, sqlite, sqlite:///ABSOLUTE/PATH, redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or rediss://... "
    "(or empty: memory for one process, sqlite for --workers N)"
)
REPORT_FILE: Final = "report.sqlite"
_SQLITE_PREFIX: Final = "sqlite://"
_DB_PATH: Final = re.compile(r"/?|/\d{1,5}")


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """A parsed ``report.store``. ``url`` may hold a password: show ``shown``, never ``url``."""

    kind: str  # auto, memory, sqlite, redis
    url: str = field(default="", repr=False)  # redis: as configured
    path: Path | None = None  # sqlite: None until resolved (the state directory's file)

    @property
    def shown(self) -> str:
        if self.kind == REDIS:
            return hide_password(self.url)
        if self.kind == SQLITE:
            return f"{_SQLITE_PREFIX}{self.path}" if self.path is not None else SQLITE
        return self.kind


def parse_store(text: str) -> StoreSpec:
    """The store ``text`` names; ValueError saying what is allowed (never repeating a password)."""
    if text == "":
        return StoreSpec(AUTO)
    if text == MEMORY:
        return StoreSpec(MEMORY)
    if text == SQLITE:
        return StoreSpec(SQLITE)
    if text.startswith(_SQLITE_PREFIX):
        path = text[len(_SQLITE_PREFIX):]
        if not path.startswith("/") or path.endswith("/") or "\x00" in path:
            raise ValueError("sqlite:///ABSOLUTE/PATH of a file, e.g. sqlite:///var/lib/ims-gateway/report.sqlite")
        return StoreSpec(SQLITE, path=Path(path))
    parts = urlsplit(text)
    if parts.scheme in ("redis", "rediss"):
        try:
            port = parts.port
        except ValueError:
            raise ValueError("a redis:// URL with a port from 1 to 65535") from None
        if not parts.hostname or port == 0:
            raise ValueError("a redis:// URL with a host, e.g. redis://redis:6379/0")
        if not _DB_PATH.fullmatch(parts.path):
            raise ValueError("a redis:// URL whose path is a database number, e.g. redis://redis:6379/0")
        if parts.query or parts.fragment:
            raise ValueError("a redis:// URL without ?query or #fragment")
        return StoreSpec(REDIS, url=text)
    raise ValueError(STORE_FORMAT)


def state_directory(environ: Mapping[str, str]) -> Path:
    """$XDG_STATE_HOME/ims-gateway, else ~/.local/state/ims-gateway (a relative XDG_STATE_HOME is ignored)."""
    base = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        home = environ.get("HOME") or str(Path.home())
        base = os.path.join(home, ".local", "state")
    return Path(base) / "ims-gateway"


def effective(spec: StoreSpec, workers: int, environ: Mapping[str, str]) -> StoreSpec:
    """The store a gateway of ``workers`` processes uses: ``auto`` and plain ``sqlite`` resolved."""
    if spec.kind == AUTO:
        spec = StoreSpec(MEMORY) if workers <= 1 else StoreSpec(SQLITE)
    if spec.kind == SQLITE and spec.path is None:
        return StoreSpec(SQLITE, path=state_directory(environ) / REPORT_FILE)
    return spec


_PASSWORD: Final = re.compile(r"(?<=://)([^/?#@:]*):[^/?#@]*@")


def hide_password(text: str) -> str:
    """``text`` with the password of any URL in it shown as ***."""
    return _PASSWORD.sub(r"\1:***@", text)


__all__ = [
    "AUTO", "MEMORY", "REDIS", "SQLITE", "STORE_FORMAT", "StoreSpec",
    "effective", "hide_password", "parse_store", "state_directory",
]  # fmt: skip
