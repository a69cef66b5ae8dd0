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
    3. unshare(NEWNS | NEWUTS | NEWIPC | NEWPID [| NEWNET])
    4. fork PID 1, write its host pid to `pid_w`, _exit(0): PID 1 is
       reparented to the launcher (the child subreaper)
  PID 1:
    5. / recursively private, then (rootfs) bind it onto itself, a fresh
       /proc (mounted from inside the new PID namespace), a minimal /dev,
       read-only /sys; the bind mounts; pivot_root (or, host root, just a
       fresh /proc over /proc)
    6. hostname; loopback up when the network namespace is new
    7. no_new_privs, seccomp filter, bounding set, setgroups/setgid/setuid,
       capabilities, working dir, signal dispositions back to default
    8. execve

Any failure before execve is written as one line to `err_w` (close-on-exec,
so the launcher sees EOF without a line when execve succeeded) and the child
exits 127.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import resource
import signal
import socket
import stat
import struct
from dataclasses import dataclass, field

from . import caps as capsmod
from . import namespaces as ns
from . import seccomp

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
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
    devices: tuple[DeviceNode, ...] = ()

    @property
    def cap_mask(self) -> int:
        if self.capabilities is None:
            return capsmod.DOCKER_DEFAULT_MASK
        return capsmod.mask(self.capabilities)

    @property
    def unshare_flags(self) -> int:
        flags = ns.CLONE_NEWNS | ns.CLONE_NEWUTS | ns.CLONE_NEWIPC | ns.CLONE_NEWPID
        if self.network == "none":
            flags |= ns.CLONE_NEWNET
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
        if not isinstance(hostname, str) or (hostname and not HOSTNAME_RE.match(hostname)):
            raise SpecError("spec.hostname: 1-64 characters [A-Za-z0-9_.-], starting with a letter or digit")
        rootfs = d.get("rootfs", "")
        if not isinstance(rootfs, str):
            raise SpecError("spec.rootfs: must be \"\" (host root) or an absolute directory")
        if rootfs:
            _abs("rootfs", rootfs)
            if os.path.realpath(rootfs) == "/":
                rootfs = ""
        mounts = []
        raw_mounts = d.get("mounts") or []
        if not isinstance(raw_mounts, list):
            raise SpecError("spec.mounts: must be a list of {src, dst, ro}")
        for i, m in enumerate(raw_mounts):
            if not isinstance(m, dict) or set(m) - {"src", "dst", "ro"}:
                raise SpecError(f"spec.mounts[{i}]: must be an object with src, dst, ro")
            _abs(f"mounts[{i}].src", m.get("src"))
            _abs(f"mounts[{i}].dst", m.get("dst"))
            ro = m.get("ro", False)
            if not isinstance(ro, bool):
                raise SpecError(f"spec.mounts[{i}].ro: must be true or false")
            mounts.append(Mount(m["src"], m["dst"], ro))
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
        for name, default in (("no_new_privs", True), ("seccomp", True)):
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
        devices = tuple(_device_node(i, x) for i, x in enumerate(d.get("devices") or ()))
        return cls(argv=tuple(argv), cgroup=d["cgroup"], stdout=d["stdout"],
                   stderr=d["stderr"], env=dict(env), cwd=cwd, uid=uid, gid=gid,
                   hostname=hostname, rootfs=rootfs, mounts=tuple(mounts),
                   network=network, log_max_bytes=lmb, capabilities=capabilities,
                   devices=devices, **flags)


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
    False: a plain fork, the child joins it as its first step. OSError: the
    cgroup refused the child: CgroupRefused (EBUSY, ENOENT, EAGAIN at
    pids.max, ...); the fork itself failed: OSError."""
    global _clone3_works
    if _clone3_works:
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


def run_child(spec: SpawnSpec, *, stdout_fd: int, stderr_fd: int,
              err_w: int, pid_w: int, nofile: tuple[int, int] | None = None,
              joined: bool = False) -> None:
    """Executed in the launcher's forked child. Never returns. `nofile`:
    the RLIMIT_NOFILE the container gets (the launcher raises its own).
    `joined`: fork_in_cgroup put it in spec.cgroup already."""
    try:
        try:
            if not joined:
                _join_cgroup(spec.cgroup)      # the very first thing we do
            if nofile is not None:
                _step("set RLIMIT_NOFILE", resource.setrlimit, resource.RLIMIT_NOFILE, nofile)
            _setup_stdio(stdout_fd, stderr_fd, keep=(err_w, pid_w))
            _step("unshare namespaces", ns.unshare, spec.unshare_flags)
            pid = _step("fork container init", os.fork)
        except _Fail as e:
            _report(err_w, str(e))
            os._exit(127)
        except BaseException as e:     # a bug in here must still be one line
            _report(err_w, f"container setup: {type(e).__name__}: {e}")
            os._exit(127)
        if pid:
            os.write(pid_w, f"{pid}\n".encode())
            os._exit(0)
        os.close(pid_w)
        try:
            _container_init(spec)
        except _Fail as e:
            _report(err_w, str(e))
        except BaseException as e:     # a bug in here must still be one line
            _report(err_w, f"container setup: {type(e).__name__}: {e}")
    finally:
        os._exit(127)


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


def _setup_stdio(stdout_fd: int, stderr_fd: int, keep) -> None:
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)


def _container_init(spec: SpawnSpec) -> None:
    _step("make / private", ns.mount, None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
    if spec.rootfs:
        root = os.path.realpath(spec.rootfs)
        if not os.path.isdir(root):
            raise _Fail(f"rootfs {spec.rootfs}: not a directory")
        _step(f"bind rootfs {root}", ns.mount, root, root, None, ns.MS_BIND | ns.MS_REC)
        # nodev everywhere the container can write: CAP_MKNOD (Docker's set)
        # can create a node for the host's disk, and cgroup v2 has no device
        # allowlist file; nodev makes such a node unusable
        _remount(root, ns.MS_NODEV)
        _mount_proc(_inside(root, "/proc", make_dir=True))
        _mount_dev(_inside(root, "/dev", make_dir=True), spec.devices)
        _mount_sys(_inside(root, "/sys", make_dir=True))
        _harden(root)
        for m in spec.mounts:
            _bind(m, _inside(root, m.dst, make_for=m.src),
                  nodev=not (m.src == "/dev" or m.src.startswith("/dev/")))
        _pivot(root)
    else:
        # host root: a fresh /proc, and a fresh read-only /sys, which also
        # hides the host's cgroupfs (root could otherwise move itself out
        # of its cgroup by writing another cgroup.procs)
        _mount_proc("/proc")
        _mount_sys("/sys")
        _harden("/")
        for m in spec.mounts:
            _bind(m, m.dst)
    if spec.hostname:
        _step(f"sethostname {spec.hostname}", ns.sethostname, spec.hostname)
    if spec.network == "none":
        _step("bring up lo", _loopback_up)
    if spec.no_new_privs:
        _step("set no_new_privs", ns.set_no_new_privs)
    if spec.seccomp:
        # installed while CAP_SYS_ADMIN is still held, so it works with
        # no_new_privs off too; it refuses nothing the steps below need
        _step("install seccomp filter", seccomp.install)
    _drop_privileges(spec)
    _step(f"cwd {spec.cwd}", os.chdir, spec.cwd)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    _exec(spec.argv, spec.env)


def _inside(root: str, dst: str, make_dir: bool = False, make_for: str | None = None) -> str:
    """root+dst, refusing anything that resolves outside root (symlinks)."""
    path = os.path.join(root, dst.lstrip("/"))
    real = os.path.realpath(path)
    if real != root and not real.startswith(root + "/"):
        raise _Fail(f"mount destination {dst}: resolves outside the rootfs")
    if not os.path.lexists(real):
        want_dir = make_dir or (make_for is not None and os.path.isdir(make_for))
        try:
            if want_dir:
                os.makedirs(real, 0o755, exist_ok=True)
            elif make_for is not None:
                os.makedirs(os.path.dirname(real), 0o755, exist_ok=True)
                os.close(os.open(real, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
        except OSError as e:
            raise _Fail(f"create mount point {dst}: {os.strerror(e.errno)}") from None
    return real


def _mount_proc(target: str) -> None:
    _step("mount /proc", ns.mount, "proc", target, "proc",
          ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)


def _mount_sys(target: str) -> None:
    flags = ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC
    if target == "/sys":
        # the kernel refuses the same superblock again on its own mount point
        # (EBUSY): bind it without its submounts instead, then make that
        # read-only
        _step("bind /sys", ns.mount, "/sys", "/sys", None, ns.MS_BIND)
        _step("remount /sys read-only", ns.mount, None, "/sys", None,
              ns.MS_REMOUNT | ns.MS_BIND | flags)
    else:
        _step("mount /sys", ns.mount, "sysfs", target, "sysfs", flags)


def _harden(root: str) -> None:
    """Docker's readonlyPaths and maskedPaths under the fresh /proc and /sys."""
    for rel in READONLY_PATHS:
        path = os.path.join(root, rel.lstrip("/"))
        if os.path.exists(path):
            _step(f"bind {rel}", ns.mount, path, path, None, ns.MS_BIND | ns.MS_REC)
            _step(f"remount {rel} read-only", ns.mount, None, path, None,
                  ns.MS_REMOUNT | ns.MS_BIND | ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)
    for rel in MASKED_PATHS:
        path = os.path.join(root, rel.lstrip("/"))
        if os.path.isdir(path):
            _step(f"mask {rel}", ns.mount, "tmpfs", path, "tmpfs", ns.MS_RDONLY, "size=0")
        elif os.path.exists(path):
            _step(f"mask {rel}", ns.mount, "/dev/null", path, None, ns.MS_BIND)


