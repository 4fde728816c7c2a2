"""PATCH /v2/cloudimages/{id}: IMS's successor API, "Updating an Image"."""

from __future__ import annotations

from typing import Any

from ims_emulator.attributes import CLOUDIMAGES_UPDATABLE, SYSTEM_ATTRIBUTES
from ims_emulator.deserializer import READONLY, RESERVED, RESERVED_NAMESPACE, Change, non_negative_integer
from ims_emulator.errors import DESCRIPTION_TOO_LONG, NAME_INVALID, NAME_TOO_LONG, ImsError
from ims_emulator.images import Image, save

# Besides IMS's own: Glance's read-only and reserved names and the attributes only Glance sets.
_FIXED = SYSTEM_ATTRIBUTES | frozenset(READONLY) | frozenset(RESERVED) | {"locations", "os_hidden", "stores"}


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
        if non_negative_integer(value):
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
    return name in _FIXED or name.startswith(RESERVED_NAMESPACE)


def _apply_cloudimages_change(image: Image, change: Change) -> None:
    name = change.name
    if len(change.path) != 1 or (_is_system_attribute(name) and name not in CLOUDIMAGES_UPDATABLE):
        raise ImsError(400, f"The attribute /{'/'.join(change.path)} cannot be updated.")
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


def apply_cloudimages_patch(image: Image, changes: list[Change]) -> None:
    if image.status != "active":
        raise ImsError(400, f"Only active images can be updated; image {image.id} is {image.status}.")
    if not changes:
        return
    draft = image.draft()
    for change in changes:
        _apply_cloudimages_change(draft, change)
    save(image, draft)
