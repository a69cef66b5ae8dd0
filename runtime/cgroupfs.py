"""cgroup v2 filesystem: find the mount, open, create, read, write, remove.

No policy here: this module knows directories and files of cgroupfs, not
containers. Paths are absolute paths on cgroupfs.
"""
from __future__ import annotations

import errno
import os
import time

from runtime.errors import CgroupBusy, CgroupError, CgroupGone
from runtime.parsers import parse_events, unescape_mount_field

V2_CONTROLLERS = ("cpu", "memory", "io", "pids", "cpuset")

# cgroup v2 controller name -> the name /proc/cgroups and v1 mounts use.
V1_NAMES = {"io": "blkio"}

_MOUNT_PREFERENCE = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")


def read_mounts(path: str = "/proc/self/mounts") -> list[tuple[str, str, str, set[str]]]:
    """(source, mountpoint, fstype, options) for every mount."""
    mounts = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4:
                continue
            mounts.append((parts[0], unescape_mount_field(parts[1]), parts[2],
                           set(parts[3].split(","))))
    return mounts


def find_mount() -> str:
    """The cgroup2 mount point (/sys/fs/cgroup or /sys/fs/cgroup/unified)."""
    found = [m[1] for m in read_mounts() if m[2] == "cgroup2"]
    if not found:
        raise CgroupError("no cgroup2 filesystem is mounted (looked in /proc/self/mounts)")
    for preferred in _MOUNT_PREFERENCE:
        if preferred in found:
            return preferred
    return found[0]


