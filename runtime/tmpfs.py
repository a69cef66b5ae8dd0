"""--tmpfs DST[:OPTIONS]: Docker's syntax for a fresh tmpfs in a container.

OPTIONS is a comma list: size=N[k|m|g|%], mode=OCTAL, uid=N, gid=N,
nr_inodes=N[k|m|g], and the flags ro|rw, exec|noexec, suid|nosuid.
As Docker's, a tmpfs is nosuid, nodev and noexec unless told otherwise;
"dev" is refused (a device node in a tenant's tmpfs would reach the host's
disks). The rule is defined here once: agentd checks the user's text with
parse(), the launcher checks what agentd sent with check().
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

SYNTAX = ("DST[:OPTIONS], OPTIONS a comma list of size=N[k|m|g|%], mode=OCTAL, uid=N, gid=N, "
          "nr_inodes=N[k|m|g], ro, rw, exec, noexec, suid, nosuid")
_VALUE_RE = {
    "size": re.compile(r"[0-9]{1,15}[kKmMgG%]?"),
    "mode": re.compile(r"[0-7]{1,4}"),
    "uid": re.compile(r"[0-9]{1,10}"),
    "gid": re.compile(r"[0-9]{1,10}"),
    "nr_inodes": re.compile(r"[0-9]{1,15}[kKmMgG]?"),
}
_FLAGS = {"ro": ("ro", True), "rw": ("ro", False), "exec": ("noexec", False), "noexec": ("noexec", True),
          "suid": ("nosuid", False), "nosuid": ("nosuid", True), "nodev": ("nodev", True)}
# where the launcher mounts its own filesystems
RESERVED = ("/proc", "/sys", "/dev")


class TmpfsError(ValueError):
    """One line naming what was wrong and what is accepted."""


@dataclass(frozen=True)
class Tmpfs:
    dst: str
    options: dict = field(default_factory=dict)   # size, mode, uid, gid, nr_inodes
    ro: bool = False
    noexec: bool = True
    nosuid: bool = True

    def to_dict(self) -> dict:
        return {"dst": self.dst, "options": dict(self.options), "ro": self.ro,
                "noexec": self.noexec, "nosuid": self.nosuid}

    def __str__(self) -> str:
        opts = [f"{k}={v}" for k, v in self.options.items()]
        opts += ["ro" if self.ro else "rw", "noexec" if self.noexec else "exec",
                 "nosuid" if self.nosuid else "suid", "nodev"]
        return f"{self.dst}:{','.join(opts)}"


def _dst(dst, what: str) -> str:
    if not isinstance(dst, str) or not dst.startswith("/") or "\0" in dst or ":" in dst or "," in dst:
        raise TmpfsError(f"{what}: {dst!r} is not an absolute container path; use {SYNTAX}")
    parts = [p for p in dst.split("/") if p]
    if ".." in parts:
        raise TmpfsError(f"{what}: {dst!r} must not contain '..'")
    norm = "/" + "/".join(p for p in parts if p != ".")
    if norm == "/":
        raise TmpfsError(f"{what}: the root cannot be a tmpfs; use --read-only with a tmpfs on a directory")
    for top in RESERVED:
        if norm == top or norm.startswith(top + "/"):
            raise TmpfsError(f"{what}: {norm} is under {top}, which the launcher mounts itself")
    return norm


def parse(text, what: str = "tmpfs") -> Tmpfs:
    """'DST[:OPTIONS]' (the CLI flag, an API list item) -> Tmpfs."""
    if not isinstance(text, str):
        raise TmpfsError(f"{what}: {text!r} is not a string; use {SYNTAX}")
    dst, _, opts = text.partition(":")
    return from_options(dst, opts, what)


def from_options(dst, opts, what: str = "tmpfs") -> Tmpfs:
    """DST and Docker's option string (the API's {DST: OPTIONS} form)."""
    dst = _dst(dst, what)
    if not isinstance(opts, str):
        raise TmpfsError(f"{what}: the options of {dst} are not a string; use {SYNTAX}")
    values: dict = {}
    flags = {"ro": False, "noexec": True, "nosuid": True}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, sep, value = item.partition("=")
        if sep:
            rule = _VALUE_RE.get(key)
            if rule is None or not rule.fullmatch(value):
                raise TmpfsError(f"{what}: {item!r} is not an option of {dst}; use {SYNTAX}")
            values[key] = value
        elif item == "dev":
            raise TmpfsError(f"{what}: 'dev' is refused on {dst} (a tmpfs here is always nodev); use {SYNTAX}")
        elif item in _FLAGS:
            name, on = _FLAGS[item]
            if name != "nodev":
                flags[name] = on
        else:
            raise TmpfsError(f"{what}: {item!r} is not an option of {dst}; use {SYNTAX}")
    if "mode" in values:
        values["mode"] = values["mode"].zfill(4)
    return Tmpfs(dst, values, **flags)


def check(i: int, d) -> Tmpfs:
    """The launcher's check of one spawn-spec entry (what Tmpfs.to_dict made)."""
    what = f"spec.tmpfs[{i}]"
    if not isinstance(d, dict) or set(d) != {"dst", "options", "ro", "noexec", "nosuid"} \
            or not isinstance(d["options"], dict) or not all(isinstance(d[k], bool) for k in ("ro", "noexec", "nosuid")):
        raise TmpfsError(f"{what}: must be an object with dst, options (object), ro, noexec, nosuid")
    opts = d["options"]
    if not all(isinstance(v, str) for v in opts.values()):
        raise TmpfsError(f"{what}.options: values must be strings")
    t = from_options(d["dst"], ",".join(f"{k}={v}" for k, v in opts.items()), what)
    return Tmpfs(t.dst, t.options, ro=d["ro"], noexec=d["noexec"], nosuid=d["nosuid"])


def check_all(items, what: str = "tmpfs") -> tuple[Tmpfs, ...]:
    """No two on one destination."""
    items = tuple(items)
    seen = set()
    for t in items:
        if t.dst in seen:
            raise TmpfsError(f"{what}: two tmpfs mounts on {t.dst}")
        seen.add(t.dst)
    return items
