"""What a container spec gets when the request leaves a key out (and no
agentd config says otherwise)."""
from __future__ import annotations

WORKDIR = "/"
# [logs] max_bytes of the embedded default config (agent/default.toml), for
# specs validated without a config and stored specs that predate the key
LOG_MAX_BYTES = 10 << 20
# [network] default of the embedded default config: the network of rootfs
# and image containers that name none, when validated without a config
NETWORK = "bridge"
# the network a stored spec that names none ran on (specs from before networks)
STORED_NETWORK = "host"


def hostname(name: str) -> str:
    """A container's host name when it asks for none: its name made a valid host name."""
    return name.replace("_", "-").replace(".", "-").strip("-")[:63] or "container"
