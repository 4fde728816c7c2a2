"""PATCH /v2/images/{id} as Glance applies it: ImagesController._do_add/_do_replace/_do_remove."""

from __future__ import annotations

from typing import Any

from ims_emulator.deserializer import Change
from ims_emulator.errors import ImsError
from ims_emulator.images import Image, save


def _locations_refusal(change: Change) -> ImsError:
    # Glance's answers with show_multiple_locations off, its default and what IMS exposes.
    if change.op == "replace" and not change.value:
        return ImsError(403, "Cannot set locations to empty list.")
    verb = {"add": "add", "remove": "remove", "replace": "update"}[change.op]
    return ImsError(403, f"It's not allowed to {verb} locations if locations are invisible.")


def _glance_add(image: Image, name: str, value: Any, draft: int) -> None:
    exists = name in image.attributes or name in image.properties
    if exists and draft == 4:  # the v2.0 body shape: add never overwrites
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


def _apply_glance_change(image: Image, change: Change) -> None:
    name = change.name
    if name == "locations":
        raise _locations_refusal(change)
    if change.op == "remove":
        _glance_remove(image, name)
    elif name == "owner":
        raise ImsError(403, "Owner can't be updated by non admin.")
    elif change.op == "replace":
        _glance_replace(image, name, change.value)
    else:
        _glance_add(image, name, change.value, change.draft)


def apply_glance_patch(image: Image, changes: list[Change]) -> None:
    """Apply the changes in order to a draft; save only when every one succeeds."""
    if not changes:
        return
    draft = image.draft()
    for change in changes:
        _apply_glance_change(draft, change)
    save(image, draft)
