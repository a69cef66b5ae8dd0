"""Linux capabilities by name, Docker's default set, and dropping to a set.

The dropping itself happens in runtime/spawn.py (_drop_privileges).
"""

from __future__ import annotations

CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
    "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
    "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
CAP_NUMBER = {name: i for i, name in enumerate(CAPABILITIES)}

# moby/oci/caps/defaults.go: the set a `docker run` container gets.
DOCKER_DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
    "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
    "AUDIT_WRITE",
)


class CapabilityError(ValueError):
    pass


def normalize(name: str) -> str:
    """'cap_net_raw', 'CAP_NET_RAW', 'net_raw' -> 'NET_RAW'."""
    if not isinstance(name, str):
        raise CapabilityError(f"capabilities: {name!r} is not a string")
    up = name.strip().upper()
    if up.startswith("CAP_"):
        up = up[4:]
    if up not in CAP_NUMBER:
        raise CapabilityError(
            f"capabilities: unknown capability {name!r}; accepted: "
            + ", ".join(CAPABILITIES))
    return up


def mask(names) -> int:
    m = 0
    for name in names:
        m |= 1 << CAP_NUMBER[normalize(name)]
    return m


def names_of(m: int) -> list[str]:
    return [n for i, n in enumerate(CAPABILITIES) if m >> i & 1]


DOCKER_DEFAULT_MASK = mask(DOCKER_DEFAULT)   # 0xa80425fb, as `docker run` shows


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def parse_status_mask(status_text: str, field: str = "CapEff") -> int:
    """The hex mask of one Cap* line of /proc/<pid>/status."""
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise KeyError(field)
