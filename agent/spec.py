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
       "network": "host" | "none",
       "limits": {"memory_max": "512M", ...}   keyword arguments of runtime Limits.parse
       "restart": "no" | "on-failure[:N]" | "always",
       "labels": {"k": "v"} | ["k=v"],
       "log_max_bytes": "10M" | 10485760,
       "rm": false,                        remove once it exited for good
       "start": true}                      false = create only
- `from_bundle(path, config)`: an OCI bundle dir as `runc spec` writes it.

Every problem raises agent.errors.UserError with one line naming the field.
Host paths are resolved (symlinks followed) before they are checked, and the
resolved path is what the launcher gets.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from agent.errors import UserError
from agent.model import image_ref

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
LABEL_KEY_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-/]{0,62}")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
RESTART_RE = re.compile(r"(no|always|on-failure)(?::(\d{1,6}))?")
SENSITIVE_TREES = ("/etc", "/proc", "/sys", "/dev")
MAX_ARGS = 4096
MAX_BUNDLE_CONFIG = 4 << 20
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

JSON_KEYS = {"name", "argv", "env", "workdir", "user", "hostname", "rootfs", "bundle", "volumes",
             "network", "limits", "restart", "labels", "log_max_bytes", "rm", "start"}


@dataclass(frozen=True)
class Volume:
    src: str  # resolved absolute host path
    dst: str  # absolute path inside the container
    ro: bool = False

    def __str__(self) -> str:
        return f"{self.src}:{self.dst}" + (":ro" if self.ro else "")


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

    def with_limits(self, limits) -> "ContainerSpec":
        return replace(self, limits=limits)

    def to_dict(self) -> dict:
        """JSON-safe form, stored in the state DB."""
        return {
            "name": self.name, "argv": list(self.argv), "env": dict(self.env), "workdir": self.workdir,
            "uid": self.uid, "gid": self.gid, "hostname": self.hostname, "rootfs": self.rootfs,
            "image": self.image, "volumes": [{"src": v.src, "dst": v.dst, "ro": v.ro} for v in self.volumes],
            "network": self.network, "limits": self.limits.to_json(), "restart": str(self.restart),
            "labels": dict(self.labels), "log_max_bytes": self.log_max_bytes,
            "auto_remove": self.auto_remove, "start": self.start,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ContainerSpec":
        """Inverse of to_dict for data this agent stored itself (validated when created)."""
        from runtime.limits import Limits
        return cls(
            name=d["name"], argv=tuple(d["argv"]), env=dict(d.get("env") or {}), workdir=d.get("workdir", "/"),
            uid=int(d.get("uid", 0)), gid=int(d.get("gid", 0)), hostname=d.get("hostname", ""),
            rootfs=d.get("rootfs", ""), image=d.get("image", ""),
            volumes=tuple(Volume(v["src"], v["dst"], bool(v.get("ro"))) for v in d.get("volumes") or ()),
            network=d.get("network", "host"), limits=Limits.from_json(d.get("limits") or {}),
            restart=parse_restart(d.get("restart", "no")), labels=dict(d.get("labels") or {}),
            log_max_bytes=int(d.get("log_max_bytes", 10 << 20)), auto_remove=bool(d.get("auto_remove")),
            start=bool(d.get("start", True)),
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


def _sensitive_reason(resolved: str, config) -> str | None:
    if resolved == "/":
        return "is the host's root"
    for top in SENSITIVE_TREES:
        if _is_under(resolved, top):
            return f"is {top} or below it"
    if config is not None:
        state = os.path.realpath(config.agent.state_dir)
        sock = os.path.realpath(config.agent.socket)
        if _is_under(resolved, state) or _is_under(state, resolved):
            return "holds the agent's state dir"
        if _is_under(sock, resolved):
            return "holds the agent's control socket"
    return None


def _host_path(fieldname: str, v: Any, config, want_dir: bool = False, sensitive_ok: bool = False) -> str:
    s = _text(fieldname, v)
    if not s.startswith("/"):
        raise UserError(f"{fieldname}: {_q(s)} is not an absolute path")
    resolved = os.path.realpath(s)
    if not os.path.exists(resolved):
        raise UserError(f"{fieldname}: {_q(s)} does not exist")
    if want_dir and not os.path.isdir(resolved):
        raise UserError(f"{fieldname}: {_q(s)} is not a directory")
    allow = sensitive_ok or (config is not None and config.security.allow_sensitive_binds)
    if not allow:
        why = _sensitive_reason(resolved, config)
        if why:
            shown = _q(s) if resolved == s else f"{_q(s)} (-> {resolved})"
            raise UserError(f"{fieldname}: {shown} {why}; refused unless security.allow_sensitive_binds")
    return resolved


def _check_inside(fieldname: str, rootfs: str, inner: str) -> None:
    """Resolving `inner` below `rootfs` (following symlinks) must stay below rootfs."""
    if not rootfs:
        return
    target = os.path.realpath(os.path.join(rootfs, inner.lstrip("/")))
    if not _is_under(target, rootfs):
        raise UserError(f"{fieldname}: {_q(inner)} leads out of the rootfs through a symlink (-> {target})")


def parse_volume(i: int, v: Any, config, rootfs: str) -> Volume:
    where = f"volumes[{i}]"
    if isinstance(v, dict):
        unknown = set(v) - {"src", "dst", "ro"}
        if unknown:
            raise UserError(f"{where}.{sorted(unknown)[0]}: unknown key; use src, dst, ro")
        src, dst, ro = v.get("src"), v.get("dst"), v.get("ro", False)
        if not isinstance(ro, bool):
            raise UserError(f"{where}.ro: {_q(ro)} is not true or false")
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
    _check_inside(f"{where} destination", rootfs, dst)
    return Volume(src, dst, ro)


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


def from_json(body: Any, config=None) -> ContainerSpec:
    """Validate an API request body (see the module docstring)."""
    if not isinstance(body, dict):
        raise UserError("body: must be a JSON object")
    for k in body:
        if k not in JSON_KEYS:
            raise UserError(f"{k}: unknown field; use one of {', '.join(sorted(JSON_KEYS))}")
    body = dict(body)
    bundle_limits = None
    image = ""
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
    elif not isinstance(hostname, str) or len(hostname) > 64 or not HOSTNAME_RE.fullmatch(hostname):
        raise UserError(f"hostname: {_q(hostname)} is not a host name; use letters, digits, - and . (at most 64)")
    rootfs = ""
    raw_root = body.get("rootfs")
    if raw_root not in (None, ""):
        if isinstance(raw_root, str) and raw_root.startswith("/") and os.path.realpath(raw_root) == "/":
            rootfs = ""  # the host's root, as when no rootfs is given
        else:
            # a rootfs is the container's whole view: it may hold anything but the
            # kernel's trees and /etc (the state dir inside it would be the user's choice)
            rootfs = _host_path("rootfs", raw_root, None, want_dir=True)
    image = image_ref(image, rootfs)
    volumes_in = body.get("volumes") or []
    if not isinstance(volumes_in, list):
        raise UserError("volumes: must be a list of SRC:DST[:ro]")
    volumes = tuple(parse_volume(i, v, config, rootfs) for i, v in enumerate(volumes_in))
    network = body.get("network") or "host"
    if network not in ("host", "none"):
        raise UserError(f"network: {_q(network)} is not host or none")
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
    return ContainerSpec(name=name, argv=argv, env=env, workdir=workdir, uid=uid, gid=gid, hostname=hostname,
                         rootfs=rootfs, image=image, volumes=volumes, network=network, limits=limits,
                         restart=restart, labels=labels, log_max_bytes=log_max, auto_remove=auto_remove,
                         start=start)


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
        joined = os.path.realpath(os.path.join(bundle, root_path))
        if not _is_under(joined, bundle):
            raise UserError(f"config.json root.path: {_q(root_path)} leads out of the bundle")
        root_path = joined
    body["rootfs"] = _host_path("config.json root.path", root_path, config, want_dir=True)

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
        volumes.append({"src": src, "dst": m.get("destination"), "ro": "ro" in options})
    body["volumes"] = volumes

    linux = obj("linux", oci.get("linux"))
    namespaces = linux.get("namespaces") or []
    if not isinstance(namespaces, list):
        raise UserError("config.json linux.namespaces: must be a list")
    body["network"] = "host"
    for i, ns in enumerate(namespaces):
        ns = obj(f"linux.namespaces[{i}]", ns)
        if ns.get("type") == "network":
            if ns.get("path"):
                raise UserError(f"config.json linux.namespaces[{i}].path: joining an existing network namespace is not supported")
            body["network"] = "none"
        elif ns.get("type") == "user":
            raise UserError(f"config.json linux.namespaces[{i}]: user namespaces are not supported; remove it")
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
    return body, limits


def from_bundle(path: str, config=None, **overrides) -> ContainerSpec:
    """An OCI bundle as a spec; `overrides` are from_json keys (name is required)."""
    return from_json({**overrides, "bundle": path}, config)
