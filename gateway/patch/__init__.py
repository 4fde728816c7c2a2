"""The image PATCH domain, free of HTTP: parsing both body shapes, the attribute policy,
the v2.0 ``add`` conflicts, the deprecation schedule and how request targets are read."""
