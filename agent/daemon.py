"""agentd: the cgroup-agent daemon (wired up in the containers issue)."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentd", description="cgroup-agent daemon: runs containers under cgroup v2 limits and accounts for their usage")
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: embedded defaults)")
    p.add_argument("--check", action="store_true", help="validate the config and exit (0 valid, 2 invalid)")
    p.add_argument("--state-dir", metavar="DIR")
    p.add_argument("--cgroup-root", metavar="PATH")
    p.add_argument("--socket", metavar="PATH")
    p.add_argument("--metrics-listen", metavar="HOST:PORT")
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
