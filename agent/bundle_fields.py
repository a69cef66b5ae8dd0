"""OCI bundle fields beyond process.args/env/cwd/user, root.path, hostname,
mounts and linux.resources (which agent/spec.py reads): each one is either
honoured, by turning it into launcher spawn-spec keys, or refused in one
line naming the field; none is dropped silently.

Honoured: root.readonly, process.capabilities (bounding, effective,
permitted, inheritable, ambient: the ambient ones the kernel can raise,
i.e. also permitted and inheritable, as runc does), process.rlimits, process.noNewPrivileges,
linux.maskedPaths, linux.readonlyPaths (instead of the default lists),
linux.sysctl (namespaced keys only; net.* with a network namespace of its
own).
Refused: hooks (they would run as root on the host), a namespace `path`
(joining the host's or another container's namespace), linux.seccomp (null
would run without a filter; a custom profile is not applied by this agent:
remove it to get the agent's filter), linux.devices (device nodes),
process.apparmorProfile and process.selinuxLabel (not applied here).
"""
from __future__ import annotations

from typing import Any

import structlog

from agent.errors import UserError
from agent.labels import unrenderable
from runtime import caps, rlimits, sysctl

log = structlog.get_logger("agentd")


def _q(v: Any) -> str:
    return repr(v)


def _refuse(field: str, why: str) -> UserError:
    return UserError(f"config.json {field}: {why}")


def parse(oci: dict) -> dict:
    """The honoured fields as spawn-spec keys; UserError for the refused ones.
    sysctl keys are checked against the network by `check_with`."""
    out: dict = {}
    hooks = oci.get("hooks")
    if hooks not in (None, {}) and (not isinstance(hooks, dict) or any(hooks.values())):
        raise _refuse("hooks", "not supported (hooks would run as root on the host); remove them")
    process = oci.get("process") if isinstance(oci.get("process"), dict) else {}
    root = oci.get("root") if isinstance(oci.get("root"), dict) else {}
    linux = oci.get("linux") if isinstance(oci.get("linux"), dict) else {}

    ro = root.get("readonly", False)
    if not isinstance(ro, bool):
        raise _refuse("root.readonly", f"{_q(ro)} is not true or false")
    if ro:
        out["readonly_rootfs"] = True

    if "capabilities" in process and process["capabilities"] is not None:
        out["capability_sets"] = _capabilities(process["capabilities"])

    raw_limits = process.get("rlimits")
    if raw_limits is not None:
        if not isinstance(raw_limits, list):
            raise _refuse("process.rlimits", "must be a list of {type, soft, hard}")
        seen = set()
        limits = []
        for i, entry in enumerate(raw_limits):
            try:
                kind, soft, hard = rlimits.check(entry)
            except rlimits.RlimitError as e:
                raise _refuse(f"process.rlimits[{i}]", str(e)) from None
            if kind in seen:
                raise _refuse(f"process.rlimits[{i}]", f"{kind} given twice")
            seen.add(kind)
            limits.append({"type": kind, "soft": soft, "hard": hard})
        out["rlimits"] = limits

    nnp = process.get("noNewPrivileges")
    if nnp is not None:
        if not isinstance(nnp, bool):
            raise _refuse("process.noNewPrivileges", f"{_q(nnp)} is not true or false")
        out["no_new_privs"] = nnp

    for key in ("apparmorProfile", "selinuxLabel"):
        if process.get(key):
            raise _refuse(f"process.{key}", "not applied by this agent; remove it")

    for oci_key, spawn_key in (("maskedPaths", "masked_paths"), ("readonlyPaths", "readonly_paths")):
        paths = linux.get(oci_key)
        if paths is None:
            continue
        if not isinstance(paths, list):
            raise _refuse(f"linux.{oci_key}", "must be a list of absolute paths")
        for i, p in enumerate(paths):
            if not isinstance(p, str) or not p.startswith("/") or "\0" in p or ".." in p.split("/"):
                raise _refuse(f"linux.{oci_key}[{i}]", f"{_q(p)} is not an absolute path without ..")
            if unrenderable(p):
                raise _refuse(f"linux.{oci_key}[{i}]", f"{unrenderable(p)}; use valid Unicode text")
        out[spawn_key] = list(paths)

    settings = linux.get("sysctl")
    if settings is not None:
        if not isinstance(settings, dict):
            raise _refuse("linux.sysctl", "must map sysctl names to string values")
        out["sysctl"] = dict(settings)

    if "seccomp" in linux:
        if linux["seccomp"] is None:
            raise _refuse("linux.seccomp", "null would run the container without a seccomp filter; "
                          "remove the key to get the agent's filter")
        raise _refuse("linux.seccomp", "custom profiles are not applied by this agent; remove it to get "
                      "the agent's filter (the equivalent of Docker's default profile)")
    namespaces = linux.get("namespaces") if isinstance(linux.get("namespaces"), list) else []
    for i, ns in enumerate(namespaces):
        if isinstance(ns, dict) and ns.get("path"):
            raise _refuse(f"linux.namespaces[{i}].path", "joining an existing namespace (the host's or "
                          "another container's) is refused; remove path")
    if linux.get("devices"):
        raise _refuse("linux.devices", "device nodes are not supported; remove it (the container gets "
                      "null, zero, full, random, urandom, tty)")
    return out


def _capabilities(v: Any) -> dict:
    if not isinstance(v, dict) or set(v) - set(caps.SETS):
        raise _refuse("process.capabilities", f"must be an object with {', '.join(caps.SETS)}")
    sets = {}
    for name in caps.SETS:
        names = v.get(name) or []
        if not isinstance(names, list):
            raise _refuse(f"process.capabilities.{name}", "must be a list of names such as CAP_KILL")
        try:
            sets[name] = list(dict.fromkeys(caps.normalize(c) for c in names))
        except caps.CapabilityError as e:
            raise _refuse(f"process.capabilities.{name}", str(e).split(": ", 1)[1]) from None
    raisable = caps.raisable_ambient(sets)
    skipped = [c for c in sets["ambient"] if c not in raisable]
    if skipped:
        log.info("bundle.ambient_skipped", capabilities=skipped,
                 reason="not also permitted and inheritable: the kernel cannot raise them (runc skips them too)")
    sets["ambient"] = raisable
    why = caps.check_sets(sets)
    if why:
        raise _refuse(f"process.capabilities.{why.split(':')[0]}", why.split(": ", 1)[1])
    return sets


def check_with(extra: dict, *, network: str, rootfs: str) -> None:
    """What depends on the final network and rootfs (after the request's overrides)."""
    if extra.get("readonly_rootfs") and not rootfs:
        raise _refuse("root.readonly", "needs the bundle's rootfs (the host's root is never made read-only)")
    for key, value in (extra.get("sysctl") or {}).items():
        try:
            sysctl.check(key, value, own_netns=network != "host")
        except sysctl.SysctlError as e:
            raise _refuse("linux.sysctl", str(e)) from None
        if isinstance(value, str) and unrenderable(value):
            raise _refuse(f"linux.sysctl.{key}", f"{unrenderable(value)}; use valid Unicode text")
