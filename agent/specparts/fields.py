"""The checks every spec field shares, each raising agent.errors.UserError
with one line naming the field: a string, a boolean, KEY=VALUE pairs, an
absolute container path."""
from __future__ import annotations

import json
import os
from typing import Any

from agent.errors import UserError


def quote(v: Any) -> str:
    """A value as an error message shows it (JSON where it can be)."""
    if isinstance(v, str):
        return json.dumps(v)
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return repr(v)


def text(fieldname: str, v: Any, max_len: int = 4096) -> str:
    if not isinstance(v, str):
        raise UserError(f"{fieldname}: {quote(v)} is not a string")
    if "\x00" in v:
        raise UserError(f"{fieldname}: contains a NUL byte")
    if len(v) > max_len:
        raise UserError(f"{fieldname}: longer than {max_len} characters")
    return v


def flag(fieldname: str, v: Any, default: bool) -> bool:
    if v is None:
        return default
    if not isinstance(v, bool):
        raise UserError(f"{fieldname}: {quote(v)} is not true or false")
    return v


def pairs(fieldname: str, v: Any) -> list[tuple[str, str, str]]:
    """{"k": "v"} or ["k=v"] -> [(k, v, where)]"""
    if v is None:
        return []
    if isinstance(v, dict):
        out = []
        for k, val in v.items():
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                val = str(val)
            out.append((k, text(f"{fieldname}.{k}", val), f"{fieldname}.{k}"))
        return out
    if isinstance(v, list):
        out = []
        for i, item in enumerate(v):
            item = text(f"{fieldname}[{i}]", item)
            if "=" not in item:
                raise UserError(f"{fieldname}[{i}]: {quote(item)} is not KEY=VALUE")
            k, _, val = item.partition("=")
            out.append((k, val, f"{fieldname}[{i}]"))
        return out
    raise UserError(f"{fieldname}: {quote(v)} is not an object or a list of KEY=VALUE strings")


def abs_container_path(fieldname: str, v: Any) -> str:
    s = text(fieldname, v)
    if not s.startswith("/"):
        raise UserError(f"{fieldname}: {quote(s)} is not an absolute path; use e.g. /data")
    if ".." in s.split("/"):
        raise UserError(f"{fieldname}: {quote(s)} must not contain ..")
    return os.path.normpath(s).replace("//", "/")


def is_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")
