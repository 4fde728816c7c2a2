"""End-to-end suite against a real OpenStack Glance (marker ``glance``)."""
