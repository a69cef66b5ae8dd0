"""Container process setup, run in a freshly forked child of the launcher.

`SpawnSpec.from_dict()` validates the spawn spec the supervisor sends (one
clear line per bad field). `run_child()` is what the forked child executes;
it never returns:

  intermediate (the forked child, see fork_in_cgroup):
    1. born in the container's cgroup (clone3 CLONE_INTO_CGROUP), or, where
       the kernel lacks that, its first step writes "0" to
       <cgroup>/cgroup.procs: everything from here on, including the
       container's first instruction, is accounted to its cgroup
    2. stdio onto the log pipes, every other descriptor closed
    3. unshare(NEWNS), / recursively private; then the detached trees
       (runtime/mounts.py): the rootfs and each volume source opened once
       (openat2, no magic links), checked as what was opened (its path from
       /proc/self/fd, its fstat), cloned with its submounts (open_tree) and
       flagged on every submount (mount_setattr AT_RECURSIVE: nodev, nosuid,
       ro, noexec; private propagation). Nothing is attached yet.
   3u. with spec.userns (runtime/userns.py): a user namespace made by a
       helper process with the mapping (before step 3's trees: an image
       container's overlay is made of layers idmapped with it,
       runtime/idmapped_layers.py); the mount points /proc, /dev, /sys made
       in the rootfs, every tree given its idmap (or mounted without, the
       reason reported), the namespace entered as its root; step 4
       then unshares NEWNS too, so that the namespace owns every namespace
       the container gets; the idmap outcome goes to `pid_w` after the pid
    4. unshare(UTS | IPC | PID [| NET] [| CGROUP]): a rootfs container's
       cgroup namespace is made once it is in its cgroup, so that cgroup is
       the namespace's root
    5. fork PID 1, write its host pid to `pid_w`, _exit(0): PID 1 is
       reparented to the launcher (the child subreaper)
  PID 1:
    6. the spec's namespaced sysctls, written into its own namespaces; the
       trees attached (move_mount onto descriptors): the rootfs on its
       own directory (with a user namespace: on "/", where no host path has
       to be walked); a fresh /proc (made inside the new PID namespace), a
       minimal /dev, a read-only /sys (the host's, every submount read-only,
       where a user namespace does not own the network namespace) and, in its cgroup namespace, the
       container's own cgroup read-only at /sys/fs/cgroup; Docker's masked
       and read-only paths; the volumes, each destination resolved inside
       the root (RESOLVE_IN_ROOT, made when missing); readonly_rootfs: the
       rootfs tree read-only (mount points made first) before anything is
       attached on it; pivot_root. Host
       root: a fresh /proc, the host's /sys read-only without submounts,
       the volumes on existing destinations.
    7. hostname; loopback up when the network namespace is new
  (spec.netns: the intermediate joins that network namespace with setns
   right after step 2, as the host's root, instead of step 4 making one)
    8. no_new_privs, seccomp filter, rlimits, bounding set,
       setgroups/setgid/setuid, capabilities (or the OCI capability sets),
       working dir, signal dispositions back to default
    9. execve

Any failure before execve is written as one line to `err_w` (close-on-exec,
so the launcher sees EOF without a line when execve succeeded) and the child
exits 127.
"""

from __future__ import annotations

import errno
import json
import fcntl
import os
import resource
import signal
import socket
import stat
import struct
from dataclasses import dataclass, field

from . import caps as capsmod
from . import mounts as mountsmod
from . import namespaces as ns
from . import rlimits, seccomp, sysctl
from . import userns as usernsmod
from . import idmapped_layers as idlayers
from . import tmpfs as tmpfsmod
from .rules import DEFAULT_PATH, valid_hostname  # one rule each, shared with the agent

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
# as Docker's defaults (moby oci/defaults.go): read-only and masked kernel files
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
MASKED_PATHS = ("/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap")


class SpecError(ValueError):
    """A spawn spec field is malformed; the message names field and accepted values."""


@dataclass(frozen=True)
class Mount:
    src: str
    dst: str
    ro: bool = False
    noexec: bool = False


@dataclass(frozen=True)
class Overlay:
    """An image container's root: overlayfs of the image's layers (topmost
    first) under the container's own upper dir, attached on `target`. Every
    path is the agent's own, under its state dir."""
    lower: tuple[str, ...]
    upper: str
    work: str
    target: str


@dataclass(frozen=True)
class DeviceNode:
    """A host device node bound into the container's /dev (rootfs only)."""
    src: str
    dst: str
    type: str     # "c" | "b"
    major: int
    minor: int


