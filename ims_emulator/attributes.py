"""What the emulator knows of IMS's own image attributes (Huawei Cloud's IMS API reference)."""

from __future__ import annotations

from typing import Final

# The system attributes of an IMS image, in the reference's order; any other name is a
# customized attribute.
SYSTEM_ATTRIBUTES: Final = frozenset({
    "file", "owner", "id", "size", "self", "schema", "status", "tags", "visibility", "name",
    "checksum", "protected", "container_format", "min_ram", "max_ram", "updated_at", "__os_bit",
    "__os_version", "__description", "disk_format", "__isregistered", "__platform", "__os_type",
    "__system__cmkid", "min_disk", "virtual_env_type", "__image_source_type", "__imagetype",
    "created_at", "virtual_size", "__originalimagename", "__backup_id", "__productcode",
    "__image_size", "__data_origin", "__root_origin", "__lazyloading", "active_at",
    "__os_feature_list", "__account_code", "hw_firmware_type", "hw_vif_multiqueue_enabled",
    "__support_kvm", "__support_xen", "__support_largememory", "__support_diskintensive",
    "__support_highperformance", "__support_xen_gpu_type", "__support_kvm_gpu_type",
    "__support_xen_hana", "__support_kvm_infiniband", "__is_offshelved", "enterprise_project_id",
    "__sequence_num", "__support_fc_inject", "__support_arm", "__image_location",
    "__is_config_init", "__support_amd", "__support_agent_list",
})  # fmt: skip

# What PATCH /v2/cloudimages/{id} documents as updatable.
CLOUDIMAGES_UPDATABLE: Final = frozenset({
    "name", "__description", "__support_kvm", "__support_xen", "__support_largememory",
    "__support_diskintensive", "__support_highperformance", "__support_xen_gpu_type",
    "__support_kvm_gpu_type", "__support_xen_hana", "__is_config_init", "enterprise_project_id",
    "min_ram", "hw_vif_multiqueue_enabled", "hw_firmware_type",
})  # fmt: skip
