"""Which requests IMS's stack could execute as an image PATCH, and which image they name.

The upstream is a WSGI stack (a WSGI server, paste, Glance's version negotiation, Routes,
webob), so what it executes is decided on more than the path: Glance applies a PATCH body
only under the two json-patch media types, Accept can select the API version of a
version-less path (``PATCH /images/{id}``), and Routes lets ``?_method=`` change the method
of any request. Everything here errs towards inspection: over-inclusion only means a body
gets checked; under-inclusion would let a forbidden change through.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote, unquote_plus

from gateway.patch.parser import V20_MEDIA_TYPE, V21_MEDIA_TYPE
from gateway.vocabulary import Route

# /v2/images, /v2.1/images, /V2/IMAGES, and the version-less /images that Glance's
# version negotiation routes by Accept. DOTALL: Routes' `$` matches before a final "\n".
_IMAGES: Final = re.compile(r"(?:/v2(?:\.\d+)?)?/images(?P<rest>/.*)?", re.IGNORECASE | re.DOTALL)
_IMAGE: Final = re.compile(r"/(?P<image_id>[^/]+)", re.DOTALL)
_DATA: Final = re.compile(r"/[^/]+/file", re.IGNORECASE | re.DOTALL)
_MAX_DECODE_ROUNDS: Final = 4
# Nothing to decode, no dot or empty segment, no parameter: already what normalize returns.
_PLAIN: Final = re.compile(r"((?:/[A-Za-z0-9_~-]+)+)(?:\?.*)?", re.DOTALL)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_JSON_PATCH: Final = frozenset({V20_MEDIA_TYPE, V21_MEDIA_TYPE})
_FORMS: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
METHOD_OVERRIDE_PARAMETER: Final = "_method"


def normalize(raw_path: str) -> str:
    """The path a lenient upstream could act on: decoded, dot segments and empty segments removed."""
    plain = _PLAIN.fullmatch(raw_path)
    if plain is not None:
        return plain[1]
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = "/".join(segment.split(";", 1)[0] for segment in path.replace("\\", "/").split("/"))
    path = posixpath.normpath("/" + path)
    return "/" + path.lstrip("/")


def media_types(values: Iterable[str]) -> set[str]:
    """Every media type the Content-Type values could be read as, by the loosest reader.

    Letter case and surrounding whitespace ignored, parameters dropped, and a value split
    at commas too: some WSGI servers join repeated fields with ", ".
    """
    found = set()
    for value in values:
        for part in value.split(","):
            found.add(part.split(";", 1)[0].strip().lower())
    return found


def is_json_patch(content_types: Iterable[str]) -> bool:
    """Whether any reader could take the body for one of Glance's image PATCH shapes."""
    return names_json_patch(media_types(content_types))


def is_form(content_types: Iterable[str]) -> bool:
    """A form body: Routes reads a ``_method`` override from it."""
    return names_form(media_types(content_types))


def names_json_patch(media: set[str] | frozenset[str]) -> bool:
    """``is_json_patch`` of the media types ``media_types`` read."""
    return not _JSON_PATCH.isdisjoint(media)


def names_form(media: set[str] | frozenset[str]) -> bool:
    """``is_form`` of the media types ``media_types`` read."""
    return not _FORMS.isdisjoint(media)


def query_overrides_method(raw_path: str) -> bool:
    """Whether the query string carries ``_method``, in any spelling a reader could decode.

    Routes looks for the substring in the raw query, then takes the decoded name (webob
    splits at & and ;, reads + as a space, decodes once); this looks in every decoding of
    every name, in any letter case, and at the raw query itself.
    """
    _, sep, query = raw_path.partition("?")
    if not sep:
        return False
    if METHOD_OVERRIDE_PARAMETER in query.lower():
        return True
    for item in re.split("[&;]", query):
        name = item.split("=", 1)[0]
        for _ in range(_MAX_DECODE_ROUNDS):
            decoded = unquote_plus(name)
            if decoded == name:
                break
            name = decoded
        if name.strip().lower() == METHOD_OVERRIDE_PARAMETER:
            return True
    return False


def has_control_characters(raw_path: str) -> bool:
    """A decoded control character in the path: no image id has one, and Routes' `$`
    matches before a final newline (``/v2/images/{id}%0A`` is the image {id})."""
    path = raw_path.split("?", 1)[0]
    if "%" not in path and path.isascii() and path.isprintable():
        return False  # nothing to decode, and no control character as sent
    return bool(_CONTROL.search(path) or _CONTROL.search(normalize(path)))


def classify(method: str, raw_path: str, *, json_patch: bool = False) -> Route:
    """The route class; every PATCH of an image path, and every json-patch body, is an image PATCH."""
    if json_patch:
        return Route.IMAGE_PATCH
    match = _IMAGES.fullmatch(normalize(raw_path))
    if match is None:
        return Route.OTHER
    if method.upper() == "PATCH":
        return Route.IMAGE_PATCH
    rest = match["rest"]
    if rest and _DATA.fullmatch(rest):
        return Route.IMAGE_DATA
    return Route.IMAGES


def image_id(raw_path: str) -> str | None:
    """The image a ``/v2/images/{id}`` (or version-less ``/images/{id}``) target names, as IMS reads it."""
    match = _IMAGES.fullmatch(normalize(raw_path))
    image = _IMAGE.fullmatch(match["rest"] or "") if match else None
    return image["image_id"] if image else None


__all__ = [
    "METHOD_OVERRIDE_PARAMETER",
    "classify",
    "has_control_characters",
    "image_id",
    "is_form",
    "is_json_patch",
    "media_types",
    "names_form",
    "names_json_patch",
    "normalize",
    "query_overrides_method",
]
