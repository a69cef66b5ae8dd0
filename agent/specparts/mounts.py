"""What a container mounts: its rootfs, volumes and tmpfs, and a bundle dir.

Host paths are opened once (runtime.mounts.open_host_path: symlinks
followed, /proc magic links refused) and checked as what was opened, by the
rules the launcher applies again to the descriptor it mounts
(runtime.mounts); the resolved path is what the launcher gets.
"""
from __future__ import annotations

import errno
import os
from typing import Any

from agent.errors import UserError
from agent.specparts.fields import abs_container_path, key_path, quote, text
from agent.specparts.values import Volume
from runtime import tmpfs as tmpfs_rule
from runtime.mounts import Opened, Protected, open_host_path, opened_refusal, refusal

ROOTFS_ACCEPTED = ("use a directory holding the container's files, outside /etc, /proc, /sys and /dev, "
                   "that neither is, holds nor lies in the agent's state dir and does not hold its socket")


def _protected(config) -> Protected:
    if config is None:
        return Protected()
    return Protected(config.agent.state_dir, config.agent.socket)


def _resolve(fieldname: str, v: Any, want_dir: bool) -> tuple[str, Opened]:
    """(the path as given, what it is), opened once as the launcher will
    (runtime.mounts.open_host_path: symlinks followed, /proc magic links not;
    the descriptor is closed again)."""
    s = text(fieldname, v)
    if not s.startswith("/"):
        raise UserError(f"{fieldname}: {quote(s)} is not an absolute path")
    try:
        o = open_host_path(s)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UserError(f"{fieldname}: {quote(s)} does not exist") from None
        raise UserError(f"{fieldname}: {quote(s)} cannot be opened ({os.strerror(e.errno)})") from None
    o.close()
    if want_dir and not o.is_dir:
        raise UserError(f"{fieldname}: {quote(s)} is not a directory")
    return s, o


def _refusal(s: str, o: Opened, protected: Protected, sensitive_ok: bool) -> str | None:
    """The launcher's rules (runtime.mounts) for the path as typed and for
    what it is."""
    why = refusal(os.path.normpath(s), protected, sensitive_ok) or opened_refusal(o, protected, sensitive_ok)
    if why:
        return f"{quote(s) if o.real == s else f'{quote(s)} (-> {o.real})'} {why}"
    return None


def host_path(fieldname: str, v: Any, config, want_dir: bool = False, sensitive_ok: bool = False) -> str:
    """A volume source or bundle: the shared rules (runtime.mounts.refusal),
    the sensitive trees lifted by security.allow_sensitive_binds."""
    s, o = _resolve(fieldname, v, want_dir)
    allow = sensitive_ok or (config is not None and config.security.allow_sensitive_binds)
    why = _refusal(s, o, _protected(config), allow)
    if why:
        hint = "" if allow else " unless security.allow_sensitive_binds"
        raise UserError(f"{fieldname}: {why}; refused{hint}")
    return o.real


def rootfs_path(fieldname: str, v: Any, config) -> str:
    """--rootfs and a bundle's root.path: one rule (runtime.mounts.refusal,
    not lifted by allow_sensitive_binds); the host's root is asked for by
    giving no rootfs at all."""
    s = text(fieldname, v)
    protected = _protected(config)
    if s.startswith("/") and os.path.normpath(s) not in ("/", "//"):
        why = refusal(os.path.normpath(s), protected)   # as typed first: /proc/1/root is /proc
        if why:
            raise UserError(f"{fieldname}: {quote(s)} {why}; {ROOTFS_ACCEPTED}")
    s, o = _resolve(fieldname, s, want_dir=True)     # opened once, as the launcher will
    if o.real == "/":
        hint = "omit rootfs (agentctl: no --rootfs) to run on the host's root, or " if fieldname == "rootfs" else ""
        shown = quote(s) if os.path.normpath(s) in ("/", "//") else f"{quote(s)} (-> /)"
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
            raise UserError(f"{key_path(where, sorted(unknown)[0])}: unknown key; use src, dst, ro, noexec")
        src, dst, ro, noexec = v.get("src"), v.get("dst"), v.get("ro", False), v.get("noexec", False)
        for key, val in (("ro", ro), ("noexec", noexec)):
            if not isinstance(val, bool):
                raise UserError(f"{where}.{key}: {quote(val)} is not true or false")
    elif isinstance(v, str):
        parts = v.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise UserError(f"{where}: {quote(v)} is not SRC:DST[:ro]")
        src, dst, ro = parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"
    else:
        raise UserError(f"{where}: {quote(v)} is not SRC:DST[:ro]")
    src = host_path(f"{where} source", src, config)
    dst = abs_container_path(f"{where} destination", dst)
    if dst == "/":
        raise UserError(f"{where} destination: must not be /")
    # a destination is resolved inside the rootfs by the launcher (symlinks
    # in it lead where they lead for the container, never out of it)
    return Volume(src, dst, ro, noexec)


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
