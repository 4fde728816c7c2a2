"""An in-memory stand-in for IMS's ``/v2/images`` API.

Good enough to develop clients against (``ims-gateway serve`` starts it in-process when
no upstream is configured) and the upstream of our test suites. It follows Glance v2's
rules for ``/v2/images`` (IMS is Glance v2 compatible) and IMS's for
``PATCH /v2/cloudimages/{id}``. Errors are IMS-shaped, ``{"error": {"code", "message"}}``,
with Glance's messages.

It does no authentication (``X-Auth-Token`` is neither required nor checked), keeps
images in memory only, and stores image data in a temporary directory that is removed
when the app stops.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import StreamReader, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import error_response
from gateway.patch import (
    GLANCE_READ_ONLY_ATTRIBUTES,
    GLANCE_RESERVED_ATTRIBUTES,
    GLANCE_RESERVED_NAMESPACE,
    V21_MEDIA_TYPE,
    Change,
    Patch,
    PatchError,
    Shape,
    parse,
)
from gateway.policy import GLANCE_PROTECTED_ATTRIBUTES, IMS_SYSTEM_ATTRIBUTES

REQUEST_ID = "X-Openstack-Request-Id"
OCTET_STREAM = "application/octet-stream"
CHUNK_SIZE = 256 * 1024
# Bounds the JSON bodies only: image data is streamed and never limited by it.
JSON_BODY_LIMIT = 1024**2
PROPERTY_QUOTA = 128
# Glance's limit_param_default and api_limit_max.
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
DEFAULT_OWNER = "0b1e494e2660441a957313163095fe5c"

# IMS publishes error codes for its 400 answers only; other statuses use EMU.<status>.
INVALID_REQUEST = "IMG.0001"
NAME_TOO_LONG = "IMG.0002"
NAME_INVALID = "IMG.0003"
DESCRIPTION_TOO_LONG = "IMG.0004"
EMPTY_BODY = "IMG.0007"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_VISIBILITIES = ("community", "public", "private", "shared")
_CONTAINER_FORMATS = (None, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
# Glance's disk formats plus IMS's zvhd and zvhd2.
_DISK_FORMATS = (None, "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop", "zvhd", "zvhd2")
# Glance refuses these on create (RequestDeserializer._disallowed_properties and
# ImageFactory's read-only check); "id" may be chosen by the caller.
_CREATE_READ_ONLY = frozenset(GLANCE_READ_ONLY_ATTRIBUTES) - {"id"} | {"stores"}
# The emulator has no image locations: they are refused like Glance's reserved attributes.
_RESERVED = frozenset(GLANCE_RESERVED_ATTRIBUTES) | {"locations"}

# IMS's own attributes (ims-patch-api.md); stored as Glance extra properties, as IMS does.
_IMS_DEFAULT_PROPERTIES: Mapping[str, str | None] = {
    "__os_bit": "64",
    "__os_version": "Other Linux(64 bit)",
    "__os_type": "Linux",
    "__platform": "Other",
    "__description": "",
    "__isregistered": "true",
    "__imagetype": "private",
    "__image_source_type": "uds",
    "__originalimagename": "",
    "__backup_id": "",
    "__productcode": "",
    "__image_size": "0",
    "__data_origin": None,
    "virtual_env_type": "FusionCompute",
    "hw_firmware_type": "bios",
}
_SYSTEM_ATTRIBUTES = frozenset(IMS_SYSTEM_ATTRIBUTES) | frozenset(GLANCE_PROTECTED_ATTRIBUTES)
# What PATCH /v2/cloudimages/{id} documents as updatable.
CLOUDIMAGES_UPDATABLE = frozenset(
    {
        "name", "__description", "__support_kvm", "__support_xen", "__support_largememory",
        "__support_diskintensive", "__support_highperformance", "__support_xen_gpu_type",
        "__support_kvm_gpu_type", "__support_xen_hana", "__is_config_init",
        "enterprise_project_id", "min_ram", "hw_vif_multiqueue_enabled", "hw_firmware_type",
    }
)


def _status_code(status: int) -> str:
    return INVALID_REQUEST if status == 400 else f"EMU.{status:04d}"


class ImsError(Exception):
    """An IMS-shaped error answer; rendered once, by the emulator's error middleware."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _status_code(status)
        self.headers = dict(headers or {})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it reached the emulator (``body`` is None for data transfers and bodiless requests)."""

    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]
    body: bytes | None


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------
# Images and their store


@dataclass(frozen=True, slots=True)
class ImageData:
    path: Path
    size: int
    md5: str
    sha512: str


@dataclass(slots=True)
class Image:
    """``attributes`` are Glance's base attributes; ``properties`` its extra properties."""

    attributes: dict[str, Any]
    properties: dict[str, Any]
    data: ImageData | None = None

    @property
    def id(self) -> str:
        return str(self.attributes["id"])

    @property
    def status(self) -> str:
        return str(self.attributes["status"])

    def draft(self) -> Image:
        """A copy to apply changes to; saved with :meth:`adopt` only when all of them succeed."""
        return Image(copy.deepcopy(self.attributes), dict(self.properties), self.data)

    def adopt(self, draft: Image) -> None:
        self.attributes, self.properties = draft.attributes, draft.properties
        self.attributes["updated_at"] = _timestamp()

    def attach(self, data: ImageData) -> None:
        self.data = data
        self.attributes.update(
            status="active",
            size=data.size,
            checksum=data.md5,
            os_hash_algo="sha512",
            os_hash_value=data.sha512,
            updated_at=_timestamp(),
        )
        self.properties["__image_size"] = str(data.size)

    def document(self) -> dict[str, Any]:
        link = f"/v2/images/{self.id}"
        return {
            **self.attributes,
            **self.properties,
            "self": link,
            "file": f"{link}/file",
            "schema": "/v2/schemas/image",
        }