def own_cgroup(pid="self") -> str:
    """The cgroup v2 path (relative to the mount, starting with "/") of a pid."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n")
    except FileNotFoundError:
        raise CgroupError(f"process {pid} does not exist") from None
    raise CgroupError(f"process {pid} has no cgroup v2 membership in /proc/{pid}/cgroup")


def cgroup_of(pid="self") -> "Cgroup":
    """The Cgroup a process belongs to (on the cgroup2 mount)."""
    rel = own_cgroup(pid).lstrip("/")
    mount = find_mount()
    return Cgroup(os.path.join(mount, rel) if rel else mount)


def _oserror(exc: OSError, what: str) -> CgroupError:
    return CgroupError(f"{what}: {exc.strerror or exc}", exc.errno)


class Cgroup:
    """One cgroup directory on cgroupfs (absolute ``path``)."""

    __slots__ = ("path",)

    def __init__(self, path):
        path = os.fspath(path.path if isinstance(path, Cgroup) else path)
        if not os.path.isabs(path):
            raise CgroupError(f"cgroup path must be absolute, got {path!r}")
        self.path = os.path.normpath(path)

    def __repr__(self):
        return f"Cgroup({self.path!r})"

    def __fspath__(self):
        return self.path

    def __eq__(self, other):
        return isinstance(other, Cgroup) and other.path == self.path

    def __hash__(self):
        return hash(self.path)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def parent(self) -> "Cgroup":
        return Cgroup(os.path.dirname(self.path))

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- directory -------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isfile(self.file("cgroup.procs"))

    def create(self, exist_ok: bool = True) -> "Cgroup":
        try:
            os.mkdir(self.path)
        except FileExistsError:
            if not exist_ok:
                raise CgroupError(f"cgroup {self.path} already exists", errno.EEXIST) from None
        except FileNotFoundError:
            raise CgroupGone(f"cannot create cgroup {self.path}: parent does not exist",
                             errno.ENOENT) from None
        except OSError as exc:
            raise _oserror(exc, f"cannot create cgroup {self.path}") from None
        return self

    def remove(self, missing_ok: bool = False) -> None:
        """rmdir the cgroup; CgroupBusy while it has processes or children."""
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise CgroupGone(f"cgroup {self.path} does not exist", errno.ENOENT) from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                children = self.children()
                if children:
                    why = f"it has child cgroups ({', '.join(c.name for c in children[:5])})"
                else:
                    why = f"it still has processes ({len(self.procs())} in cgroup.procs)"
                raise CgroupBusy(f"cannot remove cgroup {self.path}: {why}", exc.errno) from None
            raise _oserror(exc, f"cannot remove cgroup {self.path}") from None

    def child(self, name: str) -> "Cgroup":
        if (not name or "/" in name or name in (".", "..") or "\0" in name
                or "\n" in name):
            raise CgroupError(f"cgroup name {name!r} is not valid; use a single path "
                              f"component without '/' (not '.' or '..')")
        return Cgroup(os.path.join(self.path, name))

    def children(self) -> list["Cgroup"]:
        try:
            with os.scandir(self.path) as it:
                return sorted((Cgroup(e.path) for e in it if e.is_dir(follow_symlinks=False)),
                              key=lambda c: c.path)
        except FileNotFoundError:
            raise CgroupGone(f"cgroup {self.path} does not exist", errno.ENOENT) from None

    def inode(self) -> int:
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            raise CgroupGone(f"cgroup {self.path} does not exist", errno.ENOENT) from None

    # -- files -----------------------------------------------------------
    def read(self, file: str) -> str | None:
        """Contents of a cgroup file, or None when the kernel does not offer it."""
        try:
            with open(self.file(file), "rb", buffering=0) as f:
                return f.read().decode()
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                raise CgroupGone(f"cgroup {self.path} does not exist", errno.ENOENT) from None
            return None
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise CgroupGone(f"cgroup {self.path} was removed", exc.errno) from None
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL) and not os.path.isdir(self.path):
                raise CgroupGone(f"cgroup {self.path} was removed", exc.errno) from None
            raise _oserror(exc, f"cannot read {self.file(file)}") from None

    def write(self, file: str, text: str) -> None:
        """Write ``text`` to a cgroup file in one write(2)."""
        data = text.encode()
        try:
            fd = os.open(self.file(file), os.O_WRONLY | os.O_TRUNC)
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                raise CgroupGone(f"cgroup {self.path} does not exist", errno.ENOENT) from None
            raise CgroupError(f"cannot write {self.file(file)}: the kernel does not offer "
                              f"this file", errno.ENOENT) from None
        except OSError as exc:
            raise _oserror(exc, f"cannot open {self.file(file)}") from None
        try:
            os.write(fd, data)
        except OSError as exc:
            raise _oserror(exc, f"writing {text.strip()!r} to {self.file(file)} failed") from None
        finally:
            os.close(fd)

    # -- processes -------------------------------------------------------
    def procs(self) -> list[int]:
        text = self.read("cgroup.procs")
        return [int(x) for x in text.split()] if text else []

    def threads(self) -> list[int]:
        text = self.read("cgroup.threads")
        return [int(x) for x in text.split()] if text else []

    def add_pid(self, pid: int) -> None:
        """Move a process (all its threads) into this cgroup; 0 = the caller.

        EINVAL is retried a few times: a task still being forked (TASK_NEW)
        cannot be moved yet.
        """
        for attempt in range(5):
            try:
                self.write("cgroup.procs", str(int(pid)))
                return
            except CgroupGone:
                raise
            except CgroupError as exc:
                if exc.errno != errno.EINVAL or attempt == 4:
                    raise
                time.sleep(0.01)

    # -- controllers -----------------------------------------------------
    def controllers(self) -> set[str]:
        text = self.read("cgroup.controllers")
        return set(text.split()) if text else set()

    def subtree_control(self) -> set[str]:
        text = self.read("cgroup.subtree_control")
        return set(text.split()) if text else set()

    def enable_controllers(self, names) -> set[str]:
        """Enable each available controller in cgroup.subtree_control.

        Returns the set of ``names`` that are enabled afterwards. Moves no
        process: a cgroup with processes of its own refuses (EBUSY), and
        those controllers are simply not in the result.
        """
        wanted = [n for n in names if n]
        available = self.controllers()
        for name in wanted:
            if name not in available:
                continue
            if name in self.subtree_control():
                continue
            try:
                self.write("cgroup.subtree_control", f"+{name}")
            except CgroupGone:
                raise
            except CgroupError:
                pass
        return set(wanted) & self.subtree_control()

    def events(self):
        """cgroup.events as CgroupEvents (None for the root cgroup, which has none)."""
        text = self.read("cgroup.events")
        return None if text is None else parse_events(text)


def is_mount_root(cg: Cgroup) -> bool:
    return os.path.ismount(cg.path) or cg.read("cgroup.events") is None


def prepare_root(root: Cgroup, self_leaf: str = "agentd") -> set[str]:
    """Make ``root`` able to hand controllers to its children.

    cgroup v2's no-internal-process rule: a (non-root) cgroup that enables
    controllers in subtree_control may not hold processes. Every process of
    ``root`` is moved into ``root/self_leaf`` first; then every controller
    ``root`` offers is enabled. Returns the enabled controllers.
    """
    root = Cgroup(root)
    if not is_mount_root(root):
        leaf = root.child(self_leaf).create()
        for _ in range(10):
            pids = root.procs()
            if not pids:
                break
            for pid in pids:
                try:
                    leaf.add_pid(pid)
                except CgroupError as exc:
                    if exc.errno != errno.ESRCH:
                        raise
    return root.enable_controllers(sorted(root.controllers()))


# -- why is a controller missing? -----------------------------------------

def read_proc_cgroups(path: str = "/proc/cgroups") -> dict[str, tuple[int, bool]]:
    """subsystem name -> (v1 hierarchy id, enabled). Hierarchy 0 = not on v1."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("#"):
                    continue
                parts = line.split()
                if len(parts) >= 4:
                    out[parts[0]] = (int(parts[1]), parts[3] == "1")
    except FileNotFoundError:
        pass
    return out


