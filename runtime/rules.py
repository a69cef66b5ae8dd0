"""Rules the runtime and the agent share, each written once here.

Pure: imports only the standard library's re and signal (agentctl loads it
at start-up to check flags).

- ``HOSTNAME_RE`` / ``valid_hostname``: a host name as RFC 1123 has it
  (dot-separated labels of letters, digits and inner hyphens, each 1-63
  characters), at most ``HOSTNAME_MAX`` (64, the kernel's limit for
  sethostname) in all. The agent checks what users type with it and the
  launcher checks the spawn spec with it again.
- ``DEFAULT_PATH``: the PATH a container gets when its spec sets none, and
  the one the launcher searches for argv[0] then.
- ``signal_number``: a signal by name (KILL, SIGKILL, kill) or number, in
  1..SIGRTMAX (64 on Linux).
"""
from __future__ import annotations

import re
import signal as _signal

HOSTNAME_MAX = 64
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SIGNAL_MAX = int(_signal.SIGRTMAX)
SIGNAL_ACCEPTED = f"use a name like TERM, KILL, HUP or a number 1..{SIGNAL_MAX}"


def valid_hostname(value) -> bool:
    """True for an RFC 1123 host name of at most HOSTNAME_MAX characters."""
    return isinstance(value, str) and len(value) <= HOSTNAME_MAX and HOSTNAME_RE.fullmatch(value) is not None


def signal_number(value) -> int:
    """A signal by name or number (an int or its text) -> its number.

    ValueError("<value> is not a signal; use ...") otherwise (a bool, a
    number out of 1..SIGNAL_MAX, an unknown name).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= SIGNAL_MAX:
            return value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            if 1 <= int(text) <= SIGNAL_MAX:
                return int(text)
        else:
            name = text.upper()
            name = name if name.startswith("SIG") else "SIG" + name
            sig = getattr(_signal.Signals, name, None) if name.isidentifier() else None
            if isinstance(sig, _signal.Signals):
                return int(sig)
    raise ValueError(f"{value!r} is not a signal; {SIGNAL_ACCEPTED}")
