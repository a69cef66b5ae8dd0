"""User namespaces: id ranges the agent owns, per-container allocation, the
namespace itself and idmapped mounts.

Ranges. The agent owns a range of host uids and one of host gids: the
/etc/subuid and /etc/subgid entries of the `cgroup-agent` user when both
exist (`subid_ranges`), otherwise `[security] userns_range` of the config
("START:LENGTH", `parse_range`). `Pool` cuts them into blocks of
CONTAINER_IDS (65536) ids; `Pool.allocate(busy)` hands out the first block
no live container holds. Which blocks are held is the caller's record (the
agent keeps it in each container's stored spec), so a restarted agent never
hands out a block twice.

Maps. A mapping is {"uid": [[inside, host, count], ...], "gid": [...]}, the
lines of /proc/PID/uid_map (`check_mapping` validates one).

Namespace. `create(mapping)` forks a helper that unshares CLONE_NEWUSER and
waits; the caller, still privileged in its own user namespace, writes the
helper's uid_map and gid_map (no "setgroups deny" needed: the writer holds
CAP_SETGID in the parent namespace), opens /proc/HELPER/ns/user and lets the
helper go. The descriptor keeps the namespace alive: `idmap_tree(fd, ...)`
gives a detached mount tree (open_tree OPEN_TREE_CLONE|AT_RECURSIVE) the
namespace's mapping (mount_setattr MOUNT_ATTR_IDMAP, Linux >= 5.12;
recursive on >= 5.19 when every submount's filesystem supports it), and
`enter(fd)` moves the caller into the namespace as its root.

Idmapped mounts. Through such a mount a file stored with owner 0 shows as
owned by the container's root (host uid HOST) and a file written by the
container's root is stored with owner 0: a volume or rootfs behaves exactly
as it did without a user namespace. Where the filesystem cannot be idmapped
(tmpfs before 6.3, 9p, nfs, ...), `idmap_tree` returns the tree unchanged
with a one-line reason: the container keeps its user namespace and sees that
tree's files with owners outside its map as nobody (65534).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from dataclasses import dataclass

from . import mounts
from . import namespaces as ns

CONTAINER_IDS = 65536           # container ids 0..65535
OVERFLOW_ID = 65534             # what an unmapped owner shows as (kernel.overflowuid)
AGENT_USER = "cgroup-agent"
SUBUID_FILE = "/etc/subuid"
SUBGID_FILE = "/etc/subgid"
MAX_MAP_LINES = 340             # the kernel's limit per uid_map/gid_map
# [security] userns_range's default: 0x70000000..0x7FFDFFFF, 4094 containers;
# clear of useradd's subordinate ids (100000 up), LXD's default (1000000 up,
# 10**9 ids), systemd-nspawn's pick range (524288..1879048191) and systemd's
# foreign range (0x7FFE0000..), and below 2**31 (tools that take ids as signed)
DEFAULT_RANGE = "1879048192:268304384"
RANGE_RE = re.compile(r"^\s*(\d{1,10})\s*:\s*(\d{1,10})\s*$")

MOUNT_ATTR_IDMAP = 0x100000    # linux/mount.h (the other syscalls and flags: runtime/mounts.py)

_libc = ctypes.CDLL(None, use_errno=True)


class UsernsError(ValueError):
    """A range, mapping or subid file is malformed; one line naming it."""


# ------------------------------------------------------------------ ranges

def parse_range(text: str, what: str = "security.userns_range") -> tuple[int, int]:
    """"START:LENGTH" -> (start, length). The range must hold at least one
    container's ids, stay clear of host ids 0..65535 (root, system and
    login users) and end below 2**32 - 1."""
    m = RANGE_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise UsernsError(f"{what}: {text!r} is not START:LENGTH, e.g. \"1000000000:1000000000\"")
    start, length = int(m.group(1)), int(m.group(2))
    _check_range(what, start, length)
    return start, length


def _check_range(what: str, start: int, length: int) -> None:
    if start < CONTAINER_IDS:
        raise UsernsError(f"{what}: starts at {start}; it must start at {CONTAINER_IDS} or above "
                          "(host ids 0..65535 belong to root, system and login users)")
    if length < CONTAINER_IDS:
        raise UsernsError(f"{what}: length {length} is less than one container's {CONTAINER_IDS} ids")
    if start + length > 0xFFFFFFFF:
        raise UsernsError(f"{what}: ends past 4294967294, the largest id")


def read_subids(path: str, user: str = AGENT_USER, uid: int | None = None) -> list[tuple[int, int]]:
    """The ranges /etc/subuid-style `path` gives `user` (by name, or by
    numeric uid), in file order; [] when the file or the entry is absent.
    Entries smaller than one container or reaching into 0..65535 are skipped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or line.lstrip().startswith("#"):
            continue
        owner, start, count = parts
        if owner != user and (uid is None or owner != str(uid)):
            continue
        if not (start.isdigit() and count.isdigit()):
            continue
        try:
            _check_range(path, int(start), int(count))
        except UsernsError:
            continue
        out.append((int(start), int(count)))
    return out