def v1_mountpoint(controller: str, mounts=None) -> str | None:
    """Where a controller is mounted as cgroup v1, or None."""
    v1 = V1_NAMES.get(controller, controller)
    for _src, point, fstype, opts in (read_mounts() if mounts is None else mounts):
        if fstype == "cgroup" and v1 in opts:
            return point
    return None


def controller_status(cg, names=V2_CONTROLLERS) -> dict[str, str]:
    """For each of cpu memory io pids cpuset (or ``names``): "enabled" or why not.

    "enabled" means the controller is in ``cg``'s cgroup.controllers, i.e.
    its files exist in ``cg`` and limits can be written there. Reasons are
    phrased to follow "<name> controller is ...".
    """
    cg = Cgroup(cg)
    available = cg.controllers()
    proc = read_proc_cgroups()
    mounts = read_mounts()
    mount = _mount_of(cg.path, mounts)
    root = Cgroup(mount) if mount else None
    root_available = root.controllers() if root else set()
    status = {}
    for name in names:
        if name in available:
            status[name] = "enabled"
            continue
        v1name = V1_NAMES.get(name, name)
        hier, enabled = proc.get(v1name, (0, True))
        if v1name not in proc and name not in root_available:
            status[name] = "not available in this kernel (absent from /proc/cgroups)"
        elif not enabled:
            status[name] = "disabled on the kernel command line (cgroup_disable)"
        elif name not in root_available:
            point = v1_mountpoint(name, mounts)
            if hier or point:
                where = point or f"v1 hierarchy {hier}"
                alias = f" as {v1name}" if v1name != name else ""
                status[name] = (f"bound to cgroup v1{alias} (hybrid host: {where}); cgroup2 at "
                                f"{mount} has no {name} controller")
            else:
                status[name] = f"not offered by the cgroup2 root {mount}"
        else:
            status[name] = _subtree_reason(cg, name, root)
    return status


def _subtree_reason(cg: Cgroup, name: str, root: Cgroup | None) -> str:
    """The first ancestor between root and cg that does not hand ``name`` down."""
    chain = []
    cur = cg
    while root is not None and cur.path != root.path and cur.path != "/":
        cur = cur.parent()
        chain.append(cur)
    for anc in reversed(chain):
        if name not in anc.subtree_control():
            return f"not in {anc.file('cgroup.subtree_control')}"
    return "not in the parent's cgroup.subtree_control"


def _mount_of(path: str, mounts) -> str | None:
    best = None
    for _src, point, fstype, _opts in mounts:
        if fstype != "cgroup2":
            continue
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) > len(best):
                best = point
    return best
