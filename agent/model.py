"""Read-only views shared between the supervisor, collector, ledger and exporters."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any


class State(enum.StrEnum):
    """The one container state enum (a str: stored, shown and compared as its
    value). created -> running <-> paused; running -> exited -> (restarting ->
    running)*. Adding a state is one line here; say in ACTIVE / LIVE below
    whether it has a process / counts as live."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    EXITED = "exited"
    RESTARTING = "restarting"
    CHECKPOINTED = "checkpointed"   # its tree dumped by CRIU, not running (agent/checkpoint/service.py)


STATES = tuple(State)
ACTIVE = frozenset({State.RUNNING, State.PAUSED})  # a process of it runs (or is frozen)
LIVE = frozenset({State.RUNNING, State.PAUSED, State.RESTARTING})  # what `ps` without --all lists

HOST_IMAGE = "host"


def image_ref(image: str, rootfs: str = "", bundle: str = "") -> str:
    """The one rule for a container's ``image`` (ps, inspect, and the image label
    of /metrics): the image reference when there is one; otherwise
    ``bundle:<dir>`` for an OCI bundle, ``rootfs:<dir>`` for a root directory,
    ``host`` for a container that runs on the host's root. Never "": the root and
    other non-container cgroups keep image="" so that image!="" selects containers.

    A value stored by an older agent (a bare path) is read by the same rule: a
    bare path that holds the rootfs below it was a bundle, else the rootfs.
    """
    if bundle:
        return "bundle:" + bundle
    if image and not image.startswith("/"):
        return image                      # already a reference: bundle:, rootfs:, host, or an image
    if image and rootfs.startswith(image.rstrip("/") + "/"):
        return "bundle:" + image          # legacy: the bundle path
    if rootfs:
        return "rootfs:" + rootfs
    return HOST_IMAGE


@dataclass(frozen=True, kw_only=True)
class ContainerRecord:
    """A container and its runs as the state store keeps them: the base of the stored row
    (agent.store.ContainerRow, which adds the spec and limits as JSON) and of the view
    (ContainerInfo, built from the row). Immutable: a change is a new record (dataclasses.replace)."""

    id: str
    name: str
    cgroup: str
    state: str = "created"
    pid: int | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    oom_killed: bool = False
    oom_kills: int = 0
    restart_count: int = 0
    cgroup_inode: int | None = None  # identifies this cgroup instance

    def record_fields(self) -> dict:
        """The ContainerRecord fields of this record, by name (to build another kind from it)."""
        return {f.name: getattr(self, f.name) for f in fields(ContainerRecord)}


@dataclass(frozen=True)
class ContainerInfo(ContainerRecord):
    limits: Any  # runtime.limits.Limits
    labels: dict = field(default_factory=dict)
    image: str = ""  # agent.model.image_ref: "host", "rootfs:<dir>", "bundle:<dir>" or an image
    restart_policy: str = "no"
    # added by the supervisor (containers issue):
    argv: tuple = ()  # the command it runs
    auto_remove: bool = False  # removed once it exited for good (run --rm)
    # "host", or {"uid": [[inside, host, count]], "gid": [...], "idmap": {dst: "idmapped" | why not}}
    userns: Any = "host"
    devices: tuple = ()  # granted host devices, "SRC:DST:ACCESS" (run --device)
    device_filter: str = ""  # "on" (BPF device allow-list on its cgroup) or "off: <reason>"
    # added by billing: bytes of output the container produced into
    # its log files, kept or rotated away (agent.logfiles); None = unknown now
    log_bytes: int | None = None
    read_only: bool = False  # its root read-only (run --read-only)
    tmpfs: tuple = ()  # "DST:OPTIONS" of each fresh tmpfs (run --tmpfs)
    exposed_ports: tuple = ()  # the image config's ExposedPorts, "PORT/PROTO": recorded, not published
    network: dict | None = None  # {name, ip, mac, ports} (agent/network/netspec.view)
    tty: bool = False  # PID 1 on a terminal of its own devpts (run -t)
