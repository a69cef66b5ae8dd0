"""What the container runs and as whom: argv, env, workdir, user, hostname."""
from __future__ import annotations

import re
from typing import Any

from agent.errors import UserError
from agent.specparts.fields import abs_container_path, pairs, quote, text
from runtime.rules import valid_hostname

ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ARGS = 4096


def argv(fieldname: str, v: Any) -> tuple:
    if not isinstance(v, list) or not v:
        raise UserError(f"{fieldname}: must be a non-empty list of strings such as [\"sh\", \"-c\", \"echo hi\"]")
    if len(v) > MAX_ARGS:
        raise UserError(f"{fieldname}: more than {MAX_ARGS} arguments")
    return tuple(text(f"{fieldname}[{i}]", a, 1 << 17) for i, a in enumerate(v))


def parse_env(v: Any) -> dict:
    env = {}
    for k, val, where in pairs("env", v):
        if not ENV_KEY_RE.fullmatch(k):
            raise UserError(f"{where}: {quote(k)} is not a variable name; use letters, digits and _")
        env[k] = val
    return env


def workdir(v: Any) -> str:
    return abs_container_path("workdir", v)


def parse_user(v: Any) -> tuple[int, int]:
    if v is None or v == "":
        return 0, 0
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    m = re.fullmatch(r"(\d{1,10})(?::(\d{1,10}))?", v) if isinstance(v, str) else None
    if not m:
        raise UserError(f"user: {quote(v)} is not uid[:gid]; use numbers such as 1000 or 1000:1000")
    uid, gid = int(m.group(1)), int(m.group(2) or 0)
    if uid > 0xFFFFFFFE or gid > 0xFFFFFFFE:
        raise UserError(f"user: {quote(v)} is out of range; uid and gid go up to 4294967294")
    return uid, gid


def hostname(v: Any) -> str:
    if not valid_hostname(v):
        raise UserError(f"hostname: {quote(v)} is not a host name; use letters, digits, - and . (at most 64)")
    return v