@dataclass(frozen=True)
class SpawnSpec:
    argv: tuple[str, ...]
    cgroup: str
    stdout: str
    stderr: str
    env: dict = field(default_factory=dict)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    hostname: str = ""
    rootfs: str = ""
    mounts: tuple[Mount, ...] = ()
    network: str = "host"
    log_max_bytes: int = 0
    no_new_privs: bool = True
    capabilities: tuple[str, ...] | None = None
    seccomp: bool = True
    # host paths no mount may be, hold or lie in (checked on the descriptor,
    # runtime/mounts.py); allow_sensitive_binds lifts the /etc, /proc, /sys,
    # /dev and "/" rule for volume sources (never for the rootfs)
    protected: mountsmod.Protected = mountsmod.Protected()
    allow_sensitive_binds: bool = False
    overlay: Overlay | None = None
    # a user namespace with this mapping ({"uid": [[inside, host, count]],
    # "gid": [...]}, runtime/userns.py); None: the host's (rootfs or overlay only)
    userns: dict | None = None

    @property
    def cgroupns(self) -> bool:
        """A cgroup namespace (and its cgroup read-only at /sys/fs/cgroup):
        rootfs containers; host-root ones see the host's /proc/self/cgroup."""
        return bool(self.rootfs or self.overlay)
    # OCI process.capabilities: {set: names} for bounding, effective,
    # permitted, inheritable, ambient; when given, instead of `capabilities`
    capability_sets: dict | None = None
    readonly_rootfs: bool = False                  # OCI root.readonly
    rlimits: tuple = ()                            # ((RLIMIT_*, soft, hard), ...)
    masked_paths: tuple[str, ...] | None = None    # None: MASKED_PATHS
    readonly_paths: tuple[str, ...] | None = None  # None: READONLY_PATHS
    sysctl: dict = field(default_factory=dict)     # namespaced keys only
    devices: tuple[DeviceNode, ...] = ()
    tmpfs: tuple = ()   # runtime.tmpfs.Tmpfs: fresh tmpfs mounts (--tmpfs), rootfs/image containers
    stdin: bool = False  # PID 1's stdin a pipe the launcher hands on (run -i), not /dev/null
    # network "none" only: a network namespace bound on this path (runtime/netns.py),
    # joined (setns) instead of a fresh one being made
    netns: str = ""

    @property
    def cap_mask(self) -> int:
        if self.capabilities is None:
            return capsmod.DOCKER_DEFAULT_MASK
        return capsmod.mask(self.capabilities)

    @property
    def unshare_flags(self) -> int:
        flags = ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC | ns.CLONE_NEWPID
        if self.network == "none" and not self.netns:
            flags |= ns.CLONE_NEWNET
        if self.cgroupns:
            flags |= ns.CLONE_NEWCGROUP
        return flags

    @classmethod
    def from_dict(cls, d) -> "SpawnSpec":
        if not isinstance(d, dict):
            raise SpecError("spec: must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"spec.{unknown[0]}: unknown field; accepted: {', '.join(sorted(known))}")
        for req in ("argv", "cgroup", "stdout", "stderr"):
            if req not in d:
                raise SpecError(f"spec.{req}: required")

        argv = d["argv"]
        if (not isinstance(argv, list) or not argv
                or not all(isinstance(a, str) and "\0" not in a for a in argv) or not argv[0]):
            raise SpecError("spec.argv: must be a non-empty list of strings without NUL bytes")
        env = d.get("env") or {}
        if not isinstance(env, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and k and "=" not in k
                and "\0" not in k + v for k, v in env.items()):
            raise SpecError("spec.env: must map names (no '=', no NUL) to strings")
        cwd = d.get("cwd", "/")
        _abs("cwd", cwd)
        uid, gid = d.get("uid", 0), d.get("gid", 0)
        for name, val in (("uid", uid), ("gid", gid)):
            if not isinstance(val, int) or isinstance(val, bool) or not 0 <= val < 2**32 - 1:
                raise SpecError(f"spec.{name}: must be an integer from 0 to 4294967294")
        hostname = d.get("hostname", "")
        if not isinstance(hostname, str) or (hostname and not valid_hostname(hostname)):
            raise SpecError("spec.hostname: an RFC 1123 host name of 1-64 characters (letters, digits, "
                            "inner hyphens, dot-separated labels)")
        rootfs = d.get("rootfs", "")
        if not isinstance(rootfs, str):
            raise SpecError("spec.rootfs: must be \"\" (host root) or an absolute directory")
        if rootfs == "/":
            rootfs = ""
        elif rootfs:
            # no realpath here: what the path leads to is decided once, in the
            # child, on the descriptor ("/" through a symlink is refused there)
            _abs("rootfs", rootfs)
        mounts = []
        raw_mounts = d.get("mounts") or []
        if not isinstance(raw_mounts, list):
            raise SpecError("spec.mounts: must be a list of {src, dst, ro, noexec}")
        for i, m in enumerate(raw_mounts):
            if not isinstance(m, dict) or set(m) - {"src", "dst", "ro", "noexec"}:
                raise SpecError(f"spec.mounts[{i}]: must be an object with src, dst, ro, noexec")
            _abs(f"mounts[{i}].src", m.get("src"))
            _abs(f"mounts[{i}].dst", m.get("dst"))
            opts = {}
            for opt in ("ro", "noexec"):
                opts[opt] = m.get(opt, False)
                if not isinstance(opts[opt], bool):
                    raise SpecError(f"spec.mounts[{i}].{opt}: must be true or false")
            mounts.append(Mount(m["src"], m["dst"], **opts))
        network = d.get("network", "host")
        if network not in ("host", "none"):
            raise SpecError("spec.network: accepted: host, none")
        _abs("cgroup", d["cgroup"])
        _abs("stdout", d["stdout"])
        _abs("stderr", d["stderr"])
        lmb = d.get("log_max_bytes", 0)
        if not isinstance(lmb, int) or isinstance(lmb, bool) or lmb < 0:
            raise SpecError("spec.log_max_bytes: must be an integer >= 0 (0 = no cap)")
        flags = {}
        for name, default in (("no_new_privs", True), ("seccomp", True), ("allow_sensitive_binds", False)):
            val = d.get(name, default)
            if not isinstance(val, bool):
                raise SpecError(f"spec.{name}: must be true or false")
            flags[name] = val
        capabilities = d.get("capabilities")
        if capabilities is not None:
            if not isinstance(capabilities, list):
                raise SpecError("spec.capabilities: must be null (Docker's default set) or a list of names")
            try:
                capabilities = tuple(capsmod.normalize(c) for c in capabilities)
            except capsmod.CapabilityError as e:
                raise SpecError(f"spec.{e}") from None
        userns = d.get("userns")
        if userns is not None:
            try:
                userns = usernsmod.check_mapping(userns, "spec.userns")
            except usernsmod.UsernsError as e:
                raise SpecError(str(e)) from None
            if not rootfs and d.get("overlay") is None:
                raise SpecError("spec.userns: needs a rootfs or an overlay (a host-root container keeps the host's)")
            for name, val in (("uid", uid), ("gid", gid)):
                if usernsmod.host_id(userns[name], val) is None:
                    raise SpecError(f"spec.{name}: {val} is not mapped by spec.userns.{name}")
        prot = d.get("protected") or {}
        if not isinstance(prot, dict) or set(prot) - {"state_dir", "socket"}:
            raise SpecError("spec.protected: must be an object with state_dir, socket (absolute paths)")
        for key in prot:
            _abs(f"protected.{key}", prot[key])
        overlay = _overlay(d.get("overlay"))
        if overlay is not None and rootfs:
            raise SpecError("spec.overlay: not with spec.rootfs (an image container's root is its overlay)")
        devices = tuple(_device_node(i, x) for i, x in enumerate(d.get("devices") or ()))
        extra = _oci_fields(d, rootfs=rootfs or (overlay.target if overlay else ""), network=network)
        extra["tmpfs"] = _tmpfs_field(d.get("tmpfs"), bool(rootfs or overlay))
        extra["stdin"] = d.get("stdin", False)
        if not isinstance(extra["stdin"], bool):
            raise SpecError("spec.stdin: must be true or false")
        extra["netns"] = d.get("netns") or ""
        if extra["netns"]:
            _abs("netns", extra["netns"])
            if network != "none":
                raise SpecError("spec.netns: only with spec.network \"none\" (the namespace joined instead of a new one)")
        return cls(protected=mountsmod.Protected(**prot), argv=tuple(argv), cgroup=d["cgroup"], stdout=d["stdout"],
                   stderr=d["stderr"], env=dict(env), cwd=cwd, uid=uid, gid=gid,
                   hostname=hostname, rootfs=rootfs, mounts=tuple(mounts),
                   network=network, log_max_bytes=lmb, capabilities=capabilities, userns=userns,
                   overlay=overlay, devices=devices, **flags, **extra)

def _overlay(o) -> Overlay | None:
    if o is None:
        return None
    if not isinstance(o, dict) or set(o) != {"lower", "upper", "work", "target"}:
        raise SpecError("spec.overlay: must be null or an object with lower (list), upper, work, target")
    lower = o["lower"]
    if not isinstance(lower, list) or not lower:
        raise SpecError("spec.overlay.lower: must be a non-empty list of absolute directories")
    for i, d in enumerate(lower):
        _abs(f"overlay.lower[{i}]", d)
        if ":" in d or "," in d:
            raise SpecError(f"spec.overlay.lower[{i}]: must not contain ':' or ','")
    for key in ("upper", "work", "target"):
        _abs(f"overlay.{key}", o[key])
        if ":" in o[key] or "," in o[key]:
            raise SpecError(f"spec.overlay.{key}: must not contain ':' or ','")
    return Overlay(tuple(lower), o["upper"], o["work"], o["target"])


def _oci_fields(d: dict, *, rootfs: str, network: str) -> dict:
    """capability_sets, readonly_rootfs, rlimits, masked_paths, readonly_paths, sysctl."""
    out: dict = {}
    sets = d.get("capability_sets")
    if sets is not None:
        if not isinstance(sets, dict) or set(sets) - set(capsmod.SETS):
            raise SpecError(f"spec.capability_sets: must map {', '.join(capsmod.SETS)} to lists of names")
        parsed = {}
        for name in capsmod.SETS:
            names = sets.get(name) or []
            if not isinstance(names, list):
                raise SpecError(f"spec.capability_sets.{name}: must be a list of names")
            try:
                parsed[name] = tuple(capsmod.normalize(c) for c in names)
            except capsmod.CapabilityError as e:
                raise SpecError(f"spec.capability_sets.{name}: {e}") from None
        why = capsmod.check_sets(parsed)
        if why:
            raise SpecError(f"spec.capability_sets.{why}")
        out["capability_sets"] = parsed
    ro = d.get("readonly_rootfs", False)
    if not isinstance(ro, bool):
        raise SpecError("spec.readonly_rootfs: must be true or false")
    if ro and not rootfs:
        raise SpecError("spec.readonly_rootfs: needs a rootfs (the host's root is never made read-only)")
    out["readonly_rootfs"] = ro
    raw = d.get("rlimits") or []
    if not isinstance(raw, list):
        raise SpecError("spec.rlimits: must be a list of {type, soft, hard}")
    limits = []
    for i, entry in enumerate(raw):
        try:
            limits.append(rlimits.check(entry))
        except rlimits.RlimitError as e:
            raise SpecError(f"spec.rlimits[{i}]: {e}") from None
    out["rlimits"] = tuple(limits)
    for key in ("masked_paths", "readonly_paths"):
        paths = d.get(key)
        if paths is None:
            continue
        if not isinstance(paths, list):
            raise SpecError(f"spec.{key}: must be null (the default list) or a list of absolute paths")
        for i, p in enumerate(paths):
            _abs(f"{key}[{i}]", p)
        out[key] = tuple(paths)
    settings = d.get("sysctl") or {}
    if not isinstance(settings, dict):
        raise SpecError("spec.sysctl: must map namespaced sysctl names to values")
    checked = {}
    for k, v in settings.items():
        try:
            k, v = sysctl.check(k, v, own_netns=network == "none")
        except sysctl.SysctlError as e:
            raise SpecError(f"spec.sysctl.{e}") from None
        checked[k] = v
    out["sysctl"] = checked
    return out


def _tmpfs_field(raw, has_root: bool) -> tuple:
    if not raw:
        return ()
    if not isinstance(raw, list):
        raise SpecError("spec.tmpfs: must be a list of {dst, options, ro, noexec, nosuid}")
    if not has_root:
        raise SpecError("spec.tmpfs: needs a rootfs or an image (no mount on the host's own tree)")
    try:
        return tmpfsmod.check_all((tmpfsmod.check(i, x) for i, x in enumerate(raw)), "spec.tmpfs")
    except tmpfsmod.TmpfsError as e:
        raise SpecError(str(e)) from None


def _device_node(i, x) -> DeviceNode:
    if (not isinstance(x, dict) or set(x) != {"src", "dst", "type", "major", "minor"}
            or x["type"] not in ("c", "b")
            or not all(isinstance(x[k], int) and not isinstance(x[k], bool) and x[k] >= 0
                       for k in ("major", "minor"))):
        raise SpecError(f"spec.devices[{i}]: must be an object with src, dst, type (c or b), major, minor")
    _abs(f"devices[{i}].src", x["src"])
    _abs(f"devices[{i}].dst", x["dst"])
    if not x["dst"].startswith("/dev/") or x["dst"].rstrip("/") == "/dev":
        raise SpecError(f"spec.devices[{i}].dst: must be a path under /dev")
    return DeviceNode(x["src"], x["dst"], x["type"], x["major"], x["minor"])


def _abs(name, value):
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise SpecError(f"spec.{name}: must be an absolute path")
    if ".." in value.split("/"):
        raise SpecError(f"spec.{name}: must not contain '..'")


class _Fail(Exception):
    """A setup step failed; str() is the line reported to the launcher."""


def _step(what, fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        raise _Fail(f"{what}: {os.strerror(e.errno) if e.errno else e}") from None


def _report(fd: int, line: str) -> None:
    data = (line.replace("\n", " ") + "\n").encode(errors="replace")
    try:
        os.write(fd, data)
    except OSError:
        pass


# ---------------------------------------------------------------- child side

_clone3_works = True   # until the kernel says it has no clone3 / CLONE_INTO_CGROUP


class CgroupRefused(OSError):
    """fork_in_cgroup: the cgroup refused the new child; strerror is one line
    ("join cgroup <path>: <reason>"), as the child's own join would report it."""


def fork_in_cgroup(cgroup: str) -> tuple[int, bool]:
    """Fork the intermediate child for run_child: (pid, joined), pid 0 in the
    child. joined: the child was born in `cgroup` (clone3 CLONE_INTO_CGROUP,
    Linux >= 5.7, no migration: ~10 ms faster, see namespaces.fork_into_cgroup);
    False: a plain fork (no clone3 here, or this process has other threads),
    the child joins it as its first step. OSError: the
    cgroup refused the child: CgroupRefused (EBUSY, ENOENT, EAGAIN at
    pids.max, ...); the fork itself failed: OSError."""
    global _clone3_works
    if _clone3_works and _single_threaded():
        try:
            fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                return ns.fork_into_cgroup(fd), True
            finally:
                os.close(fd)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):
                raise CgroupRefused(e.errno, f"join cgroup {cgroup}: {os.strerror(e.errno)}") from None
            _clone3_works = False
    return os.fork(), False


def _single_threaded() -> bool:
    """clone3 is a raw syscall: glibc's fork handlers (malloc arenas, stdio)
    do not run, which is only safe when no other thread can hold their
    locks. The launcher is single-threaded; any other caller forks."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def probe_clone3(scratch: str) -> bool:
    """Keep clone3(CLONE_INTO_CGROUP) only if this kernel gets cgroup.kill right.

    Some kernels (this project's 6.18 hosts) SIGKILL every child that clone3
    puts into a cgroup which once received cgroup.kill (the kill sequence is
    compared against the parent's cgroup instead of the target's): a
    container stopped with cgroup.kill could never start again. One probe in
    a scratch child cgroup of ``scratch`` (the caller's own cgroup: empty
    child, killed once, one clone3 into it that exits at once); on such a
    kernel fork_in_cgroup forks and joins with cgroup.procs instead. Call it
    while single-threaded. Returns whether clone3 stays in use."""
    global _clone3_works
    if not _clone3_works:
        return False
    probe = os.path.join(scratch, "clone3-probe")
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass
    except OSError:
        return _clone3_works        # cannot probe here: keep what we have
    try:
        try:
            with open(os.path.join(probe, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            return _clone3_works    # no cgroup.kill: no kill sequence to get wrong
        fd = os.open(probe, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            pid = ns.fork_into_cgroup(fd)
        except OSError as e:
            if e.errno in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):
                _clone3_works = False
            return _clone3_works
        finally:
            if fd >= 0:
                os.close(fd)
        if pid == 0:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            _clone3_works = False
        return _clone3_works
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


def run_child(spec: SpawnSpec, *, stdout_fd: int, stderr_fd: int,
              err_w: int, pid_w: int, nofile: tuple[int, int] | None = None,
              joined: bool = False, stdin_fd: int | None = None) -> None:
    """Executed in the launcher's forked child. Never returns. `nofile`:
    the RLIMIT_NOFILE the container gets (the launcher raises its own).
    `joined`: fork_in_cgroup put it in spec.cgroup already."""
    try:
        try:
            if not joined:
                _join_cgroup(spec.cgroup)      # the very first thing we do
            if nofile is not None:
                _step("set RLIMIT_NOFILE", resource.setrlimit, resource.RLIMIT_NOFILE, nofile)
            _setup_stdio(stdout_fd, stderr_fd, keep=(err_w, pid_w), stdin_fd=stdin_fd)
            if spec.netns:   # as the host's root, before any user namespace
                _step(f"join network namespace {spec.netns}", _join_netns, spec.netns)
            # a private copy of the host's mount namespace, where the host
            # paths the container gets become detached, checked, flagged
            # trees before any other namespace is made
            _step("unshare mount namespace", ns.unshare, ns.CLONE_NEWNS)
            _step("make / private", ns.mount, None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
            # the user namespace before the trees: an image container's
            # overlay is made of layers idmapped with it
            userns_fd = _step("create user namespace", usernsmod.create, spec.userns) if spec.userns else -1
            trees = _open_trees(spec, userns_fd)
            idmap = None
            if spec.userns:
                # then entered, so that it owns every namespace made after
                # it, a mount namespace of its own included
                idmap = _enter_userns(spec, trees, userns_fd)
            _step("unshare namespaces", ns.unshare,
                  spec.unshare_flags if spec.userns else spec.unshare_flags & ~ns.CLONE_NEWNS)
            pid = _step("fork container init", os.fork)
        except _Fail as e:
            _report(err_w, str(e))
            os._exit(127)
        except BaseException as e:     # a bug in here must still be one line
            _report(err_w, f"container setup: {type(e).__name__}: {e}")
            os._exit(127)
        if pid:
            os.write(pid_w, f"{pid}{' ' + json.dumps(idmap) if idmap else ''}\n".encode())
            os._exit(0)
        os.close(pid_w)
        try:
            _container_init(spec, trees)
        except _Fail as e:
            _report(err_w, str(e))
        except BaseException as e:     # a bug in here must still be one line
            _report(err_w, f"container setup: {type(e).__name__}: {e}")
    finally:
        os._exit(127)


def _join_netns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        ns.setns(fd, ns.CLONE_NEWNET)   # EINVAL: not a network namespace
    finally:
        os.close(fd)


def _enter_userns(spec: SpawnSpec, trees: "_Trees", userns_fd: int) -> dict:
    """Give the detached trees the mapping of the container's user namespace
    (`userns_fd`, made with spec.userns) and enter it as its root; closes
    `userns_fd`. Returns {destination: "idmapped" or the one-line reason the
    tree is mounted without}. Before, as the host's root: the mount points
    every rootfs container gets (a rootfs that cannot be idmapped is
    nobody's inside, and its root could not make them; an image container's
    overlay got them when it was made, _open_overlay)."""
    tree, origin = trees.rootfs
    try:
        idmap = {}
        if spec.overlay is None:
            for dst in ("/proc", "/dev", "/sys"):
                os.close(_dst_fd(origin, dst, f"mount {dst}", "dir"))
            for v in trees.volumes:   # a file volume's mount point (e.g. /etc/hosts) too
                if not v.is_dir:
                    os.close(_dst_fd(origin, v.dst, v.what, "file"))
            idmap["/"] = usernsmod.idmap_tree(tree.fd, userns_fd) or "idmapped"
        else:
            idmap["/"] = trees.overlay_idmap or "idmapped"
        for v in trees.volumes:
            idmap[v.dst] = usernsmod.idmap_tree(v.fd, userns_fd) or "idmapped"
        _step("enter user namespace", usernsmod.enter, userns_fd)
    finally:
        os.close(userns_fd)
    return idmap


def _join_cgroup(cgroup: str) -> None:
    path = os.path.join(cgroup, "cgroup.procs")
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    except OSError as e:
        raise _Fail(f"join cgroup {cgroup}: {os.strerror(e.errno)}") from None


def _setup_stdio(stdout_fd: int, stderr_fd: int, keep, stdin_fd: int | None = None) -> None:
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null if stdin_fd is None else stdin_fd, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)


def _stdin_from_own_dev_null() -> None:
    """stdin was the host's /dev/null (opened before the namespaces): reopen it
    from the container's own /dev, so that none of its descriptors points
    into a mount it cannot see (CRIU cannot dump such a file)."""
    try:
        null = os.open("/dev/null", os.O_RDONLY)
    except OSError:
        return
    os.dup2(null, 0)
    os.close(null)


def _container_init(spec: SpawnSpec, trees: "_Trees") -> None:
    if spec.sysctl:
        # the kernel writes into the namespaces of the writing task: this
        # process's IPC (and, with network none, network) namespace
        _step("sysctl", sysctl.apply, spec.sysctl)
    # the detached trees (made before the namespaces, _open_trees) attached,
    # every destination resolved inside the container's root
    if trees.rootfs is not None and spec.userns:
        # the rootfs came from the host's mount namespace, where its origin
        # stays: it goes on this namespace's "/" (pivot_root moves it into
        # place), reached without a path the namespace's root may not walk
        tree, origin = trees.rootfs
        os.close(origin)
        trees.rootfs = (tree, _step("open /", os.open, "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    if trees.rootfs is not None:
        root = _attach_rootfs(trees.rootfs)
        points = _tmpfs_points(root, spec.tmpfs)   # made while the root can still be written
        if spec.readonly_rootfs:
            _readonly_rootfs(root, trees.volumes)
        _mount_kernel_fs(root, fresh_sys=True, own_cgroup=spec.cgroupns, spec=spec)
        _attach_volumes(root, trees.volumes, create=True)
        _mount_tmpfs(points, spec.tmpfs)
        _pivot(root)
        _stdin_from_own_dev_null()
    else:
        # host root: a fresh /proc, and a read-only /sys without its submounts,
        # which also hides the host's cgroupfs (root could otherwise move
        # itself out of its cgroup by writing another cgroup.procs)
        root = _step("open /", os.open, "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        _mount_kernel_fs(root, fresh_sys=False, own_cgroup=False, spec=spec)
        _attach_volumes(root, trees.volumes, create=False)
        os.close(root)
    try:
        # a session of its own, led by the container's PID 1 (as runc's init):
        # CRIU cannot dump a tree whose session leader is outside its PID namespace
        os.setsid()
    except OSError:
        pass            # already a session leader
    if spec.hostname:
        _step(f"sethostname {spec.hostname}", ns.sethostname, spec.hostname)
    if spec.network == "none" and not spec.netns:   # a joined one: its maker did
        _step("bring up lo", _loopback_up)
    if spec.no_new_privs:
        _step("set no_new_privs", ns.set_no_new_privs)
    if spec.seccomp:
        # installed while CAP_SYS_ADMIN is still held, so it works with
        # no_new_privs off too; it refuses nothing the steps below need
        _step("install seccomp filter", seccomp.install)
    for kind, soft, hard in spec.rlimits:      # before CAP_SYS_RESOURCE goes
        _step(f"set {kind} {soft}/{hard}", rlimits.set_limit, kind, soft, hard)
    _drop_privileges(spec)
    _step(f"cwd {spec.cwd}", os.chdir, spec.cwd)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    _exec(spec.argv, spec.env)


# ---------------------------------------------------------------- mounts
#
# Every mount below is made from descriptors (runtime/mounts.py): host paths
# are opened once and checked as what was opened; destinations are resolved
# inside the container's root (RESOLVE_IN_ROOT), never by a joined path.

@dataclass
class _Tree:
    """A detached mount tree waiting to be attached; `what` names it in errors."""
    fd: int
    what: str
    dst: str = "/"
    is_dir: bool = True
    flags: dict = field(default_factory=dict)
    walk: bool = False       # no mount_setattr: remount_walk once attached


@dataclass
class _Trees:
    """What _open_trees made: the rootfs (tree, the directory it came from),
    or None for the host's root; the volumes, in spec order."""
    rootfs: tuple[_Tree, int] | None
    volumes: list[_Tree]
    # an image container in a user namespace: why its layers are not
    # idmapped (None: they are, or no user namespace)
    overlay_idmap: str | None = None


def _open_trees(spec: SpawnSpec, userns_fd: int = -1) -> _Trees:
    """Each host path opened once, checked as the descriptor, cloned with its
    submounts and flagged: nothing is attached yet. `userns_fd`: the
    container's user namespace (an image container's layers get its idmap)."""
    why = None
    if spec.overlay is not None:
        rootfs, why = _open_overlay(spec.overlay, userns_fd, spec.userns)
    else:
        rootfs = _open_rootfs(spec) if spec.rootfs else None
    return _Trees(rootfs, _open_volumes(spec), why)


def _open_checked(path: str, what: str, spec: SpawnSpec, sensitive_ok: bool,
                  want_dir: bool = False) -> mountsmod.Opened:
    try:
        o = mountsmod.open_host_path(path)
    except OSError as e:
        if want_dir and e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise _Fail(f"{what}: not a directory") from None
        raise _Fail(f"{what}: {os.strerror(e.errno)}") from None
    try:
        if want_dir and not o.is_dir:
            raise _Fail(f"{what}: not a directory")
        mountsmod.check_opened(o, spec.protected, sensitive_ok)
    except mountsmod.Refused as e:
        o.close()
        raise _Fail(f"{what}: refused: {e}") from None
    except BaseException:
        o.close()
        raise
    return o


def _flagged(fd: int, what: str, dst: str = "/", is_dir: bool = True, **flags) -> _Tree:
    """A detached tree with mount flags on every mount in it (or, on Linux <
    5.12, a note to walk its submounts once it is attached)."""
    done = _step(what, lambda: mountsmod.set_tree_flags(fd, **flags))
    return _Tree(fd, what, dst, is_dir, flags, walk=not done)


def _clone(o: mountsmod.Opened, what: str, dst: str = "/", **flags) -> _Tree:
    return _flagged(_step(what, mountsmod.clone_tree, o), what, dst, o.is_dir, **flags)


def _open_rootfs(spec: SpawnSpec) -> tuple[_Tree, int]:
    """(the rootfs as a detached tree, the directory it was cloned from)."""
    what = f"rootfs {spec.rootfs}"
    o = _open_checked(spec.rootfs, what, spec, sensitive_ok=False, want_dir=True)
    # nodev everywhere the container can write, submounts included: CAP_MKNOD
    # (Docker's set) can create a node for the host's disk, and cgroup v2 has
    # no device allowlist file; nodev makes such a node unusable
    try:
        return _clone(o, what, nodev=True), o.fd
    except BaseException:
        o.close()
        raise


def _open_overlay(o: Overlay, userns_fd: int = -1, mapping: dict | None = None
                  ) -> tuple[tuple[_Tree, int], str | None]:
    """((the image container's overlayfs as a detached mount, the directory
    it is attached on), why its layers are not idmapped): made fresh in this
    private mount namespace, so no host mount is left behind when the
    container ends. With a user namespace (`userns_fd`), its layers and its
    upper dir are idmapped clones (runtime/idmapped_layers.py) seen only in
    this mount namespace, and the overlay is made as the container's root;
    where that cannot be, the overlay is made of the plain layers (the
    container keeps its user namespace; the image's files are nobody's
    inside) and the reason is returned. The mount points every container
    gets (/proc, /dev, /sys) are made in it here, as its creator."""
    what = "overlay root of the image"
    why = None
    if userns_fd >= 0:
        uid0, gid0 = (usernsmod.host_id(mapping[k], 0) for k in ("uid", "gid"))
        rw = os.path.dirname(o.upper)
        dirs = tuple(dict.fromkeys((*o.lower, rw)))     # an image may repeat a layer
        if uid0 is None or gid0 is None:
            why = "container uid/gid 0 is not mapped: image layers not idmapped"
        elif os.path.dirname(o.work) != rw:
            why = "upper and work dirs are not siblings: image layers not idmapped"
        else:
            why = idlayers.overmount(dirs, userns_fd)
        if why is None:
            try:
                with idlayers.as_creator(uid0, gid0):
                    fd = mountsmod.new_overlay(list(o.lower), o.upper, o.work, nodev=True)
                    _make_mount_points(fd)
                return (_Tree(fd, what), _open_target(o)), None
            except OSError as e:
                idlayers.undo(dirs)
                why = (f"overlayfs refused the idmapped layers on Linux {os.uname().release} "
                       f"(it takes them from 5.19): {os.strerror(e.errno)}")
    fd = _step(f"mount {what}", lambda: mountsmod.new_overlay(list(o.lower), o.upper, o.work, nodev=True))
    _make_mount_points(fd)
    return (_Tree(fd, what), _open_target(o)), why


def _open_target(o: Overlay) -> int:
    return _step(f"open {o.target}", os.open, o.target, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def _make_mount_points(root: int) -> None:
    for dst in ("/proc", "/dev", "/sys"):
        os.close(_dst_fd(root, dst, f"mount {dst}", "dir"))


def _open_volumes(spec: SpawnSpec) -> list[_Tree]:
    trees = []
    for m in spec.mounts:
        what = f"bind mount {m.src} on {m.dst}"
        o = _open_checked(m.src, what, spec, sensitive_ok=spec.allow_sensitive_binds)
        try:
            device_tree = o.real == "/dev" or o.real.startswith("/dev/")
            trees.append(_clone(o, what, m.dst, ro=m.ro, nosuid=True, nodev=not device_tree,
                                noexec=m.noexec))
        finally:
            o.close()
    return trees


def _attach(tree: _Tree, target: int) -> None:
    """Attach `tree` on what `target` is open on; closes `target`."""
    try:
        _step(tree.what, mountsmod.attach, tree.fd, target)
        if tree.walk:
            _step(tree.what, lambda: mountsmod.remount_walk(mountsmod.fd_path(tree.fd), **tree.flags))
    finally:
        os.close(target)


def _attach_rootfs(rootfs: tuple[_Tree, int]) -> int:
    """The rootfs tree on the very directory it was cloned from (in this
    private mount namespace: only the container sees it); returns the
    descriptor of the attached root, the base of every later resolution."""
    tree, origin = rootfs
    _attach(tree, origin)
    return tree.fd


def _dst_fd(root: int, dst: str, what: str, create: str | None) -> int:
    try:
        return mountsmod.resolve_in(root, dst, create)
    except OSError as e:
        raise _Fail(f"{what}: mount point {dst}: {os.strerror(e.errno)}") from None


def _attach_volumes(root: int, trees: list[_Tree], create: bool) -> None:
    for t in trees:
        _attach(t, _dst_fd(root, t.dst, t.what, ("dir" if t.is_dir else "file") if create else None))
        os.close(t.fd)


def _tmpfs_points(root: int, mounts) -> list[int]:
    return [_dst_fd(root, t.dst, f"tmpfs {t.dst}", "dir") for t in mounts]


def _mount_tmpfs(points: list[int], mounts) -> None:
    """--tmpfs: a fresh tmpfs on each point, always nodev (a node made in it
    by CAP_MKNOD is unusable); nosuid/noexec/ro as the spec says."""
    for fd, t in zip(points, mounts):
        what = f"tmpfs {t.dst}"
        new = _fresh(what, "tmpfs", dict(t.options), ro=t.ro, nosuid=t.nosuid, nodev=True, noexec=t.noexec)
        _attach(_Tree(new, what, t.dst), fd)   # closes fd
        os.close(new)


def _fresh(what: str, fstype: str, options: dict | None = None, **flags) -> int:
    """A new filesystem as a detached mount (fsopen/fsmount)."""
    return _step(f"mount {what}", lambda: mountsmod.new_fs(fstype, options, **flags))


def _host_tree(path: str, what: str) -> int:
    """A detached copy of one trusted host mount point or file (/sys,
    /dev/null: root's, not a tenant's), without its submounts."""
    return _step(what, mountsmod.open_tree, mountsmod.AT_FDCWD, path,
                 mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC)


def _mount_kernel_fs(root: int, fresh_sys: bool, own_cgroup: bool, spec: SpawnSpec | None = None) -> None:
    """/proc (mounted from inside the new PID namespace), /dev (rootfs only),
    /sys read-only, Docker's masked and read-only paths; `own_cgroup`: the
    container's cgroup (its cgroup namespace's root) read-only at /sys/fs/cgroup."""
    proc = _fresh("/proc", "proc", nosuid=True, nodev=True, noexec=True)
    _attach(_Tree(proc, "mount /proc"), _dst_fd(root, "/proc", "mount /proc", "dir" if fresh_sys else None))
    if fresh_sys:
        _mount_dev(root, spec.devices if spec else ())
        try:
            sys_ = mountsmod.new_fs("sysfs", None, ro=True, nosuid=True, nodev=True, noexec=True)
        except OSError as e:
            if e.errno != errno.EPERM:
                raise _Fail(f"mount /sys: {os.strerror(e.errno)}") from None
            # a user namespace that does not own the network namespace
            # (network host) gets no sysfs of its own: the host's, with its
            # submounts (it may not uncover what they hide), read-only below
            sys_ = _step("bind /sys", mountsmod.open_tree, mountsmod.AT_FDCWD, "/sys",
                         mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC | mountsmod.AT_RECURSIVE)
    else:
        # the kernel refuses the same sysfs again on its own mount point
        # (EBUSY): the host's, without its submounts, read-only
        sys_ = _host_tree("/sys", "bind /sys")
    _attach(_flagged(sys_, "mount /sys", ro=True, nosuid=True, nodev=True, noexec=True),
            _dst_fd(root, "/sys", "mount /sys", "dir" if fresh_sys else None))
    if own_cgroup:
        cg = _fresh("/sys/fs/cgroup", "cgroup2", ro=True, nosuid=True, nodev=True, noexec=True)
        _attach(_Tree(cg, "mount /sys/fs/cgroup"), _dst_fd(sys_, "/fs/cgroup", "mount /sys/fs/cgroup", None))
        os.close(cg)
    _harden(root, proc, sys_, spec)
    os.close(proc)
    os.close(sys_)


def _harden(root: int, proc: int, sys_: int, spec: SpawnSpec | None = None) -> None:
    """Docker's readonlyPaths and maskedPaths (or the spec's own lists: an OCI
    bundle's linux.readonlyPaths/maskedPaths) under the fresh /proc and /sys,
    resolved inside those mounts (their descriptors), or inside the root for
    a listed path elsewhere; never by a joined path."""
    readonly = READONLY_PATHS if spec is None or spec.readonly_paths is None else spec.readonly_paths
    masked = MASKED_PATHS if spec is None or spec.masked_paths is None else spec.masked_paths
    tops = {"/proc/": proc, "/sys/": sys_}

    def where(rel: str) -> tuple[int, str]:
        return next(((fd, rel[len(t) - 1:]) for t, fd in tops.items() if rel.startswith(t)), (root, rel))

    for rel in readonly:
        top, sub = where(rel)
        try:
            target = mountsmod.resolve_in(top, sub)
        except FileNotFoundError:
            continue
        tree = _step(f"bind {rel}", mountsmod.open_tree, target, "",
                     mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC
                     | mountsmod.AT_RECURSIVE | mountsmod.AT_EMPTY_PATH)
        _attach(_flagged(tree, f"remount {rel} read-only", ro=True, nosuid=True, nodev=True, noexec=True),
                target)
        os.close(tree)
    for rel in masked:
        top, sub = where(rel)
        try:
            target = mountsmod.resolve_in(top, sub)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(os.fstat(target).st_mode):
            mask = _fresh(f"mask {rel}", "tmpfs", {"size": "0"}, ro=True)
        else:
            mask = _host_tree("/dev/null", f"mask {rel}")
        _attach(_Tree(mask, f"mask {rel}"), target)
        os.close(mask)


def _mount_dev(root: int, devices=()) -> None:
    # nodev: the null/zero/... binds below are mounts of their own and keep
    # working; a node made with mknod in this tmpfs does not
    dev = _fresh("/dev", "tmpfs", {"mode": "755", "size": "65536k"}, nosuid=True, nodev=True)
    _attach(_Tree(dev, "mount /dev"), _dst_fd(root, "/dev", "mount /dev", "dir"))
    try:
        for name in DEV_NODES:
            node = _host_tree(f"/dev/{name}", f"bind /dev/{name}")
            _attach(_Tree(node, f"bind /dev/{name}"), _dst_fd(dev, name, f"bind /dev/{name}", "file"))
            os.close(node)
        for name, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):
            os.symlink(to, name, dir_fd=dev)
        for name, mode in (("shm", 0o1777), ("pts", 0o755)):
            os.mkdir(name, mode, dir_fd=dev)
            os.chmod(name, mode, dir_fd=dev)      # past the umask
        shm = _fresh("/dev/shm", "tmpfs", {"mode": "1777", "size": "65536k"},
                     nosuid=True, nodev=True, noexec=True)
        _attach(_Tree(shm, "mount /dev/shm"), _dst_fd(dev, "shm", "mount /dev/shm", None))
        os.close(shm)
        pts = _fresh("/dev/pts", "devpts", {"newinstance": None, "ptmxmode": "0666", "mode": "0620"},
                     nosuid=True, noexec=True)
        _attach(_Tree(pts, "mount /dev/pts"), _dst_fd(dev, "pts", "mount /dev/pts", None))
        os.close(pts)
        for d in devices:   # --device: the host's node, checked to still be what was granted
            _bind_device(d, dev)
    finally:
        os.close(dev)


def _bind_device(d, dev: int) -> None:
    """One granted host node, opened once, checked as the descriptor, bound
    from that descriptor onto its name in the container's /dev."""
    fd = _step(f"open device {d.src}", os.open, d.src, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else "?"
        if (kind, os.major(st.st_rdev), os.minor(st.st_rdev)) != (d.type, d.major, d.minor):
            raise _Fail(f"device {d.src}: is no longer {d.type} {d.major}:{d.minor} as when it was granted")
        node = _step(f"bind device {d.src}", mountsmod.open_tree, fd, "",
                     mountsmod.OPEN_TREE_CLONE | mountsmod.OPEN_TREE_CLOEXEC | mountsmod.AT_EMPTY_PATH)
        try:
            _attach(_Tree(node, f"bind device {d.src} on {d.dst}", d.dst, is_dir=False),
                    _dst_fd(dev, d.dst[len("/dev/"):], f"bind device {d.src} on {d.dst}", "file"))
        finally:
            os.close(node)
    finally:
        os.close(fd)


def _readonly_rootfs(root: int, volumes: list) -> None:
    """root.readonly: the rootfs and every mount it brought along read-only,
    before anything is attached on it (what the container is given on top,
    /proc, /dev, /sys and the volumes, keeps its own flags). The mount points
    those need are made first, while it can still be written."""
    for dst in ("/proc", "/dev", "/sys"):
        os.close(_dst_fd(root, dst, f"mount point {dst}", "dir"))
    for t in volumes:
        os.close(_dst_fd(root, t.dst, t.what, "dir" if t.is_dir else "file"))
    _step("rootfs read-only", lambda: mountsmod.mount_setattr(
        root, "", mountsmod.AT_EMPTY_PATH | mountsmod.AT_RECURSIVE, attr_set=mountsmod.MOUNT_ATTR_RDONLY))


def _pivot(root: int) -> None:
    _step("chdir to the rootfs", os.fchdir, root)
    os.close(root)
    # pivot_root(".", "."): the old root ends up stacked on "/", detach it
    _step("pivot_root", ns.pivot_root, ".", ".")
    _step("detach old root", ns.umount2, ".", ns.MNT_DETACH)
    _step("chdir /", os.chdir, "/")


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _drop_privileges(spec: SpawnSpec) -> None:
    if spec.capability_sets is not None:
        _set_capabilities(spec)
        return
    keep = spec.cap_mask
    # bounding set first (needs CAP_SETPCAP, still held); then the user switch
    # (CAP_SETUID/SETGID still held); then permitted/effective, which a
    # switch to a non-zero uid has already emptied
    try:
        ns.prctl(ns.PR_CAP_AMBIENT, ns.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    for cap in range(capsmod.last_cap() + 1):
        if not keep >> cap & 1 and ns.prctl(ns.PR_CAPBSET_READ, cap) == 1:
            _step(f"drop capability {capsmod.CAPABILITIES[cap] if cap < len(capsmod.CAPABILITIES) else cap}",
                  ns.prctl, ns.PR_CAPBSET_DROP, cap)
    _step("setgroups", os.setgroups, [])
    _step(f"setgid {spec.gid}", os.setgid, spec.gid)
    _step(f"setuid {spec.uid}", os.setuid, spec.uid)
    _eff, permitted, _inh = _step("capget", ns.capget)
    keep &= permitted
    _step("capset", ns.capset, keep, keep, 0)


def _drop_bounding(keep: int) -> None:
    for cap in range(capsmod.last_cap() + 1):
        if not keep >> cap & 1 and ns.prctl(ns.PR_CAPBSET_READ, cap) == 1:
            _step(f"drop capability {capsmod.CAPABILITIES[cap] if cap < len(capsmod.CAPABILITIES) else cap}",
                  ns.prctl, ns.PR_CAPBSET_DROP, cap)


def _set_capabilities(spec: SpawnSpec) -> None:
    """OCI process.capabilities, as runc applies them: bounding set, then the
    user switch keeping the permitted set (PR_SET_KEEPCAPS), then effective,
    permitted and inheritable, then the ambient ones raised. execve then
    does what the kernel does with them (for uid 0: bounding | inheritable)."""
    sets = {k: capsmod.mask(v) for k, v in spec.capability_sets.items()}
    try:
        ns.prctl(ns.PR_CAP_AMBIENT, ns.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    _drop_bounding(sets["bounding"])
    _step("keep capabilities across setuid", ns.prctl, ns.PR_SET_KEEPCAPS, 1)
    _step("setgroups", os.setgroups, [])
    _step(f"setgid {spec.gid}", os.setgid, spec.gid)
    _step(f"setuid {spec.uid}", os.setuid, spec.uid)
    _step("capset", ns.capset, sets["effective"], sets["permitted"], sets["inheritable"])
    for cap in capsmod.names_of(sets["ambient"]):
        _step(f"raise ambient capability {cap}", ns.prctl, ns.PR_CAP_AMBIENT, ns.PR_CAP_AMBIENT_RAISE,
              capsmod.CAP_NUMBER[cap])
    _step("clear keep-capabilities", ns.prctl, ns.PR_SET_KEEPCAPS, 0)


def exec_failure(message: str) -> str | None:
    """What a setup failure message written by _exec says went wrong:
    "exec_not_found" (no such program: a shell's 127), "exec_not_executable"
    (found but cannot run: a shell's 126), or None (another setup step)."""
    if not message.startswith("exec "):
        return None
    if message.endswith(("executable file not found in $PATH", os.strerror(errno.ENOENT),
                         os.strerror(errno.ENOTDIR))):
        return "exec_not_found"
    return "exec_not_executable"


def _exec(argv, env) -> None:
    prog = argv[0]
    envb = {k: v for k, v in env.items()}
    if "/" in prog:
        candidates = [prog]
    else:
        path = env.get("PATH", DEFAULT_PATH)
        candidates = [os.path.join(d or ".", prog) for d in path.split(":")]
    first_err = None
    for cand in candidates:
        try:
            os.execve(cand, list(argv), envb)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR) and first_err is None:
                first_err = (cand, e)
            if len(candidates) == 1:
                first_err = first_err or (cand, e)
    if first_err is not None:
        raise _Fail(f"exec {first_err[0]}: {os.strerror(first_err[1].errno)}")
    raise _Fail(f"exec {prog}: executable file not found in $PATH")
