"""An image's config applied to a create request, with Docker's precedence.

- argv: the request's command after the image's Entrypoint; without one, the
  image's Cmd after its Entrypoint; an explicit entrypoint replaces the
  image's and drops its Cmd.
- env: the image's Env, then the request's (the request wins per key).
- workdir, user: the request's when given, else the image's. A user or group
  name is looked up in the image's /etc/passwd and /etc/group.
- labels: the image's Labels under the request's.
- ExposedPorts: recorded with the container ("PORT/PROTO", shown by inspect)
  for the network work; nothing is published.
- Volumes: Docker makes an anonymous volume for each; this agent makes none
  (the paths stay in the container's copy-on-write root) and logs
  image.volumes_not_created naming them.
"""
from __future__ import annotations

import os
import re

import structlog

from agent.errors import UserError

log = structlog.get_logger("agent.images")
PORT_RE = re.compile(r"([0-9]{1,5})(?:/(tcp|udp|sctp))?")


def _lookup(lower_dirs: list[str], rel: str) -> str | None:
    """The text of rel in the topmost layer that has it (None if absent or whited out)."""
    for d in lower_dirs:
        path = os.path.join(d, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if os.path.islink(path) or not os.path.isfile(path):
            return None  # a whiteout (0:0 device), a link or a directory: not a plain file
        if st.st_size > (4 << 20):
            return None
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    return None


def _table(text: str | None) -> dict[str, list[str]]:
    out = {}
    for line in (text or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] and not line.startswith("#"):
            out.setdefault(parts[0], parts)
    return out


def resolve_user(user: str, lower_dirs: list[str]) -> str:
    """"name[:group]" -> "uid:gid" through the image's files; numbers pass through."""
    name, _, group = user.partition(":")
    if name.isdigit() and (not group or group.isdigit()):
        return user
    passwd = _table(_lookup(lower_dirs, "etc/passwd"))
    if name.isdigit():
        uid, gid = name, None
    else:
        entry = passwd.get(name)
        if entry is None:
            raise UserError(f"user: {name!r} is not in the image's /etc/passwd; give a uid (e.g. 1000:1000)")
        uid, gid = entry[2], entry[3]
    if group:
        if group.isdigit():
            gid = group
        else:
            entry = _table(_lookup(lower_dirs, "etc/group")).get(group)
            if entry is None:
                raise UserError(f"user: group {group!r} is not in the image's /etc/group; give a gid")
            gid = entry[2]
    if gid is None:
        entry = next((e for e in passwd.values() if e[2] == uid), None)
        gid = entry[3] if entry else "0"
    return f"{uid}:{gid}"


def _strings(value, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return value
    raise UserError(f"{what}: expected a string or a list of strings")


def _as_dict(value) -> dict:
    if isinstance(value, dict):
        return dict(value)
    out = {}
    for item in value or []:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def apply(body: dict, image_config: dict, lower_dirs: list[str], ref: str) -> dict:
    """The request body with the image's defaults filled in (a new dict).
    env and labels come out as dicts; their keys and values are checked by
    the caller like any request's."""
    cfg = image_config.get("config") or {}
    out = dict(body)
    user_argv = _strings(body.get("argv"), "argv")
    if "entrypoint" in body and body["entrypoint"] is not None:
        entry = _strings(body["entrypoint"], "entrypoint")
        argv = entry + user_argv
    else:
        entry = _strings(cfg.get("Entrypoint"), "image Entrypoint")
        argv = entry + (user_argv or _strings(cfg.get("Cmd"), "image Cmd"))
    if not argv:
        raise UserError(f"image {ref} has no command (no Entrypoint or Cmd): give one after --")
    out["argv"] = argv
    env = {}
    for item in cfg.get("Env") or []:
        k, sep, v = item.partition("=")
        if k and sep:
            env[k] = v
    env.update(_as_dict(body.get("env")))
    out["env"] = env
    if not body.get("workdir") and cfg.get("WorkingDir"):
        out["workdir"] = cfg["WorkingDir"]
    user = body.get("user") or cfg.get("User") or ""
    if user:
        out["user"] = resolve_user(str(user), lower_dirs)
    labels = dict(cfg.get("Labels") or {})
    labels.update(_as_dict(body.get("labels")))
    if labels:
        out["labels"] = labels
    out.pop("entrypoint", None)
    out["_exposed_ports"] = exposed_ports(cfg.get("ExposedPorts"), ref)
    volumes = sorted(k for k in (cfg.get("Volumes") or {}) if isinstance(k, str)) \
        if isinstance(cfg.get("Volumes"), dict) else []
    if volumes:
        log.info("image.volumes_not_created", image=ref, paths=volumes,
                 reason="no anonymous volumes: the paths stay in the container's copy-on-write root")
    return out


def exposed_ports(value, ref: str) -> list[str]:
    """ExposedPorts {"80/tcp": {}} -> ["80/tcp"]; a key that is no port is left out (logged)."""
    out = set()
    for key in value if isinstance(value, dict) else ():
        m = PORT_RE.fullmatch(key) if isinstance(key, str) else None
        if not m or not 0 < int(m.group(1)) < 65536:
            log.info("image.exposed_port_ignored", image=ref, port=str(key)[:64])
            continue
        out.add(f"{int(m.group(1))}/{m.group(2) or 'tcp'}")
    return sorted(out, key=lambda p: (int(p.split("/")[0]), p))
