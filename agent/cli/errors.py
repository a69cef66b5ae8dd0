"""agentctl's exit statuses and the two errors more than one module raises.

A leaf module: the CLI's verb modules and the client's transports import
it without importing the parser, the dispatch or the client (no cycle).

Exit status: 0 ok, 1 failure (the agent said no, the container failed, the
socket is unreachable), 2 bad usage (a malformed flag, found here or by the
server's 400). `run` without -d and `exec` exit with the container's (the
command's) exit code, 128 + signal number when a signal ended it, as
`docker run` does; when the program cannot be executed, 127 (not found) or
126 (not executable), as shells do.
"""
from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXEC_EXIT = {"exec_not_found": 127, "exec_not_executable": 126}  # the API error's "reason"


class UsageError(Exception):
    """Bad usage found after argparse (exit 2)."""


class ConnectError(Exception):
    """The control socket could not be reached (agentd not running, no permission, ...)."""


def exit_status(event: dict) -> int:
    """The exit status `run` returns for the container's final state (docker run's convention)."""
    if event.get("exit_code") is not None:
        return int(event["exit_code"])
    if event.get("exit_signal"):
        return 128 + int(event["exit_signal"])
    return EXIT_FAIL
