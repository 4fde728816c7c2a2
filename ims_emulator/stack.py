"""What IMS's WSGI stack makes of a request before Glance's image API sees it.

IMS is Glance behind a WSGI server and a paste pipeline, and those decide which method
and which path the API executes. The emulator models the most lenient stack the team
found, so that a gateway bypass shows up against the emulator too:

- the WSGI server takes ``SCRIPT_NAME`` from a header when the peer is trusted and cuts
  it from the path (gunicorn's forwarder_headers; the gateway is that trusted peer), maps
  header names with ``-`` and ``_`` to the same variable and joins repeats with ", "
  (uWSGI), and decodes the path once;
- paste's urlmap merges repeated slashes;
- Glance's version negotiation takes the API version from ``Accept:
  application/vnd.openstack.images-v2[.N]`` (then the path gets ``/v2`` in front) or
  from the first path segment (``/v2``, ``/v2.1``, ...);
- Routes lets ``?_method=`` (and a form POST's ``_method`` field) override the method
  of any request, and its ``$`` matches before a final newline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote

from multidict import CIMultiDictProxy

VERSION_PREFIX: Final = "application/vnd.openstack.images-"
# Glance 33's allowed versions with image_cache_dir and enabled_backends set: all of them.
VERSIONS: Final = frozenset({"v2", *(f"v2.{minor}" for minor in range(19))})
_FORMS: Final = ("application/x-www-form-urlencoded", "multipart/form-data")


class NoVersion(Exception):
    """Glance's version negotiation found no API version: the versions document answers (300)."""


@dataclass(frozen=True, slots=True)
class Environ:
    """What Glance's router matches on: the method after overrides, the path after the
    server, urlmap and version negotiation; what the image API reads as the content type."""

    method: str
    path: str
    content_type: str | None


def cgi_name(header: str) -> str:
    return header.upper().replace("-", "_")


def cgi_value(headers: CIMultiDictProxy[str], variable: str) -> str | None:
    """A CGI variable as uWSGI fills it: every header mapping to it, joined with ", "."""
    values = [value for name, value in headers.items() if cgi_name(name) == variable]
    return ", ".join(values) if values else None


def _tidy_accept(accept: str | None) -> str:
    """webob's ``str(request.accept)``: empty elements dropped, whitespace and q=1 tidied."""
    if accept is None:
        return "<no header in request>"
    items = []
    for item in accept.split(","):
        parts = [part.strip() for part in item.split(";")]
        parameters = [p for p in parts[1:] if p and p.replace(" ", "").lower() not in ("q=1", "q=1.0", "q=1.00", "q=1.000")]
        if parts[0]:
            items.append(";".join([parts[0], *parameters]))
    return ", ".join(items)


def _negotiate(path: str, accept: str | None) -> str:
    tidied = _tidy_accept(accept)
    if tidied.startswith(VERSION_PREFIX):
        version = tidied[len(VERSION_PREFIX) :]
        rest = path
    else:
        stripped = path.lstrip("/")
        version, sep, tail = stripped.partition("/")
        rest = sep + tail
    if version not in VERSIONS:
        raise NoVersion(version)
    return "/v2" + rest


def _override(method: str, raw_query: str, content_type: str | None, form: bytes | None) -> str:
    """Routes' method override: ``_method`` in the query of any request, or in a form POST."""
    if "_method" in raw_query:
        # webob's req.GET: pairs split at & and ;, + read as a space, decoded once, last wins.
        found = [value for name, value in parse_qsl(raw_query.replace(";", "&"), keep_blank_values=True) if name == "_method"]
        return found[-1].upper() if found and found[-1] else method
    media_type = (content_type or "").lower().split(";", 1)[0]
    if method == "POST" and media_type == _FORMS[0] and form is not None:
        found = [value for name, value in parse_qsl(form.decode("utf-8", "replace"), keep_blank_values=True) if name == "_method"]
        return found[-1].upper() if found and found[-1] else method
    return method


def environ(
    method: str, raw_path: str, headers: CIMultiDictProxy[str], form: bytes | None = None
) -> Environ:
    """The request as Glance's router sees it (raises NoVersion where Glance answers 300)."""
    raw, _, query = raw_path.partition("?")
    script_name = cgi_value(headers, "SCRIPT_NAME")
    if script_name and raw.startswith(script_name):
        raw = raw[len(script_name) :]
    path = re.sub("//+", "/", unquote(raw, encoding="latin-1"))
    content_type = cgi_value(headers, "CONTENT_TYPE")
    if not path.startswith("/v2/cloudimages"):  # IMS's own API: no version negotiation
        path = _negotiate(path, headers.get("Accept"))
    return Environ(_override(method, query, content_type, form), path, content_type)


def is_form(headers: CIMultiDictProxy[str]) -> bool:
    return (cgi_value(headers, "CONTENT_TYPE") or "").lower().split(";", 1)[0] in _FORMS


__all__ = ["Environ", "NoVersion", "environ", "is_form"]
