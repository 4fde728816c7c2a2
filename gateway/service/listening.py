"""Opening the listeners: an address that cannot be had is one line naming it, not a traceback."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from gateway.config.schema import Address


class CannotListen(Exception):
    """A listener could not be opened at ``address``, which ``setting`` (a key or a flag) named."""

    def __init__(self, address: Address, setting: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address} ({setting}): {reason}")
        self.address = address
        self.setting = setting
        self.reason = reason

    def named(self, setting: str) -> CannotListen:
        """The same failure, naming ``setting`` instead (the flag that set the key)."""
        return CannotListen(self.address, setting, self.reason)


def reason(exc: OSError) -> str:
    """What the system said, without asyncio's "error while attempting to bind on address (...)"."""
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror.lower()
    if exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc)


@contextlib.contextmanager
def opening(address: Address, setting: str) -> Iterator[None]:
    """Turn the OSError of binding ``address`` into CannotListen."""
    try:
        yield
    except OSError as exc:
        raise CannotListen(address, setting, reason(exc)) from exc


__all__ = ["CannotListen", "opening", "reason"]
