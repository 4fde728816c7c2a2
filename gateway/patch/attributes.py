"""The attribute names the PATCH domain decides on: IMS's and Glance's, as data."""

from __future__ import annotations

from typing import Final

# Glance's own attribute checks (RequestDeserializer._readonly_properties,
# _reserved_properties, _reserved_namespaces).
GLANCE_READ_ONLY_ATTRIBUTES: Final = (
    "created_at", "updated_at", "status", "checksum", "size", "virtual_size",
    "direct_url", "self", "file", "schema", "id", "os_hash_algo", "os_hash_value",
)  # fmt: skip
GLANCE_RESERVED_ATTRIBUTES: Final = ("location", "deleted", "deleted_at")
GLANCE_RESERVED_NAMESPACE: Final = "os_glance"

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
