"""Container specs: what a user asks for, validated before anything is created.

Two ways in, one result (ContainerSpec):

- `from_json(body, config)`: the API's JSON body
      {"name": "web",                      required, [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}
       "argv": ["sh", "-c", "..."],        required (unless "bundle" gives process.args)
       "env": {"K": "V"} | ["K=V"],
       "workdir": "/",                     absolute
       "user": "1000[:1000]",              numeric uid[:gid]
       "hostname": "web",
       "rootfs": "/abs/dir",               absent or "" = the host's root
       "bundle": "/abs/oci-bundle",        OCI bundle (config.json); other keys override it
       "volumes": ["SRC:DST[:ro]"] | [{"src", "dst", "ro"}],
       "devices": ["/dev/X[:/dev/Y][:rwm]"] | [{"src", "dst", "access"}],
       "network": "host" | "none" | "bridge" | NAME,   default: bridge for rootfs/image containers
       "ip", "ports", "egress_allow", "egress_rate", "ingress_rate", "dns", "add_hosts":
                                           a bridge network's settings (agent/network/netspec.py)
       "limits": {"memory_max": "512M", ...}   keyword arguments of runtime Limits.parse
       "restart": "no" | "on-failure[:N]" | "always",
       "labels": {"k": "v"} | ["k=v"],
       "log_max_bytes": "10M" | 10485760,
       "rm": false,                        remove once it exited for good
       "start": true,                      false = create only
       "cap_add": ["NET_RAW"],             Docker's names, with or without CAP_, or ALL
       "cap_drop": ["ALL"]}
       "userns": "auto" | "host" | {"uid": [[inside, host, count], ...], "gid": [...]}}
                                           default: "auto" with a rootfs or bundle (a
                                           user namespace with 65536 ids the agent
                                           allocates), "host" for the host's root
- `from_bundle(path, config)`: an OCI bundle dir as `runc spec` writes it.

Every problem raises agent.errors.UserError with one line naming the field.
Host paths are opened once (runtime.mounts.open_host_path: symlinks followed,
/proc magic links refused) and checked as what was opened, by the rules the
launcher applies again to the descriptor it mounts (runtime.mounts); the
resolved path is what the launcher gets.
"""
from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from agent.errors import UserError
from agent.labels import LABEL_KEY_RE, unrenderable
from runtime.mounts import Opened, Protected, open_host_path, opened_refusal, refusal
from agent.model import image_ref
from agent.network import netspec
from runtime import tmpfs as tmpfs_rule
from agent.rules import NAME_RE, RESTART_RE  # one rule each, shared with agentctl and the API
from runtime.rules import valid_hostname

ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ROOTFS_ACCEPTED = ("use a directory holding the container's files, outside /etc, /proc, /sys and /dev, "
                   "that neither is, holds nor lies in the agent's state dir and does not hold its socket")
MAX_ARGS = 4096
MAX_BUNDLE_CONFIG = 4 << 20

JSON_KEYS = {"name", "argv", "env", "workdir", "user", "hostname", "rootfs", "bundle", "volumes",
             "network", "limits", "restart", "labels", "log_max_bytes", "rm", "start", "cap_add", "cap_drop",
             "image", "pull", "entrypoint", "userns", "devices", "read_only", "tmpfs", "stdin",
             "ip", "ports", "egress_allow", "egress_rate", "ingress_rate", "dns", "add_hosts"}
# Docker's default set, less what a container on the host's network must not
# have unless it asks (--cap-add): NET_RAW there opens AF_PACKET sockets on
# the host's interfaces, loopback included, and sniffs other processes' traffic
HOST_NETWORK_DROPS = ("NET_RAW",)
DEVICE_SYNTAX = "HOST_PATH[:CONTAINER_PATH][:PERMISSIONS], e.g. /dev/sdc:/dev/xvdc:rw (PERMISSIONS: r, w, m; default rwm)"
# names the launcher itself puts in a container's /dev
DEV_RESERVED = ("pts", "shm", "fd", "stdin", "stdout", "stderr", "ptmx", "mqueue")


@dataclass(frozen=True)
class Volume:
    src: str  # resolved absolute host path
    dst: str  # absolute path inside the container
    ro: bool = False
    noexec: bool = False  # JSON {"noexec": true} or a bundle mount's "noexec" option

    def __str__(self) -> str:
        return f"{self.src}:{self.dst}" + (":ro" if self.ro else "")


@dataclass(frozen=True)
class Device:
    """A host device node granted to the container (--device)."""
    src: str  # resolved host path of the node
    dst: str  # path inside the container (under /dev)
    type: str  # "c" or "b"
    major: int
    minor: int
    access: str = "rwm"

    def __str__(self) -> str:
        return f"{self.src}:{self.dst}:{self.access}"

    def to_dict(self) -> dict:
        return {"src": self.src, "dst": self.dst, "type": self.type, "major": self.major,
                "minor": self.minor, "access": self.access}


