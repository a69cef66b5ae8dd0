"""An OCI bundle (config.json, as `runc spec` writes it) as a request body
in agent.spec.from_json's format, with the Limits of its linux.resources."""
from __future__ import annotations

import json
import os
from typing import Any

from agent.errors import UserError
from agent.model import image_ref
from agent.specparts.fields import is_under, quote
from agent.specparts.mounts import host_path, rootfs_path
from agent.specparts.process import argv, parse_env

MAX_BUNDLE_CONFIG = 4 << 20


def read_bundle(path: Any, config=None) -> tuple[dict, Any]:
    """An OCI bundle -> (body dict in from_json's format, Limits from linux.resources)."""
    from runtime.errors import LimitError
    from runtime.limits import from_oci
    bundle = host_path("bundle", path, config, want_dir=True)
    cfg_path = os.path.join(bundle, "config.json")
    try:
        if os.path.getsize(cfg_path) > MAX_BUNDLE_CONFIG:
            raise UserError("bundle: config.json is larger than 4 MiB")
        with open(cfg_path, encoding="utf-8") as f:
            oci = json.load(f)
    except FileNotFoundError:
        raise UserError(f"bundle: {quote(path)} has no config.json; create one with `runc spec`") from None
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
    body["argv"] = list(argv("config.json process.args", process.get("args")))
    env = process.get("env") or []
    if not isinstance(env, list):
        raise UserError("config.json process.env: must be a list of KEY=VALUE")
    try:
        body["env"] = parse_env(env)
    except UserError as e:
        raise UserError(f"config.json process.{e}") from None
    if process.get("cwd"):
        body["workdir"] = process["cwd"]
    if process.get("terminal") is not None:     # as runc's: PID 1 on a terminal (run -t)
        body["tty"] = process["terminal"]
    user = obj("process.user", process.get("user"))
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    for k, v in (("uid", uid), ("gid", gid)):
        if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v <= 0xFFFFFFFE):
            raise UserError(f"config.json process.user.{k}: {quote(v)} is not a number 0..4294967294")
    body["user"] = f"{uid}:{gid}"

    root = obj("root", oci.get("root"))
    root_path = root.get("path") or "rootfs"
    if not isinstance(root_path, str):
        raise UserError("config.json root.path: must be a string")
    if not root_path.startswith("/"):
        try:
            joined = os.path.realpath(os.path.join(bundle, root_path))
        except OSError as e:   # changed while it was resolved
            raise UserError(f"config.json root.path: {quote(root_path)} cannot be resolved ({e.strerror})") from None
        if not is_under(joined, bundle):
            raise UserError(f"config.json root.path: {quote(root_path)} leads out of the bundle")
        root_path = joined
    body["rootfs"] = rootfs_path("config.json root.path", root_path, config)

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
