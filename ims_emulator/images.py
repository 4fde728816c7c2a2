"""Images, their store and their data: Glance's create rules and value checks."""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import StreamReader

from ims_emulator.deserializer import BASE_CHECKS, READONLY, RESERVED, RESERVED_NAMESPACE, check_value, schema_error
from ims_emulator.errors import ImsError

CHUNK_SIZE = 256 * 1024
PROPERTY_QUOTA = 128
DEFAULT_OWNER = "0b1e494e2660441a957313163095fe5c"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Glance refuses these on create (RequestDeserializer._disallowed_properties and
# ImageFactory's read-only check); "id" may be chosen by the caller.
_CREATE_READ_ONLY = frozenset(READONLY) - {"id"} | {"stores"}
# The emulator has no image locations: they are refused like Glance's reserved attributes.
_RESERVED = frozenset(RESERVED) | {"locations"}

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


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self.attributes["updated_at"] = timestamp()

    def attach(self, data: ImageData) -> None:
        self.data = data
        self.attributes.update(
            status="active",
            size=data.size,
            checksum=data.md5,
            os_hash_algo="sha512",
            os_hash_value=data.sha512,
            updated_at=timestamp(),
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


def _check_quota(properties: Mapping[str, Any], *, added: bool) -> None:
    # Like Glance, only a request that adds properties is held to the quota.
    if added and len(properties) > PROPERTY_QUOTA:
        raise ImsError(
            413,
            "The limit has been exceeded on the number of allowed image properties. "
            f"Attempted: {len(properties)}, Maximum: {PROPERTY_QUOTA}",
        )


def save(image: Image, draft: Image) -> None:
    _check_quota(draft.properties, added=bool(draft.properties.keys() - image.properties.keys()))
    image.adopt(draft)


def _check_create_keys(body: Mapping[str, Any]) -> None:
    for key in body:
        if key in _CREATE_READ_ONLY:
            raise ImsError(403, f"Attribute '{key}' is read-only.")
        if key in _RESERVED or key.startswith(RESERVED_NAMESPACE):
            raise ImsError(403, f"Attribute '{key}' is reserved.")


def _image_id(body: Mapping[str, Any]) -> str:
    if "id" not in body:
        return str(uuid.uuid4())
    value = body["id"]
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise schema_error(f"{value!r} does not match '^([0-9a-fA-F]){{8}}-([0-9a-fA-F]){{4}}-"
                            "([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$'")
    return value


def new_image(body: Mapping[str, Any]) -> Image:
    """An image from a create request's JSON object, after Glance's checks."""
    _check_create_keys(body)
    now = timestamp()
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
        check_value(key, value)
        if key in BASE_CHECKS:
            attributes[key] = value
        elif len(key) > 255:
            raise ImsError(400, "Custom property should not be greater than 255 characters.")
        else:
            properties[key] = value
    _check_quota(properties, added=True)
    return Image(attributes, properties)


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
