"""The launcher's wire protocol, shared by its server and its client.

Framing: one JSON object per line (UTF-8, "\\n"-terminated, at most
MAX_LINE bytes) on a Unix stream socket (DIR/launcher.sock, mode 0600).

    request   {"seq": N, "op": OP, ...}                      OP in OPS
    response  {"seq": N, "ok": true, "result": ...}
              {"seq": N, "ok": false, "type": KIND, "error": "one line"}
    event     {"event": "exit", "id", "pid", "exit_code", "signal", "at"}
              (pushed to every client; see ExitRecord)

A response may carry descriptors (SCM_RIGHTS, sent with the line's first
byte): it then says how many in "fds" (the exec op: the pipes of the
process it started, see agent/launcher/execs.py).

Error kinds (KIND) and what the client raises for each: ERROR_KINDS.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

SOCKET_NAME = "launcher.sock"
LOCK_NAME = "launcher.lock"
LOG_NAME = "launcher.log"
EXITS_DIR = "exits"
MAX_LINE = 4 << 20
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SETUP_TIMEOUT = 30.0
OPS = ("spawn", "exec", "take_stdin", "signal", "running", "exits", "ack", "ping", "shutdown",
       "criu_status", "checkpoint", "restore", "cpuinfo_check")   # the last four: agent/checkpoint/launcher_ops.py


class LauncherError(Exception):
    """The launcher could not be reached or refused a request."""


class LaunchError(LauncherError):
    """A container could not be started; str() is one line saying why
    (e.g. "exec /bin/nope: No such file or directory")."""


class LauncherGone(LauncherError, ConnectionError):
    """The connection to the launcher was lost."""


class ExitRecord(NamedTuple):
    id: str
    pid: int
    exit_code: int        # exit status, or 128+signal when killed (as Docker shows)
    signal: int | None    # the signal that killed it, None when it exited
    at: float             # wall-clock time of the reap


# error kind on the wire -> exception the client raises
ERROR_KINDS = {
    "LaunchError": LaunchError,
    "ProcessLookupError": ProcessLookupError,
    "BadRequest": ValueError,
    "LauncherError": LauncherError,
}


class WithFds(NamedTuple):
    """An op's result that goes out with descriptors (the response's "fds")."""
    result: object
    fds: list


def encode(obj: dict) -> bytes:
    """One message as its line on the wire."""
    return (json.dumps(obj) + "\n").encode()


def split_lines(buf: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines in `buf` (blank ones dropped) and the rest."""
    *lines, rest = buf.split(b"\n")
    return [ln for ln in lines if ln.strip()], rest


def ok(seq, result) -> dict:
    return {"seq": seq, "ok": True, "result": result}


def error(seq, kind: str, message: str) -> dict:
    return {"seq": seq, "ok": False, "type": kind, "error": message}


def raise_for(resp: dict):
    """The result of a response, or the exception its error kind maps to."""
    if resp.get("ok"):
        return resp.get("result")
    exc = ERROR_KINDS.get(resp.get("type"), LauncherError)
    raise exc(resp.get("error", "launcher error"))


def check_id(value) -> str:
    if not isinstance(value, str) or not ID_RE.match(value):
        raise ValueError("id: 1-128 characters [A-Za-z0-9_.-], starting with a letter or digit")
    return value