def _mount_dev(dev: str, devices=()) -> None:
    # nodev: the null/zero/... binds below are mounts of their own and keep
    # working; a node made with mknod in this tmpfs does not
    _step("mount /dev", ns.mount, "tmpfs", dev, "tmpfs", ns.MS_NOSUID | ns.MS_NODEV,
          "mode=755,size=65536k")
    for name in DEV_NODES:
        target = os.path.join(dev, name)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
        _step(f"bind /dev/{name}", ns.mount, f"/dev/{name}", target, None, ns.MS_BIND)
    for name, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                     ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(to, os.path.join(dev, name))
    shm = os.path.join(dev, "shm")
    os.mkdir(shm, 0o1777)
    _step("mount /dev/shm", ns.mount, "shm", shm, "tmpfs",
          ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC, "mode=1777,size=65536k")
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    _step("mount /dev/pts", ns.mount, "devpts", pts, "devpts", ns.MS_NOSUID | ns.MS_NOEXEC,
          "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    for d in devices:   # --device: the host's node, checked to still be what was granted
        _bind_device(d, os.path.join(dev, d.dst[len("/dev/"):]))


def _bind_device(d, target: str) -> None:
    fd = _step(f"open device {d.src}", os.open, d.src, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else "?"
        if (kind, os.major(st.st_rdev), os.minor(st.st_rdev)) != (d.type, d.major, d.minor):
            raise _Fail(f"device {d.src}: is no longer {d.type} {d.major}:{d.minor} as when it was granted")
        _step(f"create {d.dst}", os.makedirs, os.path.dirname(target), 0o755, True)
        if not os.path.lexists(target):     # else one of DEV_NODES: bound over it
            os.close(_step(f"create {d.dst}", os.open, target,
                           os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        _step(f"bind device {d.src} on {d.dst}", ns.mount, f"/proc/self/fd/{fd}", target, None, ns.MS_BIND)
    finally:
        os.close(fd)


def _remount(target: str, add: int, what: str | None = None) -> None:
    """Add mount flags to a bind mount, keeping the ones it has (ST_* == MS_*)."""
    keep = os.statvfs(target).f_flag & (ns.MS_RDONLY | ns.MS_NOSUID | ns.MS_NODEV | ns.MS_NOEXEC)
    _step(f"remount {what or target}", ns.mount, None, target, None,
          ns.MS_REMOUNT | ns.MS_BIND | keep | add)


def _bind(m, target: str, nodev: bool = False) -> None:
    _step(f"bind mount {m.src} on {m.dst}", ns.mount, m.src, target, None,
          ns.MS_BIND | ns.MS_REC)
    add = (ns.MS_RDONLY if m.ro else 0) | (ns.MS_NODEV if nodev else 0)
    if add:
        _remount(target, add, f"{m.dst} read-only" if m.ro else m.dst)


def _pivot(root: str) -> None:
    _step(f"chdir {root}", os.chdir, root)
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
