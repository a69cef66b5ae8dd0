"""The daemon side of agent/: agentd's process and what only it uses.

    agent/daemon/agentd.py     start-up, the cgroup root, signals, reload, shutdown
    agent/daemon/statedir.py   one agentd per state dir (lock) and its permissions
    agent/daemon/logsetup.py   structlog: JSON lines off a terminal, key=value on one; live level
    agent/daemon/sdnotify.py   systemd's notify protocol (READY, STATUS, watchdog)

The control API the daemon serves is agent/api/; the parts it puts together
(supervisor, collector, ledger, launcher, images, networks) are agent/'s own.

``main`` is agentd's entry point (pyproject's ``agentd = "agent.daemon:main"``
and ``python3 -m agent.daemon``); it imports the daemon only when called, so
that importing one of the small modules here loads nothing else.
"""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from agent.daemon.agentd import main as run
    return run(argv)
