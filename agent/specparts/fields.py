"""The checks every spec field shares, each raising agent.errors.UserError
with one line naming the field: a string, a boolean, KEY=VALUE pairs, an
absolute container path.

Every string a spec takes must be valid Unicode text: a lone surrogate
("\ud800" is valid JSON) is refused where it is read, naming the field, by
the one rule agent.labels.unrenderable (what the launcher, the logs and the
exposition could not encode)."""
from __future__ import annotations

import json
import os
from typing import Any

from agent.errors import UserError
from agent.labels import unrenderable


def quote(v: Any) -> str:
    """A value as an error message shows it (JSON where it can be)."""
    if isinstance(v, str):
        return json.dumps(v)
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def _string(fieldname: str, v: Any, max_len: int) -> str:
    if not isinstance(v, str):
        raise UserError(f"{fieldname}: {quote(v)} is not a string")
    if "\x00" in v:
        raise UserError(f"{fieldname}: contains a NUL byte")
    if len(v) > max_len:
        raise UserError(f"{fieldname}: longer than {max_len} characters")
    return v


def text(fieldname: str, v: Any, max_len: int = 4096) -> str:
    """A string without NUL, at most max_len characters, valid Unicode text."""
    s = _string(fieldname, v, max_len)
    why = unrenderable(s)
    if why:
        raise UserError(f"{fieldname}: {why}; use valid Unicode text")
    return s


def key_path(fieldname: str, key: Any) -> str:
    """fieldname.key, the key quoted when it is not plain text (so that the
    message stays printable)."""
    if isinstance(key, str) and key.isprintable() and not unrenderable(key):
        return f"{fieldname}.{key}"
    return f"{fieldname}[{quote(key)}]"


def flag(fieldname: str, v: Any, default: bool) -> bool:
    if v is None:
        return default
    if not isinstance(v, bool):
        raise UserError(f"{fieldname}: {quote(v)} is not true or false")
    return v


def pairs(fieldname: str, v: Any, what: str = "variable") -> list[tuple[str, str, str]]:
    """{"k": "v"} or ["k=v"] -> [(k, v, where)]; keys and values valid
    Unicode text (the message names the key, a `what`: label, variable)."""
    if v is None:
        return []
    if isinstance(v, dict):
        out = []
        for k, val in v.items():
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                val = str(val)
            where = key_path(fieldname, k)
            out.append((k, _string(where, val, 4096), where))
    elif isinstance(v, list):
        out = []
        for i, item in enumerate(v):
            item = _string(f"{fieldname}[{i}]", item, 4096)
            if "=" not in item:
                raise UserError(f"{fieldname}[{i}]: {quote(item)} is not KEY=VALUE")
            k, _, val = item.partition("=")
            out.append((k, val, f"{fieldname}[{i}]"))
    else:
        raise UserError(f"{fieldname}: {quote(v)} is not an object or a list of KEY=VALUE strings")
    for k, val, where in out:
        why = unrenderable(k) if isinstance(k, str) else None
        if why:
            raise UserError(f"{where}: the {what} name {quote(k)} {why}; use valid Unicode text")
        why = unrenderable(val)
        if why:
            raise UserError(f"{where}: the value of {what} {quote(k)} {why}; use valid Unicode text")
    return out


def abs_container_path(fieldname: str, v: Any) -> str:
    s = text(fieldname, v)
    if not s.startswith("/"):
        raise UserError(f"{fieldname}: {quote(s)} is not an absolute path; use e.g. /data")
    if ".." in s.split("/"):
        raise UserError(f"{fieldname}: {quote(s)} must not contain ..")
    return os.path.normpath(s).replace("//", "/")


def is_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def refuse_unrenderable(where: str, v: Any) -> None:
    """Every string in v (keys too) valid Unicode text, or UserError naming
    where it sits (where.key[i]): the backstop over a whole spec, for what
    no field check above read as text."""
    if isinstance(v, str):
        why = unrenderable(v)
        if why:
            raise UserError(f"{where or 'body'}: {why}; use valid Unicode text")
    elif isinstance(v, dict):
        for k, val in v.items():
            refuse_unrenderable(where, k)
            refuse_unrenderable(key_path(where, k) if where else (k if isinstance(k, str) else quote(k)), val)
    elif isinstance(v, (list, tuple)):
        for i, item in enumerate(v):
            refuse_unrenderable(f"{where}[{i}]", item)