@dataclass(frozen=True)
class RestartPolicy:
    mode: str = "no"  # no | on-failure | always
    max_retries: int | None = None  # on-failure:N; None = unbounded

    def __str__(self) -> str:
        if self.mode == "on-failure" and self.max_retries is not None:
            return f"on-failure:{self.max_retries}"
        return self.mode

    def should_restart(self, exit_code: int | None, exit_signal: int | None, restarts_so_far: int,
                       oom_killed: bool = False) -> bool:
        if self.mode == "always":
            return True
        if self.mode == "on-failure":
            failed = exit_signal is not None or (exit_code or 0) != 0 or oom_killed
            return failed and (self.max_retries is None or restarts_so_far < self.max_retries)
        return False


def _empty_limits():
    from runtime.limits import Limits
    return Limits()


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    argv: tuple
    env: dict = field(default_factory=dict)
    workdir: str = "/"
    uid: int = 0
    gid: int = 0
    hostname: str = ""
    rootfs: str = ""  # "" = host root
    image: str = ""  # agent.model.image_ref: host, rootfs:<dir>, bundle:<dir> (or an image reference)
    volumes: tuple = ()
    network: str = "host"
    limits: Any = field(default_factory=_empty_limits)
    restart: RestartPolicy = RestartPolicy()
    labels: dict = field(default_factory=dict)
    log_max_bytes: int = 10 << 20
    auto_remove: bool = False
    start: bool = True
    cap_add: tuple = ()   # normalized names or ALL (runtime.caps)
    cap_drop: tuple = ()
    oci: dict = field(default_factory=dict)  # honoured bundle fields as spawn-spec keys (agent/bundle_fields.py)
    image_ref: str = ""  # an image container: its normalised reference
    image_id: str = ""   # and the manifest digest it was created from
    # "host" (the host's user namespace), "auto" (one the agent allocates when
    # the container is created) or a mapping {"uid": [[in, host, n]], "gid": ...}
    userns: Any = "host"
    devices: tuple = ()  # Device, granted beyond the default /dev set
    read_only: bool = False  # --read-only: its root read-only (rootfs, bundle or image)
    tmpfs: tuple = ()        # runtime.tmpfs.Tmpfs (--tmpfs DST[:OPTIONS])
    exposed_ports: tuple = ()  # the image config's ExposedPorts, "PORT/PROTO" (recorded, not published)
    stdin: bool = False        # run -i: PID 1's stdin is a pipe the attached client feeds (never persisted)
    net: dict | None = None    # a bridge network's settings (agent/network/netspec.py), its ip once created

    def with_limits(self, limits) -> "ContainerSpec":
        return replace(self, limits=limits)

    def to_dict(self) -> dict:
        """JSON-safe form, stored in the state DB."""
        return {
            "name": self.name, "argv": list(self.argv), "env": dict(self.env), "workdir": self.workdir,
            "uid": self.uid, "gid": self.gid, "hostname": self.hostname, "rootfs": self.rootfs,
            "image": self.image, "volumes": [{"src": v.src, "dst": v.dst, "ro": v.ro, "noexec": v.noexec} for v in self.volumes],
            "network": self.network, "limits": self.limits.to_json(), "restart": str(self.restart),
            "labels": dict(self.labels), "log_max_bytes": self.log_max_bytes,
            "auto_remove": self.auto_remove, "start": self.start,
            "cap_add": list(self.cap_add), "cap_drop": list(self.cap_drop), "oci": dict(self.oci),
            "image_ref": self.image_ref, "image_id": self.image_id,
            "userns": self.userns,
            "devices": [d.to_dict() for d in self.devices],
            "read_only": self.read_only, "tmpfs": [t.to_dict() for t in self.tmpfs],
            "exposed_ports": list(self.exposed_ports),
            "net": self.net,
        }

    def spawn_security(self) -> dict:
        """The launcher spawn-spec keys for privileges: capabilities (Docker's
        default set, less HOST_NETWORK_DROPS on the host's network, then
        cap_add/cap_drop as Docker applies them), or a bundle's capability
        sets with cap_add/cap_drop applied; no_new_privs (on unless a bundle
        says false); the other honoured bundle fields."""
        from runtime import caps
        out = {"no_new_privs": True, **{k: v for k, v in self.oci.items() if k != "capability_sets"}}
        sets = self.oci.get("capability_sets")
        if sets is not None:
            grow = ("bounding", "effective", "permitted")
            out["capabilities"] = None
            out["capability_sets"] = {name: list(caps.tweak(sets.get(name, ()), self.cap_add if name in grow else (),
                                                            self.cap_drop)) for name in caps.SETS}
        else:
            base = caps.DOCKER_DEFAULT
            if self.network == "host":
                base = tuple(c for c in base if c not in HOST_NETWORK_DROPS)
            out["capabilities"] = list(caps.tweak(base, self.cap_add, self.cap_drop))
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ContainerSpec":
        """Inverse of to_dict for data this agent stored itself (validated when created)."""
        from runtime.limits import Limits
        return cls(
            name=d["name"], argv=tuple(d["argv"]), env=dict(d.get("env") or {}), workdir=d.get("workdir", "/"),
            uid=int(d.get("uid", 0)), gid=int(d.get("gid", 0)), hostname=d.get("hostname", ""),
            rootfs=d.get("rootfs", ""), image=d.get("image", ""),
            volumes=tuple(Volume(v["src"], v["dst"], bool(v.get("ro")), bool(v.get("noexec")))
                          for v in d.get("volumes") or ()),
            network=d.get("network", "host"), limits=Limits.from_json(d.get("limits") or {}),
            restart=parse_restart(d.get("restart", "no")), labels=dict(d.get("labels") or {}),
            log_max_bytes=int(d.get("log_max_bytes", 10 << 20)), auto_remove=bool(d.get("auto_remove")),
            start=bool(d.get("start", True)),
            cap_add=tuple(d.get("cap_add") or ()), cap_drop=tuple(d.get("cap_drop") or ()),
            oci=dict(d.get("oci") or {}),
            image_ref=d.get("image_ref", ""), image_id=d.get("image_id", ""),
            userns=d.get("userns", "host"),
            devices=tuple(Device(**x) for x in d.get("devices") or ()),
            read_only=bool(d.get("read_only")),
            tmpfs=tuple(tmpfs_rule.Tmpfs(**x) for x in d.get("tmpfs") or ()),
            exposed_ports=tuple(d.get("exposed_ports") or ()),
            net=d.get("net"),
        )


