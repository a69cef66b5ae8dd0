"""agentctl's argparse pieces: the parser class with one-line errors and the
flag value checks (argparse ``type=`` callables: a ValueError-like refusal
becomes exit 2 with one line naming the flag and what it accepts).

The rules behind the checks are defined once elsewhere (agent/rules.py,
runtime/, agent/spec.py) and imported here, those of runtime/ only by the
check that needs them (agentctl's start-up stays light).
"""
from __future__ import annotations

import argparse
import os

from agent.cli.errors import EXIT_USAGE
from agent.rules import NAME_RE, RESTART_RE  # pure: re only

JSON_HELP = "print one JSON document instead of text (times in RFC 3339 UTC)"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a container name; use [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,62}} (no / and no ..)")
    return value


def pair(what: str):
    def check(value: str) -> str:
        key, sep, _ = value.partition("=")
        if not key or "\n" in value or "\0" in value:
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}; use KEY=VALUE")
        if not sep:
            if what == "an environment variable":  # -e NAME takes NAME from this environment, as docker does
                if key not in os.environ:
                    raise argparse.ArgumentTypeError(f"{key!r} has no =VALUE and is not set here; use KEY=VALUE")
                return f"{key}={os.environ[key]}"
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}; use KEY=VALUE")
        return value

    check.__name__ = what
    return check


def capability(value: str) -> str:
    from runtime.caps import CapabilityError, normalize_changes
    try:
        return normalize_changes([value], "capability")[0]
    except CapabilityError as e:
        raise argparse.ArgumentTypeError(str(e).replace("capability[0]: ", "")) from None


def volume(value: str) -> str:
    parts = value.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1] or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise argparse.ArgumentTypeError(f"{value!r} is not a volume; use SRC:DST or SRC:DST:ro")
    if not parts[1].startswith("/"):
        raise argparse.ArgumentTypeError(f"{value!r}: the destination must be an absolute path inside the container")
    if not parts[0].startswith("/"):  # relative host paths are relative to where agentctl runs, not agentd
        parts[0] = os.path.abspath(parts[0])
    return ":".join(parts)


def device(value: str) -> str:
    from agent.spec import split_device  # Docker's syntax, parsed in one place
    try:
        split_device(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def tmpfs(value: str) -> str:
    from runtime.tmpfs import TmpfsError, parse  # Docker's syntax, parsed in one place
    try:
        parse(value, "--tmpfs")
    except TmpfsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


def restart(value: str) -> str:
    if not RESTART_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a restart policy; use no, always, on-failure or on-failure:N")
    return value


def seconds(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not (0 <= f <= 86400 * 365):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds >= 0")
    return f


def signal_name(value: str) -> str:
    from runtime.rules import signal_number  # the one signal rule (the daemon checks it again)

    try:
        signal_number(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    text = value.strip()
    if text.isdigit():
        return text
    upper = text.upper()
    return upper[3:] if upper.startswith("SIG") else upper


def directory(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return os.path.abspath(value)


def tail(value: str):
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of lines; use N >= 0 or all")
    return int(value)