@dataclass(slots=True)
class ImageStore:
    directory: Path
    images: dict[str, Image] = field(default_factory=dict)

    def get(self, image_id: str) -> Image:
        try:
            return self.images[image_id]
        except KeyError:
            raise ImsError(404, f"No image found with ID {image_id}") from None

    def add(self, image: Image) -> None:
        if image.id in self.images:
            raise ImsError(409, f"Image with identifier {image.id} already exists!")
        self.images[image.id] = image

    def remove(self, image: Image) -> None:
        del self.images[image.id]
        if image.data is not None:
            image.data.path.unlink(missing_ok=True)

    def holds(self, image: Image) -> bool:
        return self.images.get(image.id) is image

    def page(self, marker: str | None, limit: int) -> list[Image]:
        """Newest first, like Glance's default created_at desc; creation order breaks ties."""
        newest_first = list(reversed(self.images.values()))
        start = 0
        if marker is not None:
            positions = [i for i, image in enumerate(newest_first) if image.id == marker]
            if not positions:
                raise ImsError(400, f"No image found with ID {marker}")
            start = positions[0] + 1
        return newest_first[start : start + limit]

    def new_data_path(self) -> Path:
        return self.directory / uuid.uuid4().hex


EMULATOR_JOURNAL = web.AppKey[list[RecordedRequest] | None]("ims_emulator_journal")
IMAGE_STORE = web.AppKey("ims_emulator_store", ImageStore)


# ---------------------------------------------------------------------------------------
# Values: a subset of Glance's image schema, with jsonschema-like reasons


def _schema_error(reason: str) -> ImsError:
    return ImsError(400, f"Provided object does not match schema 'image': {reason}")


def _type_reason(value: Any, expected: str) -> str:
    return f"{value!r} is not of type '{expected}'"


def _check_string(value: Any, *, nullable: bool = False, max_length: int | None = None) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        return _type_reason(value, "string")
    if max_length is not None and len(value) > max_length:
        return f"{value!r} is too long"
    return None


def _check_enum(value: Any, allowed: tuple[str | None, ...]) -> str | None:
    return None if value in allowed else f"{value!r} is not one of {list(allowed)!r}"