# ------------------------------------------------------------------ field checks


def _q(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def _text(fieldname: str, v: Any, max_len: int = 4096) -> str:
    if not isinstance(v, str):
        raise UserError(f"{fieldname}: {_q(v)} is not a string")
    if "\x00" in v:
        raise UserError(f"{fieldname}: contains a NUL byte")
    if len(v) > max_len:
        raise UserError(f"{fieldname}: longer than {max_len} characters")
    return v


def check_name(v: Any) -> str:
    if not isinstance(v, str) or not NAME_RE.fullmatch(v):
        raise UserError(f"name: {_q(v)} is not a valid name; use 1-63 of letters, digits, _ . - "
                        "starting with a letter or digit")
    return v


def parse_restart(v: Any, fieldname: str = "restart") -> RestartPolicy:
    if v is None or v == "":
        return RestartPolicy()
    m = RESTART_RE.fullmatch(v) if isinstance(v, str) else None
    if not m or (m.group(2) is not None and m.group(1) != "on-failure"):
        raise UserError(f"{fieldname}: {_q(v)} is not a restart policy; use no, on-failure, on-failure:N or always")
    return RestartPolicy(m.group(1), int(m.group(2)) if m.group(2) is not None else None)


def parse_user(v: Any) -> tuple[int, int]:
    if v is None or v == "":
        return 0, 0
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    m = re.fullmatch(r"(\d{1,10})(?::(\d{1,10}))?", v) if isinstance(v, str) else None
    if not m:
        raise UserError(f"user: {_q(v)} is not uid[:gid]; use numbers such as 1000 or 1000:1000")
    uid, gid = int(m.group(1)), int(m.group(2) or 0)
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise UserError(f"user: {_q(v)} is out of range; uid and gid go up to 4294967294")
    return uid, gid


def _pairs(fieldname: str, v: Any) -> list[tuple[str, str, str]]:
    """{"k": "v"} or ["k=v"] -> [(k, v, where)]"""
    if v is None:
        return []
    if isinstance(v, dict):
        out = []
        for k, val in v.items():
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                val = str(val)
            out.append((k, _text(f"{fieldname}.{k}", val), f"{fieldname}.{k}"))
        return out
    if isinstance(v, list):
        out = []
        for i, item in enumerate(v):
            item = _text(f"{fieldname}[{i}]", item)
            if "=" not in item:
                raise UserError(f"{fieldname}[{i}]: {_q(item)} is not KEY=VALUE")
            k, _, val = item.partition("=")
            out.append((k, val, f"{fieldname}[{i}]"))
        return out
    raise UserError(f"{fieldname}: {_q(v)} is not an object or a list of KEY=VALUE strings")


def parse_env(v: Any) -> dict:
    env = {}
    for k, val, where in _pairs("env", v):
        if not ENV_KEY_RE.fullmatch(k):
            raise UserError(f"{where}: {_q(k)} is not a variable name; use letters, digits and _")
        env[k] = val
    return env


def parse_labels(v: Any) -> dict:
    labels = {}
    for k, val, where in _pairs("labels", v):
        if not LABEL_KEY_RE.fullmatch(k):
            raise UserError(f"{where}: {_q(k)} is not a label key; use 1-63 of letters, digits, _ . - / "
                            "starting with a letter or digit")
        if len(val) > 1024 or any(ord(c) < 32 for c in val):
            raise UserError(f"{where}: value must be at most 1024 printable characters")
        why = unrenderable(val)
        if why:
            raise UserError(f"{where}: the value of label {_q(k)} {why}; use valid Unicode text")
        labels[k] = val
    return labels


def _argv(fieldname: str, v: Any) -> tuple:
    if not isinstance(v, list) or not v:
        raise UserError(f"{fieldname}: must be a non-empty list of strings such as [\"sh\", \"-c\", \"echo hi\"]")
    if len(v) > MAX_ARGS:
        raise UserError(f"{fieldname}: more than {MAX_ARGS} arguments")
    return tuple(_text(f"{fieldname}[{i}]", a, 1 << 17) for i, a in enumerate(v))


def _abs_container_path(fieldname: str, v: Any) -> str:
    s = _text(fieldname, v)
    if not s.startswith("/"):
        raise UserError(f"{fieldname}: {_q(s)} is not an absolute path; use e.g. /data")
    if ".." in s.split("/"):
        raise UserError(f"{fieldname}: {_q(s)} must not contain ..")
    return os.path.normpath(s).replace("//", "/")


def _is_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _protected(config) -> Protected:
    if config is None:
        return Protected()
    return Protected(config.agent.state_dir, config.agent.socket)


def _resolve(fieldname: str, v: Any, want_dir: bool) -> tuple[str, Opened]:
    """(the path as given, what it is), opened once as the launcher will
    (runtime.mounts.open_host_path: symlinks followed, /proc magic links not;
    the descriptor is closed again)."""
    s = _text(fieldname, v)
    if not s.startswith("/"):
        raise UserError(f"{fieldname}: {_q(s)} is not an absolute path")
    try:
        o = open_host_path(s)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UserError(f"{fieldname}: {_q(s)} does not exist") from None
        raise UserError(f"{fieldname}: {_q(s)} cannot be opened ({os.strerror(e.errno)})") from None
    o.close()
    if want_dir and not o.is_dir:
        raise UserError(f"{fieldname}: {_q(s)} is not a directory")
    return s, o


def _refusal(s: str, o: Opened, protected: Protected, sensitive_ok: bool) -> str | None:
    """The launcher's rules (runtime.mounts) for the path as typed and for
    what it is."""
    why = refusal(os.path.normpath(s), protected, sensitive_ok) or opened_refusal(o, protected, sensitive_ok)
    if why:
        return f"{_q(s) if o.real == s else f'{_q(s)} (-> {o.real})'} {why}"
    return None


def _host_path(fieldname: str, v: Any, config, want_dir: bool = False, sensitive_ok: bool = False) -> str:
    """A volume source or bundle: the shared rules (runtime.mounts.refusal),
    the sensitive trees lifted by security.allow_sensitive_binds."""
    s, o = _resolve(fieldname, v, want_dir)
    allow = sensitive_ok or (config is not None and config.security.allow_sensitive_binds)
    why = _refusal(s, o, _protected(config), allow)
    if why:
        hint = "" if allow else " unless security.allow_sensitive_binds"
        raise UserError(f"{fieldname}: {why}; refused{hint}")
    return o.real


def _rootfs_path(fieldname: str, v: Any, config) -> str:
    """--rootfs and a bundle's root.path: one rule (runtime.mounts.refusal,
    not lifted by allow_sensitive_binds); the host's root is asked for by
    giving no rootfs at all."""
    s = _text(fieldname, v)
    protected = _protected(config)
    if s.startswith("/") and os.path.normpath(s) not in ("/", "//"):
        why = refusal(os.path.normpath(s), protected)   # as typed first: /proc/1/root is /proc
        if why:
            raise UserError(f"{fieldname}: {_q(s)} {why}; {ROOTFS_ACCEPTED}")
    s, o = _resolve(fieldname, s, want_dir=True)     # opened once, as the launcher will
    if o.real == "/":
        hint = "omit rootfs (agentctl: no --rootfs) to run on the host's root, or " if fieldname == "rootfs" else ""
        shown = _q(s) if os.path.normpath(s) in ("/", "//") else f"{_q(s)} (-> /)"
        raise UserError(f"{fieldname}: {shown} is the host's root; {hint}{ROOTFS_ACCEPTED}")
    why = _refusal(s, o, protected, False)
    if why:
        raise UserError(f"{fieldname}: {why}; {ROOTFS_ACCEPTED}")
    return o.real


def parse_volume(i: int, v: Any, config, rootfs: str) -> Volume:
    where = f"volumes[{i}]"
    noexec = False
    if isinstance(v, dict):
        unknown = set(v) - {"src", "dst", "ro", "noexec"}
        if unknown:
            raise UserError(f"{where}.{sorted(unknown)[0]}: unknown key; use src, dst, ro, noexec")
        src, dst, ro, noexec = v.get("src"), v.get("dst"), v.get("ro", False), v.get("noexec", False)
        for key, val in (("ro", ro), ("noexec", noexec)):
            if not isinstance(val, bool):
                raise UserError(f"{where}.{key}: {_q(val)} is not true or false")
    elif isinstance(v, str):
        parts = v.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise UserError(f"{where}: {_q(v)} is not SRC:DST[:ro]")
        src, dst, ro = parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"
    else:
        raise UserError(f"{where}: {_q(v)} is not SRC:DST[:ro]")
    src = _host_path(f"{where} source", src, config)
    dst = _abs_container_path(f"{where} destination", dst)
    if dst == "/":
        raise UserError(f"{where} destination: must not be /")
    # a destination is resolved inside the rootfs by the launcher (symlinks
    # in it lead where they lead for the container, never out of it)
    return Volume(src, dst, ro, noexec)


def parse_userns(v: Any, rootfs: str, uid: int, gid: int) -> Any:
    """"auto" | "host" | a mapping -> what ContainerSpec.userns holds.
    `rootfs`: the container's own root (a rootfs path, or an image id). The
    default is "auto" with one, "host" for the host's root (a host-root
    container shares the host's files, which a user namespace would show
    as owned by nobody)."""
    from runtime.userns import CONTAINER_IDS, UsernsError, check_mapping, host_id
    if v in (None, ""):
        return "auto" if rootfs else "host"
    if v == "host":
        return "host"
    if not rootfs and (v == "auto" or isinstance(v, dict)):
        raise UserError("userns: a user namespace needs a rootfs, bundle or image; a container on the host's "
                        "root runs in the host's user namespace (userns \"host\")")
    if v == "auto":
        if uid >= CONTAINER_IDS or gid >= CONTAINER_IDS:
            raise UserError(f"user: {uid}:{gid} is outside the container's ids 0..{CONTAINER_IDS - 1} "
                            "of userns \"auto\"; use a smaller id or userns \"host\"")
        return "auto"
    if not isinstance(v, dict):
        raise UserError(f"userns: {_q(v)} is not \"auto\", \"host\" or "
                        "{\"uid\": [[inside, host, count], ...], \"gid\": [...]}")
    try:
        mapping = check_mapping(v)
    except UsernsError as e:
        raise UserError(str(e)) from None
    for side, val in (("uid", uid), ("gid", gid)):
        if host_id(mapping[side], val) is None:
            raise UserError(f"user: {side} {val} is not mapped by userns.{side}; map it or run as a mapped id")
    return mapping
def split_device(text: Any) -> tuple[str, str, str]:
    """Docker's --device syntax -> (host path, container path, permissions):
    the one parser of it (agentctl checks flags with it too). ValueError:
    one line naming the accepted syntax."""
    from runtime.devfilter import ACCESS_RE
    if not isinstance(text, str) or not text or "\x00" in text:
        raise ValueError(f"{_q(text)} is not a device; use {DEVICE_SYNTAX}")
    parts = text.split(":")
    if len(parts) == 2 and ACCESS_RE.fullmatch(parts[1]):
        parts = [parts[0], parts[0], parts[1]]
    if len(parts) > 3 or not all(parts) or (len(parts) == 3 and not ACCESS_RE.fullmatch(parts[2])):
        raise ValueError(f"{_q(text)} is not a device; use {DEVICE_SYNTAX}")
    src, dst, access = parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else "rwm"
    for p in (src, dst):
        if not p.startswith("/"):
            raise ValueError(f"{_q(text)}: {_q(p)} is not an absolute path; use {DEVICE_SYNTAX}")
    return src, dst, "".join(c for c in "rwm" if c in access)


def parse_device(i: int, v: Any, rootfs: str) -> Device:
    """One entry of "devices": resolved on this host to its type and numbers."""
    import stat
    where = f"devices[{i}]"
    if isinstance(v, dict):
        unknown = set(v) - {"src", "dst", "access"}
        if unknown:
            raise UserError(f"{where}.{sorted(unknown)[0]}: unknown key; use src, dst, access")
        src = v.get("src")
        text = f"{src}:{v.get('dst') or src}:{v.get('access') or 'rwm'}" if isinstance(src, str) else src
    else:
        text = v
    try:
        src, dst, access = split_device(text)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None
    resolved = os.path.realpath(src)
    try:
        st = os.stat(resolved)
    except OSError:
        raise UserError(f"{where}: {_q(src)} does not exist on this host; use {DEVICE_SYNTAX}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise UserError(f"{where}: {_q(src)} is not a character or block device node")
    dst = _abs_container_path(f"{where} container path", dst)
    if rootfs:
        rel = dst[len("/dev/"):] if dst.startswith("/dev/") else ""
        if not rel:
            raise UserError(f"{where} container path: {_q(dst)} must be a name under /dev, e.g. /dev/xvdc")
        if rel.split("/")[0] in DEV_RESERVED:
            raise UserError(f"{where} container path: {_q(dst)} is made by the agent itself; "
                            f"choose another name under /dev")
    elif dst not in (src, resolved):
        raise UserError(f"{where} container path: {_q(dst)} differs from the host path, which needs a rootfs "
                        "(a container on the host's root sees the host's /dev)")
    return Device(resolved, dst, kind, os.major(st.st_rdev), os.minor(st.st_rdev), access)


def parse_limits(v: Any, fieldname: str = "limits"):
    from runtime.errors import LimitError
    from runtime.limits import Limits
    if v is None:
        return Limits()
    if isinstance(v, Limits):
        return v
    if not isinstance(v, dict):
        raise UserError(f"{fieldname}: {_q(v)} is not an object such as {{\"memory_max\": \"512M\"}}")
    args = {}
    for k, val in v.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise UserError(f"{fieldname}.{k}: unknown limit")
        if val is None:
            continue
        args[k] = val
    try:
        return Limits.parse(**args)
    except LimitError as e:
        raise UserError(f"{fieldname}.{e}") from None
    except Exception:  # a value of the wrong JSON type: find the key it belongs to
        pass
    for key, val in args.items():
        try:
            Limits.parse(**{key: val})
        except LimitError as e:
            raise UserError(f"{fieldname}.{e}") from None
        except Exception:
            raise UserError(f"{fieldname}.{key}: {_q(val)} is not a valid value for this limit") from None
    raise UserError(f"{fieldname}: {_q(v)} is not a valid set of limits")


def _size(fieldname: str, v: Any) -> int:
    from agent.config import parse_size
    try:
        n = parse_size(v)
    except ValueError:
        raise UserError(f"{fieldname}: {_q(v)} is not a size; use e.g. 512K, 10M") from None
    if n < 4096:
        raise UserError(f"{fieldname}: {_q(v)} is too small; use at least 4K")
    return n


def _bool(fieldname: str, v: Any, default: bool) -> bool:
    if v is None:
        return default
    if not isinstance(v, bool):
        raise UserError(f"{fieldname}: {_q(v)} is not true or false")
    return v


# ------------------------------------------------------------------ entry points


def _image_body(body: dict, images) -> tuple[dict, str, str]:
    """An image container's body with the image's config applied; (body, reference, digest)."""
    from agent.images import reference, runconfig

    if images is None:
        raise UserError("image: images are not enabled on this agentd (see its log)")
    for other in ("rootfs", "bundle"):
        if body.get(other):
            raise UserError(f"image: cannot be combined with {other}; give one of image, rootfs, bundle")
    ref = reference.parse(body.pop("image"))
    policy = body.pop("pull", None) or "missing"
    digest = images.ensure(str(ref), policy)
    config, lower = images.store.config(digest), images.lower_dirs(digest)
    body = runconfig.apply(body, config, lower, str(ref))
    labels = {}
    for k, v in (body.get("labels") or {}).items():
        try:  # an image label that is no valid label here is left out, not fatal
            labels.update(parse_labels({k: v}))
        except UserError:
            continue
    body["labels"] = labels
    return body, str(ref), digest


def from_json(body: Any, config=None, images=None) -> ContainerSpec:
    """Validate an API request body (see the module docstring).

    images (agent.images.service.ImageService) resolves an "image" field."""
    if not isinstance(body, dict):
        raise UserError("body: must be a JSON object")
    for k in body:
        if k not in JSON_KEYS:
            raise UserError(f"{k}: unknown field; use one of {', '.join(sorted(JSON_KEYS))}")
    body = dict(body)
    bundle_limits = None
    image = ""
    img_ref = img_id = ""
    if body.get("image"):
        user_labels = parse_labels(body.get("labels"))  # the request's own labels must be valid
        body, img_ref, img_id = _image_body(body, images)
        body["labels"].update(user_labels)
        image = img_ref
    else:
        for k in ("image", "pull", "entrypoint"):
            if body.pop(k, None) not in (None, ""):
                raise UserError(f"{k}: only for image containers (give image)")
    if body.get("bundle"):
        base, bundle_limits = read_bundle(body.pop("bundle"), config)
        image = base["image"]
        for key, value in body.items():
            if key == "argv" and not value:
                continue
            if key in ("env", "labels") and value:
                merged = parse_env(base.get(key)) if key == "env" else {}
                merged.update(parse_env(value) if key == "env" else parse_labels(value))
                base[key] = merged
            elif key == "volumes" and value:
                base["volumes"] = list(base.get("volumes", [])) + list(value)
            elif value is not None:
                base[key] = value
        body = base
    else:
        body.pop("bundle", None)

    name = check_name(body.get("name"))
    if "argv" not in body or body["argv"] is None:
        raise UserError("argv: missing; give the command to run, e.g. [\"sh\", \"-c\", \"echo hi\"]")
    argv = _argv("argv", body["argv"])
    env = parse_env(body.get("env"))
    workdir = _abs_container_path("workdir", body.get("workdir") or "/")
    uid, gid = parse_user(body.get("user"))
    hostname = body.get("hostname")
    if hostname in (None, ""):
        hostname = name.replace("_", "-").replace(".", "-").strip("-")[:63] or "container"
    elif not valid_hostname(hostname):
        raise UserError(f"hostname: {_q(hostname)} is not a host name; use letters, digits, - and . (at most 64)")
    rootfs = ""
    raw_root = body.get("rootfs")
    if raw_root not in (None, ""):
        rootfs = _rootfs_path("rootfs", raw_root, config)
        image = image or raw_root
    image = image_ref(image, rootfs)
    volumes_in = body.get("volumes") or []
    if not isinstance(volumes_in, list):
        raise UserError("volumes: must be a list of SRC:DST[:ro]")
    volumes = tuple(parse_volume(i, v, config, rootfs) for i, v in enumerate(volumes_in))
    devices_in = body.get("devices") or []
    if not isinstance(devices_in, list):
        raise UserError(f"devices: must be a list of {DEVICE_SYNTAX}")
    devices = tuple(parse_device(i, d, rootfs) for i, d in enumerate(devices_in))
    if len({d.dst for d in devices}) < len(devices):
        raise UserError("devices: two devices have the same container path")
    network = netspec.choose_mode(body, bool(rootfs or img_id),
                                  config.network.default if config is not None else "bridge")
    net = netspec.parse(body, network)
    limits = parse_limits(body.get("limits"))
    if bundle_limits is not None:
        limits = bundle_limits.merge(limits)
    restart = parse_restart(body.get("restart"))
    labels = parse_labels(body.get("labels"))
    default_log = config.logs.max_bytes if config is not None else 10 << 20
    log_max = default_log if body.get("log_max_bytes") in (None, "") else _size("log_max_bytes", body["log_max_bytes"])
    auto_remove = _bool("rm", body.get("rm"), False)
    start = _bool("start", body.get("start"), True)
    if auto_remove and restart.mode == "always":
        raise UserError("rm: cannot be combined with restart=always (it would never be removed)")
    cap_add, cap_drop = parse_cap_changes(body.get("cap_add"), body.get("cap_drop"))
    oci = body.get("_oci") or {}
    if oci:
        from agent import bundle_fields
        bundle_fields.check_with(oci, network=network, rootfs=rootfs)
    userns = parse_userns(body.get("userns"), rootfs or img_id, uid, gid)
    read_only = _bool("read_only", body.get("read_only"), False)
    if read_only and not (rootfs or img_id):
        raise UserError("read_only: needs a rootfs, a bundle or an image (the host's root is never made read-only)")
    tmpfs = parse_tmpfs(body.get("tmpfs"), bool(rootfs or img_id))
    clash = {t.dst for t in tmpfs} & {v.dst.rstrip("/") or "/" for v in volumes}
    if clash:
        raise UserError(f"tmpfs: {sorted(clash)[0]} is also a volume's destination; give one of the two")
    return ContainerSpec(name=name, argv=argv, env=env, workdir=workdir, uid=uid, gid=gid, hostname=hostname,
                         rootfs=rootfs, image=image, volumes=volumes, network=network, limits=limits,
                         restart=restart, labels=labels, log_max_bytes=log_max, auto_remove=auto_remove,
                         start=start, cap_add=cap_add, cap_drop=cap_drop, oci=oci,
                         image_ref=img_ref, image_id=img_id, userns=userns,
                         devices=devices, read_only=read_only, tmpfs=tmpfs,
                         exposed_ports=tuple(body.get("_exposed_ports") or ()),
                         stdin=_bool("stdin", body.get("stdin"), False), net=net)


def parse_tmpfs(v: Any, has_root: bool) -> tuple:
    """tmpfs: a list of "DST[:OPTIONS]" (the CLI's --tmpfs) or Docker's API map {DST: OPTIONS}."""
    if v in (None, "", [], {}):
        return ()
    if isinstance(v, dict):
        items = [(dst, opts) for dst, opts in v.items()]
    elif isinstance(v, list):
        items = [None] * len(v)
    else:
        raise UserError(f"tmpfs: must be a list of {tmpfs_rule.SYNTAX}, or an object {{DST: OPTIONS}}")
    if not has_root:
        raise UserError("tmpfs: needs a rootfs, a bundle or an image (no mount on the host's own tree)")
    try:
        if isinstance(v, dict):
            out = [tmpfs_rule.from_options(dst, opts, f"tmpfs[{dst!r}]") for dst, opts in items]
        else:
            out = [tmpfs_rule.parse(x, f"tmpfs[{i}]") for i, x in enumerate(v)]
        return tmpfs_rule.check_all(out)
    except tmpfs_rule.TmpfsError as e:
        raise UserError(str(e)) from None


def parse_cap_changes(add: Any, drop: Any) -> tuple[tuple, tuple]:
    """cap_add / cap_drop: lists of Docker's capability names (or ALL)."""
    from runtime import caps
    try:
        return caps.normalize_changes(add, "cap_add"), caps.normalize_changes(drop, "cap_drop")
    except caps.CapabilityError as e:
        raise UserError(str(e)) from None


def read_bundle(path: Any, config=None) -> tuple[dict, Any]:
    """An OCI bundle -> (body dict in from_json's format, Limits from linux.resources)."""
    from runtime.errors import LimitError
    from runtime.limits import from_oci
    bundle = _host_path("bundle", path, config, want_dir=True)
    cfg_path = os.path.join(bundle, "config.json")
    try:
        if os.path.getsize(cfg_path) > MAX_BUNDLE_CONFIG:
            raise UserError("bundle: config.json is larger than 4 MiB")
        with open(cfg_path, encoding="utf-8") as f:
            oci = json.load(f)
    except FileNotFoundError:
        raise UserError(f"bundle: {_q(path)} has no config.json; create one with `runc spec`") from None
    except (OSError, ValueError) as e:
        raise UserError(f"bundle: config.json is not valid JSON ({e.__class__.__name__}: {e})".splitlines()[0]) from None
    if not isinstance(oci, dict):
        raise UserError("bundle: config.json must hold a JSON object")

    def obj(key: str, v: Any) -> dict:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise UserError(f"config.json {key}: must be an object")
        return v

    body: dict = {"image": image_ref("", bundle=bundle)}
    process = obj("process", oci.get("process"))
    if "args" not in process:
        raise UserError("config.json process.args: missing")
    body["argv"] = list(_argv("config.json process.args", process.get("args")))
    env = process.get("env") or []
    if not isinstance(env, list):
        raise UserError("config.json process.env: must be a list of KEY=VALUE")
    try:
        body["env"] = parse_env(env)
    except UserError as e:
        raise UserError(f"config.json process.{e}") from None
    if process.get("cwd"):
        body["workdir"] = process["cwd"]
    user = obj("process.user", process.get("user"))
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    for k, v in (("uid", uid), ("gid", gid)):
        if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v <= 0xFFFFFFFE):
            raise UserError(f"config.json process.user.{k}: {_q(v)} is not a number 0..4294967294")
    body["user"] = f"{uid}:{gid}"

    root = obj("root", oci.get("root"))
    root_path = root.get("path") or "rootfs"
    if not isinstance(root_path, str):
        raise UserError("config.json root.path: must be a string")
    if not root_path.startswith("/"):
        try:
            joined = os.path.realpath(os.path.join(bundle, root_path))
        except OSError as e:   # changed while it was resolved
            raise UserError(f"config.json root.path: {_q(root_path)} cannot be resolved ({e.strerror})") from None
        if not _is_under(joined, bundle):
            raise UserError(f"config.json root.path: {_q(root_path)} leads out of the bundle")
        root_path = joined
    body["rootfs"] = _rootfs_path("config.json root.path", root_path, config)

    if oci.get("hostname"):
        body["hostname"] = oci["hostname"]

    volumes = []
    mounts = oci.get("mounts") or []
    if not isinstance(mounts, list):
        raise UserError("config.json mounts: must be a list")
    for i, m in enumerate(mounts):
        m = obj(f"mounts[{i}]", m)
        options = m.get("options") or []
        if not isinstance(options, list):
            raise UserError(f"config.json mounts[{i}].options: must be a list")
        if m.get("type") != "bind" and "bind" not in options and "rbind" not in options:
            continue  # proc, tmpfs, devpts, sysfs, ...: the launcher provides its own /proc
        src = m.get("source")
        if isinstance(src, str) and not src.startswith("/"):
            src = os.path.join(bundle, src)
        volumes.append({"src": src, "dst": m.get("destination"), "ro": "ro" in options,
                        "noexec": "noexec" in options})
    body["volumes"] = volumes

    linux = obj("linux", oci.get("linux"))
    namespaces = linux.get("namespaces") or []
    if not isinstance(namespaces, list):
        raise UserError("config.json linux.namespaces: must be a list")
    body["network"] = "host"
    body["userns"] = "host"
    for i, ns in enumerate(namespaces):
        ns = obj(f"linux.namespaces[{i}]", ns)
        if ns.get("type") == "network":
            if ns.get("path"):
                raise UserError(f"config.json linux.namespaces[{i}].path: joining an existing network namespace is not supported")
            body["network"] = "none"
        elif ns.get("type") == "user":
            if ns.get("path"):
                raise UserError(f"config.json linux.namespaces[{i}].path: joining an existing user namespace "
                                "is not supported")
            body["userns"] = _bundle_mapping(linux)
    resources = obj("linux.resources", linux.get("resources"))
    try:
        limits = from_oci(resources)
    except LimitError as e:
        raise UserError(f"config.json {e}") from None  # e names linux.resources.<field>
    except Exception:  # a section of the wrong JSON type (e.g. "cpu": [1])
        bad = next((k for k, val in resources.items() if not isinstance(val, (dict, list))
                    or (isinstance(val, list) and k not in ("devices", "hugepageLimits"))), None)
        where = f"config.json linux.resources.{bad}" if bad else "config.json linux.resources"
        raise UserError(f"{where}: not the shape the OCI runtime spec gives it") from None
    from agent import bundle_fields
    body["_oci"] = bundle_fields.parse(oci)
    return body, limits


def _bundle_mapping(linux: dict) -> Any:
    """linux.uidMappings/gidMappings -> a userns mapping; "auto" when both
    are absent (the agent allocates one); one without the other is refused."""
    got = {}
    for side, key in (("uid", "uidMappings"), ("gid", "gidMappings")):
        lines = linux.get(key)
        if lines in (None, []):
            continue
        if not isinstance(lines, list):
            raise UserError(f"config.json linux.{key}: must be a list of {{containerID, hostID, size}}")
        out = []
        for i, m in enumerate(lines):
            if not isinstance(m, dict) or set(m) - {"containerID", "hostID", "size"}:
                raise UserError(f"config.json linux.{key}[{i}]: must be {{containerID, hostID, size}}")
            out.append([m.get("containerID"), m.get("hostID"), m.get("size")])
        got[side] = out
    if not got:
        return "auto"
    if len(got) == 1:
        missing = "gidMappings" if "uid" in got else "uidMappings"
        raise UserError(f"config.json linux.{missing}: missing; give both uidMappings and gidMappings, or neither")
    from runtime.userns import UsernsError, check_mapping
    try:
        return check_mapping(got, "config.json linux.uidMappings/gidMappings")
    except UsernsError as e:
        raise UserError(str(e).replace(".uidMappings/gidMappings.uid", ".uidMappings")
                        .replace(".uidMappings/gidMappings.gid", ".gidMappings")) from None


def from_bundle(path: str, config=None, **overrides) -> ContainerSpec:
    """An OCI bundle as a spec; `overrides` are from_json keys (name is required)."""
    return from_json({**overrides, "bundle": path}, config)
