"""Readings the tests check the gateway against that are not the gateway's own.

The IMS attribute table is copied from Huawei Cloud's IMS API reference ("Modifying an
Image (Native OpenStack API V2, Deprecated)"), and Glance's lists from Glance 33's
RequestDeserializer and image proxies, by hand: never read from gateway.patch, the
shipped configuration or the emulator, so that a mistake there cannot hide here.
"""

from __future__ import annotations

import re
from typing import Final

# Every attribute IMS itself defines, in the reference's order. Only name and
# __description of these may be changed through PATCH /v2/images/{image_id}.
IMS_SYSTEM_ATTRIBUTES: Final = (
    "file", "owner", "id", "size", "self", "schema", "status", "tags", "visibility", "name",
    "checksum", "protected", "container_format", "min_ram", "max_ram", "updated_at",
    "__os_bit", "__os_version", "__description", "disk_format", "__isregistered",
    "__platform", "__os_type", "__system__cmkid", "min_disk", "virtual_env_type",
    "__image_source_type", "__imagetype", "created_at", "virtual_size",
    "__originalimagename", "__backup_id", "__productcode", "__image_size", "__data_origin",
    "__root_origin", "__lazyloading", "active_at", "__os_feature_list", "__account_code",
    "hw_firmware_type", "hw_vif_multiqueue_enabled", "__support_kvm", "__support_xen",
    "__support_largememory", "__support_diskintensive", "__support_highperformance",
    "__support_xen_gpu_type", "__support_kvm_gpu_type", "__support_xen_hana",
    "__support_kvm_infiniband", "__is_offshelved", "enterprise_project_id", "__sequence_num",
    "__support_fc_inject", "__support_arm", "__image_location", "__is_config_init",
    "__support_amd", "__support_agent_list",
)  # fmt: skip
MODIFIABLE_SYSTEM_ATTRIBUTES: Final = frozenset({"name", "__description"})

# Glance's own: read-only, reserved, and the base attributes only Glance sets.
GLANCE_READ_ONLY: Final = frozenset({
    "created_at", "updated_at", "status", "checksum", "size", "virtual_size", "direct_url",
    "self", "file", "schema", "id", "os_hash_algo", "os_hash_value",
})  # fmt: skip
GLANCE_RESERVED: Final = frozenset({"location", "deleted", "deleted_at"})
GLANCE_RESERVED_NAMESPACE: Final = "os_glance"
GLANCE_ONLY: Final = frozenset({"locations", "os_hidden", "stores"})
# Names Glance 33's image object answers to (glance.notifier.ImageProxy and below) that
# its JSON never shows: setattr() on them is not a custom property (replace /image_id
# writes another image).
GLANCE_OBJECT_NAMES: Final = frozenset({
    "base", "context", "deactivate", "delete", "extra_properties", "get_data", "get_payload",
    "get_super_class", "helper", "image_id", "member", "notifier", "reactivate", "repo",
    "send_notification", "set_data", "_abc_impl", "_format_image_send",
    "_format_import_properties", "_get_chunk_data_iterator",
})  # fmt: skip


# IMS names its own extended attributes with a leading "__" (every "__" name above). The
# README's policy reserves that whole namespace but for __description, so that an IMS
# attribute added after this table was copied is refused too: stricter than the
# reference, and documented.
IMS_NAMESPACE: Final = "__"


def may_be_changed(name: str) -> bool:
    """Whether PATCH /v2/images/{image_id} may change the attribute, by the IMS reference's rule:
    the name, the description and customized attributes (any name IMS and Glance do not define)."""
    if name in MODIFIABLE_SYSTEM_ATTRIBUTES:
        return True
    defined = set(IMS_SYSTEM_ATTRIBUTES) | GLANCE_READ_ONLY | GLANCE_RESERVED | GLANCE_ONLY | GLANCE_OBJECT_NAMES
    return name not in defined and not name.startswith(GLANCE_RESERVED_NAMESPACE)


def forbidden_changes(before: dict[str, object], after: dict[str, object] | None) -> list[str]:
    """The attributes that changed and may not have, ``deleted`` if the image is gone."""
    if after is None:
        return ["deleted"]
    return [
        f"{name}: {before.get(name)!r} -> {after.get(name)!r}"
        for name in sorted(set(before) | set(after))
        if name != "updated_at" and before.get(name) != after.get(name) and not may_be_changed(name)
    ]


def gateway_refuses(path: tuple[str, ...]) -> bool:
    """Whether the gateway's documented policy (README, "Policy") refuses a change of the
    decoded ``path``: what the reference forbids, IMS's "__" namespace, and any path deeper
    than one attribute (``/tags/-``)."""
    if len(path) != 1:
        return True
    name = path[0]
    if name.startswith(IMS_NAMESPACE) and name not in MODIFIABLE_SYSTEM_ATTRIBUTES:
        return True
    return not may_be_changed(name)


def glance_depth_ok(op: str, path: tuple[str, ...]) -> bool:
    """Glance's depth rule: one token, but two for add and remove of /locations/N."""
    return len(path) == (2 if path[0] == "locations" and op != "replace" else 1)


# -- JSON pointers --------------------------------------------------------------------


class PointerRefused(ValueError):
    """A pointer the reading refuses."""


def rfc6901_tokens(pointer: str) -> tuple[str, ...]:
    """RFC 6901's reading: "" is the whole document; otherwise "/" then tokens split on
    "/", each with "~1" turned into "/" and then "~0" into "~" (in that order, section 4),
    and "~" followed by anything else an error."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise PointerRefused(f"{pointer!r} does not start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if re.search("~(?![01])", token):
            raise PointerRefused(f"{token!r} has a '~' that is not ~0 or ~1")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


# Unicode whitespace: what str.strip() removes and what re's \s matches (the same 29).
WHITESPACE: Final = tuple(
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


def glance_tokens(pointer: str) -> tuple[str, ...]:
    """Glance's reading (glance-json-patch.md, section 3), as RFC 6901's with Glance's
    differences spelled out: it refuses "" and a few pointers the RFC reads (an empty or
    blank token after the first "/", a trailing "/"), drops every leading "/" (``//a`` is
    ``a``, where the RFC reads "" then "a"), and strips Unicode whitespace around each
    decoded token (the RFC keeps it)."""
    if pointer == "":
        raise PointerRefused("Glance refuses the empty pointer (RFC 6901: the whole document)")
    rest = pointer[1:]
    if not pointer.startswith("/") or re.search(r"/\s*/", rest):
        raise PointerRefused(f"{pointer!r}: no leading '/', or an empty or blank token inside")
    if len(pointer) > 1 and pointer.endswith("/"):
        raise PointerRefused(f"{pointer!r} ends with '/'")
    if rest.strip() == "/":
        raise PointerRefused(f"{pointer!r} has only blank tokens")
    return tuple(token.strip() for token in rfc6901_tokens("/" + pointer.lstrip("/")))
