"""Which image attributes a PATCH /v2/images/{id} may change, and why not.

IMS allows only the name, the description (``__description``) and customized
attributes through this API. Decisions are made on the decoded attribute name
(``Change.path``), case-sensitively as Glance compares them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gateway.patch.attributes import (
    GLANCE_IMAGE_OBJECT_ATTRIBUTES,
    GLANCE_PROTECTED_ATTRIBUTES,
    GLANCE_RESERVED_NAMESPACE,
    IMS_SYSTEM_ATTRIBUTES,
)
from gateway.patch.parser import Change
from gateway.vocabulary import AttributeClass

DEFAULT_ALLOWED_SYSTEM_ATTRIBUTES: Final = ("name", "__description")
DEFAULT_FORBIDDEN_ATTRIBUTES: Final = tuple(
    sorted(
        {*IMS_SYSTEM_ATTRIBUTES, *GLANCE_PROTECTED_ATTRIBUTES, *GLANCE_IMAGE_OBJECT_ATTRIBUTES}
        - set(DEFAULT_ALLOWED_SYSTEM_ATTRIBUTES)
    )
)
DEFAULT_FORBIDDEN_PREFIXES: Final = ("__", GLANCE_RESERVED_NAMESPACE)

_NAMED_CLASSES: Final = {"name": AttributeClass.NAME, "__description": AttributeClass.DESCRIPTION}
_IMS_SYSTEM: Final = frozenset(IMS_SYSTEM_ATTRIBUTES)


@dataclass(slots=True)  # not frozen: its __init__ then costs a third
class Violation:
    index: int
    op: str
    pointer: str
    attribute: str
    reason: str


class Policy:
    """The attribute policy: allowed names win over forbidden names and prefixes.

    ``classify`` answers SYSTEM exactly for the changes ``violations`` lists; an
    allowed name other than name and __description counts as CUSTOM.
    """

    __slots__ = ("_only", "allowed_system_attributes", "forbidden_attributes", "forbidden_prefixes")

    def __init__(
        self,
        *,
        allowed_system_attributes: Iterable[str] = DEFAULT_ALLOWED_SYSTEM_ATTRIBUTES,
        forbidden_attributes: Iterable[str] = DEFAULT_FORBIDDEN_ATTRIBUTES,
        forbidden_prefixes: Iterable[str] = DEFAULT_FORBIDDEN_PREFIXES,
    ) -> None:
        allowed = _names("allowed_system_attributes", allowed_system_attributes)
        self.allowed_system_attributes: frozenset[str] = frozenset(allowed)
        self.forbidden_attributes: frozenset[str] = frozenset(
            _names("forbidden_attributes", forbidden_attributes)
        )
        self.forbidden_prefixes: tuple[str, ...] = tuple(
            dict.fromkeys(_names("forbidden_prefixes", forbidden_prefixes))
        )
        self._only = _allowed_phrase(allowed)

    def classify(self, change: Change) -> AttributeClass:
        path = change.path
        if len(path) != 1:
            return AttributeClass.SYSTEM
        name = path[0]
        if name in self.allowed_system_attributes:
            return _NAMED_CLASSES.get(name, AttributeClass.CUSTOM)
        if name in self.forbidden_attributes or name.startswith(self.forbidden_prefixes):
            return AttributeClass.SYSTEM
        return _NAMED_CLASSES.get(name, AttributeClass.CUSTOM)

    def violations(self, changes: Iterable[Change]) -> list[Violation]:
        """Every change the policy refuses, in order, with its index in ``changes``."""
        found = []
        for index, change in enumerate(changes):
            if self.classify(change) is AttributeClass.SYSTEM:
                attribute = "/".join(change.path)
                found.append(
                    Violation(index, change.op, change.pointer, attribute, self._why(change))
                )
        return found

    def describe(self) -> str:
        prefixes = ", ".join(repr(prefix) for prefix in self.forbidden_prefixes) or "none"
        return (
            f"attribute policy: {len(self.allowed_system_attributes)} allowed system attributes, "
            f"{len(self.forbidden_attributes)} forbidden attributes, "
            f"{len(self.forbidden_prefixes)} forbidden prefixes ({prefixes})"
        )

    def _why(self, change: Change) -> str:
        if len(change.path) != 1:
            return (
                f"'{'/'.join(change.path)}' is not a single attribute: "
                "a path must name exactly one attribute"
            )
        name = change.path[0]
        if name in self.forbidden_attributes:
            kind = "an IMS system attribute" if name in _IMS_SYSTEM else "a protected attribute"
            return f"'{name}' is {kind}; only {self._only} may be modified through this API"
        prefix = next(prefix for prefix in self.forbidden_prefixes if name.startswith(prefix))
        return f"'{name}' starts with the reserved prefix '{prefix}'"


def _names(option: str, values: Iterable[str]) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{option}: expected a list of names, got the single string {values!r}")
    names = list(values)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{option}: every entry must be a non-empty string, got {name!r}")
    return names


def _allowed_phrase(allowed: list[str]) -> str:
    """'name, __description and customized attributes' for the configured names."""
    items = [*dict.fromkeys(allowed), "customized attributes"]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
