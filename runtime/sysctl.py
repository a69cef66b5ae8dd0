"""Namespaced sysctls: which keys a container may set, and setting them.

Only keys the kernel keeps per namespace are accepted (the same list as
runc's validator, written from the kernel's documentation): the IPC
namespace's kernel.msgmax, msgmnb, msgmni, sem, shmall, shmmax, shmmni,
shm_rmid_forced and fs.mqueue.*; net.* only when the container has a
network namespace of its own. Anything else would change the host.
"""
from __future__ import annotations

import os
import re

IPC_KEYS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
            "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
IPC_PREFIXES = ("fs.mqueue.",)
NET_PREFIX = "net."
KEY_RE = re.compile(r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+")
MAX_VALUE = 4096


class SysctlError(ValueError):
    """str(): one line naming the key and what is accepted."""


def accepted(own_netns: bool) -> str:
    return (", ".join(IPC_KEYS) + ", fs.mqueue.*"
            + (", net.*" if own_netns else ", net.* (with a network namespace of its own: network none)"))


def check(key, value, own_netns: bool) -> tuple[str, str]:
    """-> (key, value) or SysctlError."""
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        raise SysctlError(f"{key!r}: not a sysctl name such as kernel.shmmax")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SysctlError(f"{key}: value must be a string")
    value = str(value)
    if "\0" in value or "\n" in value.rstrip("\n") or len(value) > MAX_VALUE:
        raise SysctlError(f"{key}: value must be one line of at most {MAX_VALUE} characters")
    if key in IPC_KEYS or key.startswith(IPC_PREFIXES):
        return key, value
    if key.startswith(NET_PREFIX):
        if own_netns:
            return key, value
        raise SysctlError(f"{key}: net.* needs a network namespace of its own (network none); "
                          "with the host's network it would change the host")
    raise SysctlError(f"{key}: not namespaced (it would change the host); accepted: {accepted(own_netns)}")


def path_of(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def apply(settings: dict) -> None:
    """Write each value; run inside the container's IPC/network namespaces
    (the kernel picks the namespace of the writing task). OSError names
    the key in its filename."""
    for key, value in settings.items():
        path = path_of(key)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise OSError(e.errno, os.strerror(e.errno), key) from None
        finally:
            os.close(fd)