def _check_non_negative_integer(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return _type_reason(value, "integer")
    return f"{value} is less than the minimum of 0" if value < 0 else None


def _check_boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else _type_reason(value, "boolean")


def _check_tags(value: Any) -> str | None:
    if not isinstance(value, list):
        return _type_reason(value, "array")
    return next((reason for tag in value if (reason := _check_string(tag, max_length=255))), None)


_BASE_CHECKS: Mapping[str, Callable[[Any], str | None]] = {
    "name": lambda v: _check_string(v, nullable=True, max_length=255),
    "owner": lambda v: _check_string(v, nullable=True, max_length=255),
    "visibility": lambda v: _check_enum(v, _VISIBILITIES),
    "container_format": lambda v: _check_enum(v, _CONTAINER_FORMATS),
    "disk_format": lambda v: _check_enum(v, _DISK_FORMATS),
    "min_disk": _check_non_negative_integer,
    "min_ram": _check_non_negative_integer,
    "protected": _check_boolean,
    "os_hidden": _check_boolean,
    "tags": _check_tags,
}


def _check_value(name: str, value: Any) -> None:
    check = _BASE_CHECKS.get(name, _check_string)
    if reason := check(value):
        raise _schema_error(reason)


def _check_values(changes: Iterable[Change]) -> None:
    for change in changes:
        if change.op != "remove" and change.attribute != "locations":
            _check_value(change.attribute, change.value)


def _check_quota(properties: Mapping[str, Any], *, added: bool) -> None:
    # Like Glance, only a request that adds properties is held to the quota.
    if added and len(properties) > PROPERTY_QUOTA:
        raise ImsError(
            413,
            "The limit has been exceeded on the number of allowed image properties. "
            f"Attempted: {len(properties)}, Maximum: {PROPERTY_QUOTA}",
        )


def _save(image: Image, draft: Image) -> None:
    _check_quota(draft.properties, added=bool(draft.properties.keys() - image.properties.keys()))
    image.adopt(draft)


# ---------------------------------------------------------------------------------------
# Creating an image


def _check_create_keys(body: Mapping[str, Any]) -> None:
    for key in body:
        if key in _CREATE_READ_ONLY:
            raise ImsError(403, f"Attribute '{key}' is read-only.")
        if key in _RESERVED or key.startswith(GLANCE_RESERVED_NAMESPACE):
            raise ImsError(403, f"Attribute '{key}' is reserved.")


def _image_id(body: Mapping[str, Any]) -> str:
    if "id" not in body:
        return str(uuid.uuid4())
    value = body["id"]
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise _schema_error(f"{value!r} does not match '^([0-9a-fA-F]){{8}}-([0-9a-fA-F]){{4}}-"
                            "([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$'")
    return value


def new_image(body: Mapping[str, Any]) -> Image:
    """An image from a create request's JSON object, after Glance's checks."""
    _check_create_keys(body)
    now = _timestamp()
    attributes: dict[str, Any] = {
        "id": _image_id(body),
        "name": None,
        "status": "queued",
        "visibility": "private",
        "protected": False,
        "os_hidden": False,
        "owner": DEFAULT_OWNER,
        "container_format": None,
        "disk_format": None,
        "min_disk": 0,
        "min_ram": 0,
        "tags": [],
        "size": None,
        "virtual_size": None,
        "checksum": None,
        "os_hash_algo": None,
        "os_hash_value": None,
        "created_at": now,
        "updated_at": now,
    }
    properties: dict[str, Any] = dict(_IMS_DEFAULT_PROPERTIES)
    for key, value in body.items():
        if key == "id":
            continue
        _check_value(key, value)
        if key in _BASE_CHECKS:
            attributes[key] = value
        elif len(key) > 255:
            raise ImsError(400, "Custom property should not be greater than 255 characters.")
        else:
            properties[key] = value
    _check_quota(properties, added=True)
    return Image(attributes, properties)


# ---------------------------------------------------------------------------------------
# PATCH /v2/images/{id}: Glance's ImagesController._do_add/_do_replace/_do_remove


def _locations_refusal(change: Change) -> ImsError:
    # Glance's answers with show_multiple_locations off, its default and what IMS exposes.
    if change.op == "replace" and not change.value:
        return ImsError(403, "Cannot set locations to empty list.")
    verb = {"add": "add", "remove": "remove", "replace": "update"}[change.op]
    return ImsError(403, f"It's not allowed to {verb} locations if locations are invisible.")


def _glance_add(image: Image, name: str, value: Any, shape: Shape) -> None:
    exists = name in image.attributes or name in image.properties
    if exists and shape is Shape.V20:
        raise ImsError(409, f"Property {name} already present.")
    if name in image.attributes:
        image.attributes[name] = value
    else:
        image.properties[name] = value


def _glance_replace(image: Image, name: str, value: Any) -> None:
    if name in image.attributes:
        image.attributes[name] = value
    elif name in image.properties:
        image.properties[name] = value
    else:
        raise ImsError(409, f"Property {name} does not exist.")


def _glance_remove(image: Image, name: str) -> None:
    if name in image.attributes:
        raise ImsError(403, f"Property {name} may not be removed.")
    if name not in image.properties:
        raise ImsError(409, f"Property {name} does not exist.")
    del image.properties[name]


def _apply_glance_change(image: Image, change: Change, shape: Shape) -> None:
    name = change.attribute
    if name == "locations":
        raise _locations_refusal(change)
    if change.op == "remove":
        _glance_remove(image, name)
    elif name == "owner":
        raise ImsError(403, "Owner can't be updated by non admin.")
    elif change.op == "replace":
        _glance_replace(image, name, change.value)
    else:
        _glance_add(image, name, change.value, shape)


def apply_glance_patch(image: Image, patch: Patch) -> None:
    """Apply the changes in order to a draft; save only when every one succeeds."""
    if not patch.changes:
        return
    draft = image.draft()
    for change in patch.changes:
        _apply_glance_change(draft, change, patch.shape)
    _save(image, draft)


# ---------------------------------------------------------------------------------------
# PATCH /v2/cloudimages/{id}: IMS's "Updating an Image"


def _cloudimages_value(name: str, value: Any) -> Any:
    if name == "name":
        if not isinstance(value, str) or not value:
            raise ImsError(400, "The image name format is invalid.", code=NAME_INVALID)
        if len(value) > 128:
            raise ImsError(400, "The image name contains more than 128 characters.", code=NAME_TOO_LONG)
        return value
    if name == "min_ram":
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)
        if _check_non_negative_integer(value):
            raise ImsError(400, "The value of min_ram must be a non-negative integer.")
        return value
    if not isinstance(value, str):
        raise ImsError(400, f"The value of {name} must be a string.")
    if name == "__description" and len(value) > 1024:
        raise ImsError(400, "The description contains more than 1024 characters.", code=DESCRIPTION_TOO_LONG)
    if name == "hw_firmware_type" and value not in ("bios", "uefi"):
        raise ImsError(400, "The value of hw_firmware_type must be bios or uefi.")
    return value


