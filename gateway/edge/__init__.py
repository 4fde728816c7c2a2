"""The HTTP edge: the hardened client-facing listener, header hygiene, the upstream client
and the gateway's own error answers."""
