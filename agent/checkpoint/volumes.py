"""A restored container's volumes, checked as at its create, handed to CRIU
by a path nobody else can change.

CRIU mounts an external mount from a path it is given. Handing it the
volume's source path would check one file and let CRIU mount another (a
symlink swapped in between). So each source is opened once as the create
does (runtime/mounts.py: openat2 without magic links, the descriptor's own
path and identity checked against the agent's state dir and socket and the
sensitive host trees), cloned from that descriptor (open_tree) with the
volume's flags (ro, nosuid, nodev except for /dev trees, noexec; private),
and attached on a fresh point of a staging dir of the restore (`stage`):
that mount is what CRIU binds (`--ext-mount-map KEY:POINT`). The staging
dir is under /run, 0711: CRIU opens the points from inside the user
namespace it restores, whose root cannot search the 0700 state dir.
`unstage` detaches them once CRIU is done.

Runs in the launcher (it mounts; agentd never does).
"""
from __future__ import annotations

import hashlib
import os

from runtime import mounts as mountsmod
from runtime import namespaces as ns

RUN = "/run"
VOLUME_PREFIX = "v"          # the external key of a volume: v0, v1, ... (the agent's files: m0, ...)


class VolumeError(Exception):
    """A volume's source cannot be given to the restored container (one line)."""


def is_volume_key(key: str) -> bool:
    return key.startswith(VOLUME_PREFIX)


def stage(d: str, volumes: dict, spawn_mounts: list, protected: dict, sensitive_ok: bool,
          idmap: tuple[int, set] = (-1, set())) -> dict:
    """{key: staged path} for every volume {dst: key}, from the new spawn
    spec's mounts (src, dst, ro, noexec); VolumeError naming the first refused.
    `idmap` (user namespace fd, destinations): those volumes idmapped with its
    mapping, as the container's start made them (CRIU keeps no idmap)."""
    unstage(d)              # what a restore that died left (detached first: never a volume's files removed)
    top = stage_dir(d)
    os.makedirs(top, mode=0o711)
    os.chmod(top, 0o711)
    prot = mountsmod.Protected(**{k: str(v) for k, v in (protected or {}).items() if k in ("state_dir", "socket")})
    by_dst = {m.get("dst"): m for m in spawn_mounts or [] if isinstance(m, dict)}
    out = {}
    try:
        for dst, key in sorted(volumes.items()):
            m = by_dst.get(dst)
            if m is None or not isinstance(m.get("src"), str):
                raise VolumeError(f"volume {dst}: the new container has no source for it")
            out[key] = _stage_one(top, key, m, prot, sensitive_ok, idmap[0] if dst in idmap[1] else -1)
    except BaseException:
        unstage(d)
        raise
    return out


def _stage_one(top: str, key: str, m: dict, prot, sensitive_ok: bool, userns_fd: int = -1) -> str:
    what = f"volume {m['src']} on {m['dst']}"
    try:
        o = mountsmod.open_host_path(m["src"])
    except OSError as e:
        raise VolumeError(f"{what}: {os.strerror(e.errno)}") from None
    try:
        try:
            mountsmod.check_opened(o, prot, sensitive_ok)
        except mountsmod.Refused as e:
            raise VolumeError(f"{what}: refused: {e}") from None
        device_tree = o.real == "/dev" or o.real.startswith("/dev/")
        tree = mountsmod.clone_tree(o)
        try:
            if not mountsmod.set_tree_flags(tree, ro=bool(m.get("ro")), nosuid=True, nodev=not device_tree,
                                            noexec=bool(m.get("noexec"))):
                raise VolumeError(f"{what}: this kernel has no mount_setattr (Linux 5.12+), "
                                  "which a restored volume needs")
            if userns_fd >= 0:
                from runtime.userns import idmap_tree
                why = idmap_tree(tree, userns_fd)
                if why:
                    raise VolumeError(f"{what}: idmapped at the checkpoint and cannot be here: {why}")
            point = os.path.join(top, key)
            if o.is_dir:
                os.mkdir(point, 0o700)
            else:
                os.close(os.open(point, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            mountsmod.attach_at(tree, point)
        finally:
            os.close(tree)
    finally:
        o.close()
    return point


def stage_dir(d: str) -> str:
    """The staging dir of the restore of checkpoint dir `d`."""
    return os.path.join(RUN, "cga-restore-" + hashlib.sha256(os.path.abspath(d).encode()).hexdigest()[:16])


def unstage(d: str) -> None:
    """Detach every staged volume of checkpoint dir d and remove the staging dir."""
    top = stage_dir(d)
    try:
        names = os.listdir(top)
    except FileNotFoundError:
        return
    for n in names:           # each point detached then removed: never a recursive removal
        point = os.path.join(top, n)
        try:
            ns.umount2(point, ns.MNT_DETACH)
        except OSError:
            pass
        for remove in (os.rmdir, os.unlink):
            try:
                remove(point)
                break
            except OSError:
                continue
    try:
        os.rmdir(top)
    except OSError:
        pass
