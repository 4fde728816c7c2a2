"""Which image attributes a PATCH /v2/images/{id} may change, and why not.

IMS allows only the name, the description (``__description``) and customized
attributes through this API. Decisions are made on the decoded attribute name
(``Change.path``), case-sensitively as Glance compares them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from gateway.patch import (
    GLANCE_READ_ONLY_ATTRIBUTES,
    GLANCE_RESERVED_ATTRIBUTES,
    GLANCE_RESERVED_NAMESPACE,
    Change,
)


class AttributeClass(enum.StrEnum):
    NAME = "name"
    DESCRIPTION = "description"
    CUSTOM = "custom"
    SYSTEM = "system"


# The system attributes of an IMS image (reference/ims-patch-api.md), in its order.
IMS_SYSTEM_ATTRIBUTES: Final = (
    "file", "owner", "id", "size", "self", "schema", "status", "tags", "visibility",
    "name", "checksum", "protected", "container_format", "min_ram", "max_ram",
    "updated_at", "__os_bit", "__os_version", "__description", "disk_format",
    "__isregistered", "__platform", "__os_type", "__system__cmkid", "min_disk",
    "virtual_env_type", "__image_source_type", "__imagetype", "created_at",
    "virtual_size", "__originalimagename", "__backup_id", "__productcode",
    "__image_size", "__data_origin", "__root_origin", "__lazyloading", "active_at",
    "__os_feature_list", "__account_code", "hw_firmware_type",
    "hw_vif_multiqueue_enabled", "__support_kvm", "__support_xen",
    "__support_largememory", "__support_diskintensive", "__support_highperformance",
    "__support_xen_gpu_type", "__support_kvm_gpu_type", "__support_xen_hana",
    "__support_kvm_infiniband", "__is_offshelved", "enterprise_project_id",
    "__sequence_num", "__support_fc_inject", "__support_arm", "__image_location",
    "__is_config_init", "__support_amd", "__support_agent_list",
)  # fmt: skip

# Glance's read-only and reserved names, plus the base attributes only Glance itself
# sets: "locations" (its own API), "os_hidden", and "stores" (refused on create,
# RequestDeserializer._disallowed_properties).
GLANCE_PROTECTED_ATTRIBUTES: Final = tuple(
    sorted(
        {*GLANCE_READ_ONLY_ATTRIBUTES, *GLANCE_RESERVED_ATTRIBUTES}
        | {"locations", "os_hidden", "stores"}
    )
)

# Names Glance's image object answers to without showing them in the image's JSON
# (glance.notifier.ImageProxy and the proxies under it). A v2.1 replace of one of them
# calls setattr() on that object: Glance 33 lets `replace /image_id` point the save at
# another image and overwrite it. They are not customized attributes.
GLANCE_IMAGE_OBJECT_ATTRIBUTES: Final = (
    "base", "context", "deactivate", "delete", "extra_properties", "get_data",
    "get_payload", "get_super_class", "helper", "image_id", "member", "notifier",
    "reactivate", "repo", "send_notification", "set_data", "_abc_impl",
    "_format_image_send", "_format_import_properties", "_get_chunk_data_iterator",
)  # fmt: skip

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


@dataclass(frozen=True, slots=True)
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

    __slots__ = ("allowed_system_attributes", "forbidden_attributes", "forbidden_prefixes", "_only")

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
