"""The two errors of agentctl's side that more than one module raises: a
leaf module, so that the CLI's verb modules and the client's transports
import them without importing agent.cli or agent.client (no cycle)."""
from __future__ import annotations


class UsageError(Exception):
    """Bad usage found after argparse (exit 2)."""


class ConnectError(Exception):
    """The control socket could not be reached (agentd not running, no permission, ...)."""
