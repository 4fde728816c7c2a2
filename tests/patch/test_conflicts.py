"""The v2.0 add replay (gateway/conflicts.py), pure: the answers Glance 33 gives to the
same changes are pinned in tests/glance/cases.py (V20_ADD_CASES)."""

from __future__ import annotations

import pytest

from gateway.patch.conflicts import (
    GLANCE_IMAGE_ATTRIBUTES,
    first_add_conflict,
    needs_check,
)
from gateway.patch.parser import ABSENT, Change

# The attribute names of an image's JSON, as Glance shows one with a custom property.
SHOWN = ("name", "disk_format", "status", "id", "self", "sparks", "__description")


def add(name: str) -> Change:
    return Change("add", (name,), f"/{name}", "x")


def replace(name: str) -> Change:
    return Change("replace", (name,), f"/{name}", "x")


def remove(name: str) -> Change:
    return Change("remove", (name,), f"/{name}", ABSENT)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ([add("bebim")], None),
        ([add("sparks")], "Property sparks already present."),
        ([add("name")], "Property name already present."),
        ([add("__description")], "Property __description already present."),
        ([add("bebim"), add("bebim")], "Property bebim already present."),
        ([remove("sparks"), add("sparks")], None),
        ([add("bebim"), remove("bebim"), add("bebim")], None),
        # __description is a property: removing it goes on to the next change.
        ([remove("__description"), add("sparks")], "Property sparks already present."),
        ([remove("__description"), add("__description")], None),
        # The upstream refuses these first, with its own message.
        ([replace("colburn"), add("sparks")], None),
        ([remove("colburn"), add("sparks")], None),
        ([remove("name"), add("sparks")], None),
        ([remove("member"), add("sparks")], None),
        # Attributes of Glance's image object that its JSON never shows.
        ([add("member")], "Property member already present."),
        ([add("image_id")], "Property image_id already present."),
        ([replace("context"), add("sparks")], "Property sparks already present."),
    ],
)
def test_the_first_conflicting_add_is_found_as_glance_finds_it(changes: list[Change], message: str | None) -> None:
    assert first_add_conflict(changes, SHOWN) == message


def test_the_image_object_attributes_exist_even_on_an_image_showing_nothing() -> None:
    for name in GLANCE_IMAGE_ATTRIBUTES:
        assert first_add_conflict([add(name)], ()) == f"Property {name} already present."


@pytest.mark.parametrize(
    ("changes", "needed"),
    [([], False), ([replace("name"), remove("sparks")], False), ([replace("name"), add("bebim")], True)],
)
def test_only_a_body_with_an_add_needs_the_check(changes: list[Change], needed: bool) -> None:
    assert needs_check(changes) is needed
