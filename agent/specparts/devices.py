"""--device: Docker's syntax (the one parser of it; agentctl checks its flag
with it too), resolved on this host to a character or block node."""
from __future__ import annotations

import os
import stat
from typing import Any

from agent.errors import UserError
from agent.labels import unrenderable
from agent.specparts.fields import abs_container_path, key_path, quote
from agent.specparts.values import Device

DEVICE_SYNTAX = "HOST_PATH[:CONTAINER_PATH][:PERMISSIONS], e.g. /dev/sdc:/dev/xvdc:rw (PERMISSIONS: r, w, m; default rwm)"
# names the launcher itself puts in a container's /dev
DEV_RESERVED = ("pts", "shm", "fd", "stdin", "stdout", "stderr", "ptmx", "mqueue")


def split_device(text: Any) -> tuple[str, str, str]:
    """Docker's --device syntax -> (host path, container path, permissions):
    the one parser of it (agentctl checks flags with it too). ValueError:
    one line naming the accepted syntax."""
    from runtime.devfilter import ACCESS_RE
    if not isinstance(text, str) or not text or "\x00" in text:
        raise ValueError(f"{quote(text)} is not a device; use {DEVICE_SYNTAX}")
    why = unrenderable(text)
    if why:
        raise ValueError(f"{quote(text)} {why}; use {DEVICE_SYNTAX}")
    parts = text.split(":")
    if len(parts) == 2 and ACCESS_RE.fullmatch(parts[1]):
        parts = [parts[0], parts[0], parts[1]]
    if len(parts) > 3 or not all(parts) or (len(parts) == 3 and not ACCESS_RE.fullmatch(parts[2])):
        raise ValueError(f"{quote(text)} is not a device; use {DEVICE_SYNTAX}")
    src, dst, access = parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else "rwm"
    for p in (src, dst):
        if not p.startswith("/"):
            raise ValueError(f"{quote(text)}: {quote(p)} is not an absolute path; use {DEVICE_SYNTAX}")
    return src, dst, "".join(c for c in "rwm" if c in access)


def parse_device(i: int, v: Any, rootfs: str) -> Device:
    """One entry of "devices": resolved on this host to its type and numbers."""
    where = f"devices[{i}]"
    if isinstance(v, dict):
        unknown = set(v) - {"src", "dst", "access"}
        if unknown:
            raise UserError(f"{key_path(where, sorted(unknown)[0])}: unknown key; use src, dst, access")
        src = v.get("src")
        text = f"{src}:{v.get('dst') or src}:{v.get('access') or 'rwm'}" if isinstance(src, str) else src
    else:
        text = v
    try:
        src, dst, access = split_device(text)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None
    resolved = os.path.realpath(src)
    try:
        st = os.stat(resolved)
    except OSError:
        raise UserError(f"{where}: {quote(src)} does not exist on this host; use {DEVICE_SYNTAX}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise UserError(f"{where}: {quote(src)} is not a character or block device node")
    dst = abs_container_path(f"{where} container path", dst)
    if rootfs:
        rel = dst[len("/dev/"):] if dst.startswith("/dev/") else ""
        if not rel:
            raise UserError(f"{where} container path: {quote(dst)} must be a name under /dev, e.g. /dev/xvdc")
        if rel.split("/")[0] in DEV_RESERVED:
            raise UserError(f"{where} container path: {quote(dst)} is made by the agent itself; "
                            f"choose another name under /dev")
    elif dst not in (src, resolved):
        raise UserError(f"{where} container path: {quote(dst)} differs from the host path, which needs a rootfs "
                        "(a container on the host's root sees the host's /dev)")
    return Device(resolved, dst, kind, os.major(st.st_rdev), os.minor(st.st_rdev), access)


def parse_devices(v: Any, rootfs: str) -> tuple:
    """The "devices" list: each entry parsed, no two at one container path."""
    devices_in = v or []
    if not isinstance(devices_in, list):
        raise UserError(f"devices: must be a list of {DEVICE_SYNTAX}")
    devices = tuple(parse_device(i, d, rootfs) for i, d in enumerate(devices_in))
    if len({d.dst for d in devices}) < len(devices):
        raise UserError("devices: two devices have the same container path")
    return devices
