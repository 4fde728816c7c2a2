"""A stand-in for IMS's ``/v2/images`` API, beside the gateway rather than part of it.

``ims-gateway serve`` starts it in-process when no upstream is configured, and it is the
upstream of the test suites. It follows Glance v2's rules for ``/v2/images`` (IMS is
Glance v2 compatible) and IMS's for ``PATCH /v2/cloudimages/{id}``. Errors are
IMS-shaped, with Glance's messages. It keeps images in memory only and their data in a
temporary directory removed when it stops.
"""
