"""Resource limits (setrlimit) by their OCI names, for a container's first process."""
from __future__ import annotations

import errno
import resource

# Linux numbers (asm-generic/resource.h); Python's resource module lacks some
NUMBER = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
          "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
          "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
          "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15}
NAMES = tuple(NUMBER)
UNLIMITED = 2**64 - 1        # RLIM_INFINITY as the OCI spec (uint64) writes it


class RlimitError(ValueError):
    """str(): one line naming the entry and what is accepted."""


def check(entry) -> tuple[str, int, int]:
    """One {"type", "soft", "hard"} -> (type, soft, hard)."""
    if not isinstance(entry, dict) or set(entry) - {"type", "soft", "hard"}:
        raise RlimitError("must be an object with type, soft, hard")
    kind = entry.get("type")
    if kind not in NAMES:
        raise RlimitError(f"type: {kind!r} is not one of {', '.join(NAMES)}")
    vals = []
    for k in ("soft", "hard"):
        v = entry.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= UNLIMITED:
            raise RlimitError(f"{k}: must be an integer from 0 to {UNLIMITED} (unlimited)")
        vals.append(v)
    soft, hard = vals
    if soft > hard:
        raise RlimitError(f"soft: {soft} is above hard {hard}")
    return kind, soft, hard


def _native(v: int) -> int:
    # Python's setrlimit takes a signed 64-bit value; -1 is RLIM_INFINITY
    return resource.RLIM_INFINITY if v >= 2**63 else v


def set_limit(kind: str, soft: int, hard: int) -> None:
    """setrlimit by OCI name; OSError (EPERM: above the hard limit without
    CAP_SYS_RESOURCE, or RLIMIT_NOFILE above fs.nr_open)."""
    try:
        resource.setrlimit(NUMBER[kind], (_native(soft), _native(hard)))
    except ValueError as e:
        raise OSError(errno.EINVAL, str(e)) from None