def _is_system_attribute(name: str) -> bool:
    return name in _SYSTEM_ATTRIBUTES or name.startswith(GLANCE_RESERVED_NAMESPACE)


def _apply_cloudimages_change(image: Image, change: Change) -> None:
    name = change.attribute
    if len(change.path) != 1 or (_is_system_attribute(name) and name not in CLOUDIMAGES_UPDATABLE):
        raise ImsError(400, f"The attribute {change.pointer} cannot be updated.")
    if change.op == "remove":
        if name in image.attributes:
            raise ImsError(400, f"The attribute {name} cannot be removed.")
        if name not in image.properties:
            raise ImsError(400, f"The attribute {name} does not exist.")
        del image.properties[name]
        return
    value = _cloudimages_value(name, change.value)
    if name in image.attributes:
        image.attributes[name] = value
    elif change.op == "replace" and name not in image.properties:
        raise ImsError(400, f"The attribute {name} does not exist.")
    else:
        image.properties[name] = value


def apply_cloudimages_patch(image: Image, changes: tuple[Change, ...]) -> None:
    if image.status != "active":
        raise ImsError(400, f"Only active images can be updated; image {image.id} is {image.status}.")
    if not changes:
        return
    draft = image.draft()
    for change in changes:
        _apply_cloudimages_change(draft, change)
    _save(image, draft)


# ---------------------------------------------------------------------------------------
# Image data


