"""What a checkpoint cannot take, each as one line naming what was wrong and
what is accepted. Checked by agentd before the launcher runs CRIU, so a
refused checkpoint leaves the container as it was."""
from __future__ import annotations

import os
import stat

ACCEPTED = ("checkpoint takes rootfs containers (--rootfs) on --network none without volumes, devices, "
            "--tmpfs or a user namespace, whose processes hold no terminal and no unix socket")
TTY_MAJORS = {4, 5, 136}     # tty/ttyS, /dev/tty /dev/console /dev/ptmx, pts


def spec_refusal(spec) -> str | None:
    """Why this container's spec cannot be checkpointed, or None."""
    what = None
    if getattr(spec, "image_id", "") or getattr(spec, "image_ref", ""):
        what = "it is an image container (its overlay root cannot be given back to CRIU yet)"
    elif not spec.rootfs:
        what = "it runs on the host's root file system, whose mounts CRIU cannot take along"
    elif spec.volumes:
        what = "it has volumes (external bind mounts are not handled yet)"
    elif spec.devices:
        what = "it has --device nodes"
    elif spec.tmpfs:
        what = "it has --tmpfs mounts"
    elif spec.userns not in ("host", None, ""):
        what = "it has a user namespace"
    elif getattr(spec, "net", None) is not None or spec.network not in ("none",):
        what = (f"it is on the {spec.network} network (its veth, address and rules are not handed to "
                "CRIU yet)")
    if what is None:
        return None
    return f"checkpoint {spec.name}: {what}; {ACCEPTED}"


def _unix_inodes(pid: int) -> set[int]:
    """Inodes of the unix sockets in the network namespace of pid."""
    out = set()
    try:
        with open(f"/proc/{pid}/net/unix") as f:
            next(f, None)
            for line in f:
                parts = line.split()
                if len(parts) >= 7 and parts[6].isdigit():
                    out.add(int(parts[6]))
    except OSError:
        pass
    return out


def process_refusal(name: str, pids) -> str | None:
    """A terminal or a unix socket held by one of the container's processes."""
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        unix = None
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in TTY_MAJORS:
                return (f"checkpoint {name}: process {pid} holds a terminal ({link} on fd {fd}); "
                        f"{ACCEPTED}")
            if link.startswith("socket:["):
                if unix is None:
                    unix = _unix_inodes(pid)
                if int(link[8:-1]) in unix:
                    return (f"checkpoint {name}: process {pid} holds a unix socket ({link} on fd {fd}), "
                            f"possibly connected outside the container; {ACCEPTED}")
    return None