@dataclass(frozen=True)
class Pool:
    """The host ids the agent hands out: uid and gid ranges and where they came from."""
    uids: tuple[tuple[int, int], ...]
    gids: tuple[tuple[int, int], ...]
    source: str          # "/etc/subuid+/etc/subgid (cgroup-agent)" or "security.userns_range"

    @property
    def blocks(self) -> int:
        return min(_nblocks(self.uids), _nblocks(self.gids))

    def block(self, i: int) -> dict:
        """The mapping of block i: container 0..65535 -> its host uids and gids."""
        return {"uid": [[0, _block_start(self.uids, i), CONTAINER_IDS]],
                "gid": [[0, _block_start(self.gids, i), CONTAINER_IDS]]}

    def allocate(self, busy) -> dict:
        """The first block whose host uids and gids overlap none of the
        mappings in `busy` (those of live containers). UsernsError when all
        are taken."""
        taken_u = [(h, n) for m in busy for _c, h, n in m.get("uid", ())]
        taken_g = [(h, n) for m in busy for _c, h, n in m.get("gid", ())]
        for i in range(self.blocks):
            cand = self.block(i)
            (_, hu, n), = cand["uid"]
            (_, hg, _), = cand["gid"]
            if not _overlaps(hu, n, taken_u) and not _overlaps(hg, n, taken_g):
                return cand
        raise UsernsError(f"userns: all {self.blocks} id ranges of {self.source} are in use; "
                          "remove containers or give the agent a larger range")

    def describe(self) -> str:
        def fmt(rs):
            return ",".join(f"{s}-{s + n - 1}" for s, n in rs)
        return f"uids {fmt(self.uids)} gids {fmt(self.gids)} ({self.blocks} containers) from {self.source}"


def _nblocks(ranges) -> int:
    return sum(n // CONTAINER_IDS for _s, n in ranges)


def _block_start(ranges, i: int) -> int:
    for start, n in ranges:
        k = n // CONTAINER_IDS
        if i < k:
            return start + i * CONTAINER_IDS
        i -= k
    raise IndexError(i)


def _overlaps(start: int, n: int, taken) -> bool:
    return any(start < h + c and h < start + n for h, c in taken)


def agent_pool(configured: str, subuid: str = SUBUID_FILE, subgid: str = SUBGID_FILE,
               user: str = AGENT_USER) -> Pool:
    """The agent's pool: the `cgroup-agent` user's /etc/subuid and /etc/subgid
    entries when both exist, else the configured "START:LENGTH"."""
    uid = None
    try:
        import pwd
        uid = pwd.getpwnam(user).pw_uid
    except (KeyError, ImportError):
        pass
    uids, gids = read_subids(subuid, user, uid), read_subids(subgid, user, uid)
    if uids and gids:
        pool = Pool(tuple(uids), tuple(gids), f"{subuid}+{subgid} ({user})")
        if pool.blocks:
            return pool
    rng = parse_range(configured)
    return Pool((rng,), (rng,), "security.userns_range")


# ------------------------------------------------------------------ mappings

def check_mapping(m, what: str = "userns") -> dict:
    """Validate {"uid": [[inside, host, count], ...], "gid": [...]}; returns
    it with plain lists. Each side: 1..340 lines, counts >= 1, ids below
    2**32 - 1, no two lines overlapping inside or on the host."""
    if not isinstance(m, dict) or set(m) - {"uid", "gid"} or not {"uid", "gid"} <= set(m):
        raise UsernsError(f"{what}: must be {{\"uid\": [[inside, host, count], ...], \"gid\": [...]}}")
    out = {}
    for side in ("uid", "gid"):
        lines = m[side]
        if not isinstance(lines, (list, tuple)) or not 1 <= len(lines) <= MAX_MAP_LINES:
            raise UsernsError(f"{what}.{side}: must be a list of 1 to {MAX_MAP_LINES} [inside, host, count] lines")
        norm = []
        for i, line in enumerate(lines):
            if (not isinstance(line, (list, tuple)) or len(line) != 3
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in line)):
                raise UsernsError(f"{what}.{side}[{i}]: must be [inside, host, count], three integers")
            inside, host, count = line
            if count < 1 or inside < 0 or host < 0 or inside + count > 0xFFFFFFFF or host + count > 0xFFFFFFFF:
                raise UsernsError(f"{what}.{side}[{i}]: ids must lie in 0..4294967294 and count be >= 1")
            norm.append([inside, host, count])
        for a in range(len(norm)):
            for b in range(a):
                for k, where in ((0, "inside"), (1, "on the host")):
                    if norm[a][k] < norm[b][k] + norm[b][2] and norm[b][k] < norm[a][k] + norm[a][2]:
                        raise UsernsError(f"{what}.{side}[{a}]: overlaps line {b} {where}")
        out[side] = norm
    return out


