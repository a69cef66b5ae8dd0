"""Linux capabilities by name, Docker's default set, --cap-add/--cap-drop,
and dropping to a set.

The dropping itself happens in runtime/privileges.py (drop).
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


ALL = "ALL"
SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")   # OCI process.capabilities


def normalize_changes(names, field: str) -> tuple[str, ...]:
    """--cap-add / --cap-drop values: Docker's names with or without CAP_, any
    case, or ALL. One error line naming the field and the accepted names."""
    if names is None:
        return ()
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise CapabilityError(f"{field}: must be a list of capability names such as [\"NET_RAW\"]")
    out = []
    for i, name in enumerate(names):
        if isinstance(name, str) and name.strip().upper() in (ALL, "CAP_ALL"):
            norm = ALL
        else:
            try:
                norm = normalize(name)
            except CapabilityError:
                raise CapabilityError(
                    f"{field}[{i}]: unknown capability {name!r}; accepted: ALL, "
                    + ", ".join(CAPABILITIES) + " (with or without CAP_, any case)") from None
        if norm not in out:
            out.append(norm)
    return tuple(out)


def tweak(base, add=(), drop=()) -> tuple[str, ...]:
    """Docker's rule for --cap-add/--cap-drop on a base set (normalized names):
    ALL in add gives every capability but the dropped ones; ALL in drop gives
    only the added ones; otherwise base minus drop, plus add (an add wins
    over a drop of the same name)."""
    if ALL in add:
        kept = [c for c in CAPABILITIES if c not in drop]
    elif ALL in drop:
        kept = list(add)
    else:
        kept = [c for c in base if c not in drop] + list(add)
    return tuple(c for c in CAPABILITIES if c in kept)


def check_sets(sets: dict) -> str | None:
    """What the kernel would refuse in OCI capability sets (normalized names),
    as "<set>: <why>", or None: effective within permitted, inheritable
    within bounding, ambient within permitted and inheritable."""
    def outside(name, within):
        extra = [c for c in sets.get(name, ()) if c not in sets.get(within, ())]
        return f"{name}: {', '.join(extra)} not in {within}" if extra else None
    return (outside("effective", "permitted") or outside("inheritable", "bounding")
            or outside("ambient", "permitted") or outside("ambient", "inheritable"))


def raisable_ambient(sets: dict) -> list[str]:
    """The ambient capabilities the kernel can raise: those also permitted and
    inheritable (`runc spec` lists ambient ones without inheritable; runc
    skips those, and so do we)."""
    return [c for c in sets.get("ambient", ())
            if c in sets.get("permitted", ()) and c in sets.get("inheritable", ())]


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
