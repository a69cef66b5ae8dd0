"""A ContainerSpec as the JSON-safe dict kept in the state DB, and back.

from_dict trusts what it reads: this agent validated it when the container
was created; keys added later get their old meaning when absent."""
from __future__ import annotations

from agent.specparts import defaults
from agent.specparts.values import Device, Volume, parse_restart
from runtime import tmpfs as tmpfs_rule


def to_dict(s) -> dict:
    return {
        "name": s.name, "argv": list(s.argv), "env": dict(s.env), "workdir": s.workdir,
        "uid": s.uid, "gid": s.gid, "hostname": s.hostname, "rootfs": s.rootfs,
        "image": s.image, "volumes": [{"src": v.src, "dst": v.dst, "ro": v.ro, "noexec": v.noexec} for v in s.volumes],
        "network": s.network, "limits": s.limits.to_json(), "restart": str(s.restart),
        "labels": dict(s.labels), "log_max_bytes": s.log_max_bytes,
        "auto_remove": s.auto_remove, "start": s.start,
        "cap_add": list(s.cap_add), "cap_drop": list(s.cap_drop), "oci": dict(s.oci),
        "image_ref": s.image_ref, "image_id": s.image_id,
        "userns": s.userns,
        "devices": [d.to_dict() for d in s.devices],
        "read_only": s.read_only, "tmpfs": [t.to_dict() for t in s.tmpfs],
        "exposed_ports": list(s.exposed_ports),
        "net": s.net,
        "tty": s.tty,
    }


def from_dict(cls, d: dict):
    """cls(...) (a ContainerSpec) from what to_dict wrote."""
    from runtime.limits import Limits
    return cls(
        name=d["name"], argv=tuple(d["argv"]), env=dict(d.get("env") or {}), workdir=d.get("workdir", defaults.WORKDIR),
        uid=int(d.get("uid", 0)), gid=int(d.get("gid", 0)), hostname=d.get("hostname", ""),
        rootfs=d.get("rootfs", ""), image=d.get("image", ""),
        volumes=tuple(Volume(v["src"], v["dst"], bool(v.get("ro")), bool(v.get("noexec")))
                      for v in d.get("volumes") or ()),
        network=d.get("network", defaults.STORED_NETWORK), limits=Limits.from_json(d.get("limits") or {}),
        restart=parse_restart(d.get("restart", "no")), labels=dict(d.get("labels") or {}),
        log_max_bytes=int(d.get("log_max_bytes", defaults.LOG_MAX_BYTES)), auto_remove=bool(d.get("auto_remove")),
        start=bool(d.get("start", True)),
        cap_add=tuple(d.get("cap_add") or ()), cap_drop=tuple(d.get("cap_drop") or ()),
        oci=dict(d.get("oci") or {}),
        image_ref=d.get("image_ref", ""), image_id=d.get("image_id", ""),
        userns=d.get("userns", "host"),
        devices=tuple(Device(**x) for x in d.get("devices") or ()),
        read_only=bool(d.get("read_only")),
        tmpfs=tuple(tmpfs_rule.Tmpfs(**x) for x in d.get("tmpfs") or ()),
        exposed_ports=tuple(d.get("exposed_ports") or ()),
        net=d.get("net"),
        tty=bool(d.get("tty")),
    )
