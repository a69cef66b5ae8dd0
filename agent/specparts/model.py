"""ContainerSpec: what a user asked for, validated (agent.spec builds it)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from agent.specparts import defaults, security, stored
from agent.specparts.values import RestartPolicy


def _empty_limits():
    from runtime.limits import Limits
    return Limits()


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    argv: tuple
    env: dict = field(default_factory=dict)
    workdir: str = defaults.WORKDIR
    uid: int = 0
    gid: int = 0
    hostname: str = ""
    rootfs: str = ""  # "" = host root
    image: str = ""  # agent.model.image_ref: host, rootfs:<dir>, bundle:<dir> (or an image reference)
    volumes: tuple = ()
    network: str = defaults.STORED_NETWORK
    limits: Any = field(default_factory=_empty_limits)
    restart: RestartPolicy = RestartPolicy()
    labels: dict = field(default_factory=dict)
    log_max_bytes: int = defaults.LOG_MAX_BYTES
    auto_remove: bool = False
    start: bool = True
    cap_add: tuple = ()   # normalized names or ALL (runtime.caps)
    cap_drop: tuple = ()
    oci: dict = field(default_factory=dict)  # honoured bundle fields as spawn-spec keys (agent/bundle_fields.py)
    image_ref: str = ""  # an image container: its normalised reference
    image_id: str = ""   # and the manifest digest it was created from
    # "host" (the host's user namespace), "auto" (one the agent allocates when
    # the container is created) or a mapping {"uid": [[in, host, n]], "gid": ...}
    userns: Any = "host"
    devices: tuple = ()  # Device, granted beyond the default /dev set
    read_only: bool = False  # --read-only: its root read-only (rootfs, bundle or image)
    tmpfs: tuple = ()        # runtime.tmpfs.Tmpfs (--tmpfs DST[:OPTIONS])
    exposed_ports: tuple = ()  # the image config's ExposedPorts, "PORT/PROTO" (recorded, not published)
    stdin: bool = False        # run -i: PID 1's stdin is a pipe the attached client feeds (never persisted)
    net: dict | None = None    # a bridge network's settings (agent/network/netspec.py), its ip once created
    tty: bool = False          # run -t: PID 1 on a terminal of its own devpts (rootfs, bundle or image)
    console_size: tuple = ()   # run -t: (rows, cols) its terminal starts with, the client's (never persisted)

    def with_limits(self, limits) -> "ContainerSpec":
        return replace(self, limits=limits)

    def to_dict(self) -> dict:
        """JSON-safe form, stored in the state DB (agent/specparts/stored.py)."""
        return stored.to_dict(self)

    def spawn_security(self) -> dict:
        """The launcher spawn-spec keys for privileges (agent/specparts/security.py)."""
        return security.spawn_security(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ContainerSpec":
        """Inverse of to_dict for data this agent stored itself (validated when created)."""
        return stored.from_dict(cls, d)
