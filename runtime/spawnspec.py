"""The spawn spec: what the supervisor asks the launcher to start, typed.

`SpawnSpec.from_dict()` validates the JSON object the launcher receives (one
clear line per bad field, `SpecError`); the child side (runtime/spawn.py)
only ever sees a checked, frozen `SpawnSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import caps as capsmod
from . import mounts as mountsmod
from . import namespaces as ns
from . import rlimits, sysctl, terminal
from . import userns as usernsmod
from . import tmpfs as tmpfsmod
from .rules import valid_hostname  # one rule, shared with the agent


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
    masked_paths: tuple[str, ...] | None = None    # None: kernelfs.MASKED_PATHS
    readonly_paths: tuple[str, ...] | None = None  # None: kernelfs.READONLY_PATHS
    sysctl: dict = field(default_factory=dict)     # namespaced keys only
    devices: tuple[DeviceNode, ...] = ()
    tmpfs: tuple = ()   # runtime.tmpfs.Tmpfs: fresh tmpfs mounts (--tmpfs), rootfs/image containers
    stdin: bool = False  # PID 1's stdin a pipe the launcher hands on (run -i), not /dev/null
    # network "none" only: a network namespace bound on this path (runtime/netns.py),
    # joined (setns) instead of a fresh one being made
    netns: str = ""
    # with userns and netns: the user namespace bound on this path, which owns
    # that network namespace (runtime/netns.py), entered instead of a new one
    userns_path: str = ""
    # PID 1 on a pty of the container's own devpts (run -t, runtime/terminal.py):
    # rootfs/overlay containers only (a host-root one has the host's /dev)
    tty: bool = False
    tty_size: tuple = ()    # (rows, cols) the terminal starts with (the attached client's)

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
        overlay = parse_overlay(d.get("overlay"))
        if overlay is not None and rootfs:
            raise SpecError("spec.overlay: not with spec.rootfs (an image container's root is its overlay)")
        devices = tuple(_device_node(i, x) for i, x in enumerate(d.get("devices") or ()))
        extra = _oci_fields(d, rootfs=rootfs or (overlay.target if overlay else ""), network=network)
        extra["tmpfs"] = _tmpfs_field(d.get("tmpfs"), bool(rootfs or overlay))
        extra["stdin"] = d.get("stdin", False)
        if not isinstance(extra["stdin"], bool):
            raise SpecError("spec.stdin: must be true or false")
        extra["tty"] = d.get("tty", False)
        if not isinstance(extra["tty"], bool):
            raise SpecError("spec.tty: must be true or false")
        if extra["tty"] and not (rootfs or overlay):
            raise SpecError("spec.tty: needs a rootfs or an overlay (a terminal of the container's own /dev/pts)")
        extra["tty_size"] = ()
        if d.get("tty_size") is not None:
            try:
                extra["tty_size"] = terminal.check_size(d["tty_size"], "spec.tty_size")
            except ValueError as e:
                raise SpecError(str(e)) from None
        extra["netns"] = d.get("netns") or ""
        if extra["netns"]:
            _abs("netns", extra["netns"])
            if network != "none":
                raise SpecError("spec.netns: only with spec.network \"none\" (the namespace joined instead of a new one)")
        extra["userns_path"] = d.get("userns_path") or ""
        if extra["userns_path"]:
            _abs("userns_path", extra["userns_path"])
            if not (userns and extra["netns"]):
                raise SpecError("spec.userns_path: only with spec.userns and spec.netns (the user namespace "
                                "owning that network namespace)")
        return cls(protected=mountsmod.Protected(**prot), argv=tuple(argv), cgroup=d["cgroup"], stdout=d["stdout"],
                   stderr=d["stderr"], env=dict(env), cwd=cwd, uid=uid, gid=gid,
                   hostname=hostname, rootfs=rootfs, mounts=tuple(mounts),
                   network=network, log_max_bytes=lmb, capabilities=capabilities, userns=userns,
                   overlay=overlay, devices=devices, **flags, **extra)


def parse_overlay(o) -> Overlay | None:
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
