"""Block device paths -> (major, minor), for io.max and io.weight."""
from __future__ import annotations

import os
import stat

from runtime.errors import LimitError

_ACCEPTED = "use a block device path such as /dev/vda, or MAJ:MIN (e.g. 254:0)"


def block_devno(path: str, field: str = "io_max") -> tuple[int, int]:
    """(major, minor) of a block device node; LimitError naming ``field`` if not one.

    Partitions are refused: the io controller limits whole disks (the kernel
    rejects a partition's MAJ:MIN in io.max).
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: an embedded NUL byte
        raise LimitError(field, path, f"does not exist; {_ACCEPTED}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise LimitError(field, path, f"is not a block device; {_ACCEPTED}")
    devno = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if is_partition(devno):
        raise LimitError(field, path, "is a partition; io limits apply to whole disks "
                         "(use the disk, e.g. /dev/vda rather than /dev/vda1)")
    return devno


def is_partition(devno: tuple[int, int]) -> bool:
    return os.path.exists(f"/sys/dev/block/{devno[0]}:{devno[1]}/partition")


def device_name(devno: tuple[int, int]) -> str | None:
    """Kernel name of a block device ("vda") from sysfs, or None if unknown."""
    try:
        with open(f"/sys/dev/block/{devno[0]}:{devno[1]}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return line.strip().split("=", 1)[1]
    except OSError:
        pass
    return None
