"""agentctl: command-line client of the agent's control API."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentctl", description="drive cgroup-agent over its control socket")
    p.add_argument("--socket", metavar="PATH", help="control socket (default: $AGENT_SOCKET or /run/cgroup-agent/agent.sock)")
    p.add_subparsers(dest="command", metavar="COMMAND")
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