async def receive_data(stream: StreamReader, path: Path) -> ImageData:
    """Stream a request body to ``path``, hashing on the way; nothing is left behind on failure."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha512 = hashlib.sha512()
    size = 0
    try:
        with path.open("xb") as file:
            async for chunk in stream.iter_chunked(CHUNK_SIZE):
                file.write(chunk)
                md5.update(chunk)
                sha512.update(chunk)
                size += len(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return ImageData(path, size, md5.hexdigest(), sha512.hexdigest())


# ---------------------------------------------------------------------------------------
# Handlers


def _image_response(image: Image, *, status: int = 200) -> web.Response:
    return web.json_response(image.document(), status=status)


async def _raw_body(request: web.Request) -> bytes | None:
    """The body, or None without one (no Content-Length above 0, no Transfer-Encoding)."""
    return await request.read() if request.body_exists else None


async def _json_body(request: web.Request) -> Any:
    body = await _raw_body(request)
    if body is None:
        raise ImsError(400, "Body expected in request.", code=EMPTY_BODY)
    try:
        # Strict UTF-8 like Glance's oslo jsonutils: no BOM, no UTF-16 sniffing.
        return json.loads(str(body, "utf-8"))
    except ValueError:
        raise ImsError(400, "Malformed JSON in request body.") from None


def _patch_error(exc: PatchError) -> ImsError:
    code = EMPTY_BODY if exc.reason == "missing_body" else None
    return ImsError(exc.status, exc.message, code=code, headers=exc.headers)


def _parse_glance_patch(content_type: str | None, body: bytes | None) -> Patch:
    """Glance's deserializer: each operation's structure, then its value, in order."""
    try:
        patch = parse(content_type, body)
    except PatchError as exc:
        # The operations before the failing one are checked first, as Glance does.
        _check_values(exc.parsed)
        raise _patch_error(exc) from None
    _check_values(patch.changes)
    return patch


async def create_image(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise _schema_error(_type_reason(body, "object"))
    image = new_image(body)
    request.app[IMAGE_STORE].add(image)
    response = _image_response(image, status=201)
    response.headers[hdrs.LOCATION] = f"/v2/images/{image.id}"
    return response


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise ImsError(400, "limit param must be an integer") from None
    if limit <= 0:
        raise ImsError(400, "limit param must be positive")
    return min(limit, MAX_LIMIT)


def _listing_link(params: list[tuple[str, str]]) -> str:
    return f"/v2/images?{urlencode(params)}" if params else "/v2/images"


async def list_images(request: web.Request) -> web.Response:
    limit = _limit(request.query.get("limit"))
    images = request.app[IMAGE_STORE].page(request.query.get("marker"), limit)
    params = [(key, value) for key, value in request.query.items() if key != "marker"]
    body: dict[str, Any] = {
        "images": [image.document() for image in images],
        "schema": "/v2/schemas/images",
        "first": _listing_link(params),
    }
    if images and len(images) == limit:
        body["next"] = _listing_link([*params, ("marker", images[-1].id)])
    return web.json_response(body)


async def show_image(request: web.Request) -> web.Response:
    return _image_response(request.app[IMAGE_STORE].get(request.match_info["image_id"]))


async def delete_image(request: web.Request) -> web.Response:
    store = request.app[IMAGE_STORE]
    image_id = request.match_info["image_id"]
    image = store.images.get(image_id)
    if image is None:
        raise ImsError(404, f"Failed to find image {image_id} to delete")
    if image.attributes["protected"]:
        raise ImsError(403, f"Image {image_id} is protected and cannot be deleted.")
    store.remove(image)
    return web.Response(status=204)


async def update_image(request: web.Request) -> web.Response:
    # The raw header: Glance compares it byte for byte, request.content_type lowercases it.
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    patch = _parse_glance_patch(content_type, await _raw_body(request))
    image = request.app[IMAGE_STORE].get(request.match_info["image_id"])
    apply_glance_patch(image, patch)
    return _image_response(image)


def _media_type(content_type: str | None) -> str | None:
    return None if content_type is None else content_type.partition(";")[0].strip().lower()


async def update_cloud_image(request: web.Request) -> web.Response:
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    if _media_type(content_type) != "application/json":
        raise ImsError(415, f"Unsupported Content-Type {content_type!r}: use application/json.")
    try:
        patch = parse(V21_MEDIA_TYPE, await _raw_body(request), glance_attribute_checks=False)
    except PatchError as exc:
        raise _patch_error(exc) from None
    image = request.app[IMAGE_STORE].get(request.match_info["image_id"])
    apply_cloudimages_patch(image, patch.changes)
    return _image_response(image)


def _require_octet_stream(request: web.Request) -> None:
    content_type = request.headers.get(hdrs.CONTENT_TYPE)
    if _media_type(content_type) != OCTET_STREAM:
        raise ImsError(415, f"Invalid content type {content_type}")


async def upload_image_data(request: web.Request) -> web.Response:
    _require_octet_stream(request)
    store = request.app[IMAGE_STORE]
    image = store.get(request.match_info["image_id"])
    if image.status != "queued":
        raise ImsError(409, f"Image status transition from {image.status} to saving is not allowed")
    image.attributes["status"] = "saving"
    try:
        data = await receive_data(request.content, store.new_data_path())
    except BaseException:
        # Like Glance's _restore: a failed upload leaves the image queued for another try.
        image.attributes["status"] = "queued"
        raise
    if not store.holds(image):
        data.path.unlink(missing_ok=True)
        raise ImsError(
            410,
            f"Image {image.id} could not be found after upload. The image may have been deleted "
            "during the upload, cleaning up the chunks uploaded.",
        )
    image.attach(data)
    return web.Response(status=204)


async def download_image_data(request: web.Request) -> web.StreamResponse:
    image = request.app[IMAGE_STORE].get(request.match_info["image_id"])
    if image.data is None:
        return web.Response(status=204)
    headers = {hdrs.CONTENT_TYPE: OCTET_STREAM, "Content-MD5": image.data.md5}
    return web.FileResponse(image.data.path, chunk_size=CHUNK_SIZE, headers=headers)


# ---------------------------------------------------------------------------------------
# Middleware and app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _aiohttp_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "The resource could not be found."
    if exc.status == 405:
        return f"The method {request.method} is not allowed for this resource."
    return exc.text or exc.reason


@web.middleware
async def _request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get(REQUEST_ID) or f"req-{uuid.uuid4()}"
    response = await handler(request)
    response.headers[REQUEST_ID] = request_id
    return response


@web.middleware
async def _render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ImsError as exc:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)
    except web.HTTPException as exc:
        # aiohttp's own answers (no route, wrong method, body past client_max_size).
        headers = {hdrs.ALLOW: exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        return error_response(exc.status, _status_code(exc.status), _aiohttp_message(request, exc), headers=headers)


def _journal_middleware(journal: list[RecordedRequest]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Image data is never buffered: /file transfers are recorded without their body.
        headers = CIMultiDictProxy(CIMultiDict(request.headers))
        try:
            body = None if request.path.endswith("/file") else await _raw_body(request)
        except web.HTTPRequestEntityTooLarge:
            journal.append(RecordedRequest(request.method, request.raw_path, headers, None))
            raise
        journal.append(RecordedRequest(request.method, request.raw_path, headers, body))
        return await handler(request)

    return record


async def _image_store(app: web.Application) -> AsyncIterator[None]:
    with tempfile.TemporaryDirectory(prefix="ims-emulator-") as directory:
        app[IMAGE_STORE] = ImageStore(Path(directory))
        yield


def build_emulator_app(*, journal: list[RecordedRequest] | None = None) -> web.Application:
    """The emulator app; with ``journal``, every request is appended to it before it is handled."""
    # Outermost first: every answer, errors included, carries the request id, and the
    # journal sees each request before a handler can refuse it.
    middlewares = [_request_id, _render_errors]
    if journal is not None:
        middlewares.append(_journal_middleware(journal))
    app = web.Application(middlewares=middlewares, client_max_size=JSON_BODY_LIMIT)
    app[EMULATOR_JOURNAL] = journal
    app.cleanup_ctx.append(_image_store)
    app.router.add_post("/v2/images", create_image)
    app.router.add_get("/v2/images", list_images)
    app.router.add_get("/v2/images/{image_id}", show_image)
    app.router.add_delete("/v2/images/{image_id}", delete_image)
    app.router.add_patch("/v2/images/{image_id}", update_image)
    app.router.add_put("/v2/images/{image_id}/file", upload_image_data)
    app.router.add_get("/v2/images/{image_id}/file", download_image_data)
    app.router.add_patch("/v2/cloudimages/{image_id}", update_cloud_image)
    return app


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def start_emulator(host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Start the emulator on ``host:port`` (0: a free port); the runner and the base URL."""
    runner = web.AppRunner(build_emulator_app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, f"http://{_url_host(host)}:{bound_port}"


def run_emulator(host: str, port: int) -> None:
    """Serve the emulator until interrupted (``ims-gateway emulator --listen``)."""
    web.run_app(build_emulator_app(), host=host, port=port)
