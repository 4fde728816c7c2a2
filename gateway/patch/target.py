"""Which kind of request this is, decided on the path as the upstream may read it.

Classification must err towards inspection: a PATCH that any reasonable upstream could
route to an image must be treated as an image PATCH, whatever its spelling (doubled
slashes, dot segments, percent-encoding, a trailing slash, a versioned prefix such as
``/v2.1/``, letter case). Over-inclusion only means a body gets checked; under-inclusion
would let a forbidden change through.
"""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote

from gateway.vocabulary import Route

_IMAGES = re.compile(r"/v2(?:\.\d+)?/images(?P<rest>/.*)?", re.IGNORECASE)
_IMAGE = re.compile(r"/(?P<image_id>[^/]+)")
_DATA = re.compile(r"/[^/]+/file", re.IGNORECASE)
_MAX_DECODE_ROUNDS = 4
# Nothing to decode, no dot or empty segment, no parameter: already what normalize returns.
_PLAIN = re.compile(r"((?:/[A-Za-z0-9_~-]+)+)(?:\?.*)?", re.DOTALL)


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


def classify(method: str, raw_path: str) -> Route:
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
    """The image id of a ``/v2/images/{id}`` request target, as the upstream reads it."""
    match = _IMAGES.fullmatch(normalize(raw_path))
    image = _IMAGE.fullmatch(match["rest"] or "") if match else None
    return image["image_id"] if image else None