def map_text(lines) -> bytes:
    return "".join(f"{i} {h} {n}\n" for i, h, n in lines).encode()


def host_id(lines, inside: int) -> int | None:
    """The host id `inside` maps to, None when unmapped."""
    for i, h, n in lines:
        if i <= inside < i + n:
            return h + inside - i
    return None


# ------------------------------------------------------------------ the namespace

def create(mapping: dict) -> int:
    """A new user namespace with `mapping`; returns an O_RDONLY|O_CLOEXEC
    descriptor of it. The caller must be single-threaded (it forks) and
    hold CAP_SETUID/CAP_SETGID/CAP_SYS_ADMIN where it runs. OSError with a
    message naming the step that failed."""
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:                                    # the helper
        code = 0
        try:
            os.close(go_w)
            os.close(ready_r)
            try:
                ns.unshare(ns.CLONE_NEWUSER)
                os.write(ready_w, b"k")
            except OSError as e:
                os.write(ready_w, str(e.errno).encode())
                code = 1
            os.read(go_r, 1)                       # wait until the parent holds the ns
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(ready_w)
    try:
        answer = os.read(ready_r, 16)
        if answer != b"k":
            err = int(answer) if answer.isdigit() else errno.EIO
            raise OSError(err, f"unshare user namespace: {os.strerror(err)}")
        write_maps(pid, mapping)
        try:
            return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, f"open user namespace: {os.strerror(e.errno)}") from None
    finally:
        os.close(ready_r)
        os.close(go_w)                              # the helper exits
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def write_maps(pid: int, mapping: dict) -> None:
    """Write `mapping` as the uid_map and gid_map of process `pid`, which has
    just made its user namespace (the writer holds CAP_SETUID/CAP_SETGID in
    the parent namespace: no "setgroups deny" needed)."""
    for name, side in (("uid_map", "uid"), ("gid_map", "gid")):
        try:
            fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, map_text(mapping[side]))
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, f"write {name} {_short(mapping[side])}: {os.strerror(e.errno)}") from None


def open_bound(path: str) -> int:
    """An O_RDONLY|O_CLOEXEC descriptor of the user namespace bound on `path`
    (runtime/netns.py: the one owning a bridged container's network
    namespace); OSError naming the path when it is not one."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    if ns.ns_type(fd) != ns.CLONE_NEWUSER:
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path}: not a bound user namespace")
    return fd


def _short(lines) -> str:
    return ",".join(f"{i}:{h}:{n}" for i, h, n in lines)


def enter(userns_fd: int) -> None:
    """Join the namespace and become its root (uid and gid 0 inside, no
    supplementary groups). The caller must be single-threaded."""
    ns.setns(userns_fd, ns.CLONE_NEWUSER)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


# ------------------------------------------------------------------ idmapped mounts

def open_tree_clone(path: str | None, dirfd: int = mounts.AT_FDCWD) -> int:
    """A detached copy of the mount tree at `path` (with its submounts), or of
    the tree `dirfd` refers to when path is None."""
    flags = mounts.OPEN_TREE_CLONE | mounts.OPEN_TREE_CLOEXEC | mounts.AT_RECURSIVE
    return mounts.open_tree(dirfd, path or "", flags | (mounts.AT_EMPTY_PATH if path is None else 0))


FS_MAGIC = {0xEF53: "ext4", 0x01021994: "tmpfs", 0x01021997: "9p", 0x794C7630: "overlay",
            0x58465342: "xfs", 0x9123683E: "btrfs", 0x6969: "nfs", 0x2FC12FC1: "zfs",
            0x65735546: "fuse", 0x62656572: "sysfs", 0x9FA0: "proc", 0x1373: "devtmpfs",
            0x858458F6: "ramfs"}


def fs_type(fd: int) -> str:
    """The filesystem type of what `fd` refers to (fstatfs f_type), by name
    when known."""
    buf = ctypes.create_string_buffer(128)          # struct statfs: f_type first
    if _libc.fstatfs(ctypes.c_int(fd), buf) != 0:
        return "unknown"
    magic = ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF
    return FS_MAGIC.get(magic, f"filesystem 0x{magic:x}")


def idmap_tree(tree_fd: int, userns_fd: int) -> str | None:
    """Give the detached tree `tree_fd` the mapping of `userns_fd`, submounts
    included. None when done; otherwise the tree is left as it was and the
    one-line reason is returned (the caller mounts it without an idmap)."""
    try:
        mounts.mount_setattr(tree_fd, "", mounts.AT_EMPTY_PATH | mounts.AT_RECURSIVE,
                             attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
        return None
    except OSError as e:
        kind = fs_type(tree_fd)
        if e.errno == errno.EINVAL:
            return (f"{kind} (or a filesystem mounted below it) does not support idmapped mounts "
                    f"on Linux {os.uname().release}")
        if e.errno == errno.ENOSYS:
            return f"no idmapped mounts on Linux {os.uname().release} (needs 5.12)"
        return f"idmap of {kind} refused: {os.strerror(e.errno)}"
