"""Keeping the meaning of v2.0 ``add`` when its body is rewritten to v2.1.

In the v2.0 shape ``add`` of an attribute that exists is a 409, and so is a second ``add``
of the same new attribute; in v2.1 ``add`` acts as replace. A plain rewrite would turn
those conflicts into silent overwrites, so the gateway replays the changes against the
image's current attributes and answers 409 where Glance would.

Glance decides "exists" with ``hasattr()`` on its image object, not on the image's JSON:
the object has attributes the JSON never shows, and every one of them conflicts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final

from gateway.patch.attributes import GLANCE_IMAGE_OBJECT_ATTRIBUTES
from gateway.patch.parser import Change

# Every name hasattr() finds on the image object Glance 33's ImagesController.update
# works on (glance.notifier.ImageProxy over the quota and location proxies), Python's
# own __x__ names aside. A v2.0 add of any of them is 409 and a remove 403, shown in
# the JSON or not. tests/glance/test_differential.py measures this list on a real Glance.
GLANCE_IMAGE_ATTRIBUTES: Final = frozenset({
    # shown in the image's JSON
    "checksum", "container_format", "created_at", "disk_format", "min_disk", "min_ram",
    "name", "os_hash_algo", "os_hash_value", "os_hidden", "owner", "protected", "size",
    "status", "tags", "updated_at", "virtual_size", "visibility",
    # never shown
    "locations", *GLANCE_IMAGE_OBJECT_ATTRIBUTES,
})  # fmt: skip


def needs_check(changes: Iterable[Change]) -> bool:
    return any(change.op == "add" for change in changes)


def first_add_conflict(changes: Iterable[Change], existing: Collection[str]) -> str | None:
    """Glance's message for the first v2.0 ``add`` that conflicts, or None.

    ``existing`` are the attribute names of the image's JSON. The replay stops at the
    first change the upstream would refuse for another reason (replace or remove of a
    missing attribute, remove of an attribute of Glance's image object): the upstream
    answers that one first, exactly as Glance applies changes in order. Every other
    name, ``__description`` included, is a property that a remove deletes.
    """
    present = set(existing) | GLANCE_IMAGE_ATTRIBUTES
    for change in changes:
        name = change.attribute
        if change.op == "add":
            if name in present:
                return f"Property {name} already present."
            present.add(name)
        elif change.op == "replace":
            if name not in present:
                return None
        elif name not in present or name in GLANCE_IMAGE_ATTRIBUTES:
            return None
        else:
            present.discard(name)
    return None
