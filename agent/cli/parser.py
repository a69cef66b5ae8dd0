"""agentctl's argument parser: global options and one subparser per verb.

The verbs live in their modules (each has VERBS: name -> (help, has --json,
builder, command function)); VERB_MODULES lists them
in the order `agentctl --help` shows them. `usage` and `budget` are added
here: `usage` (the billing side) is imported only when named.

build_parser() builds in full only the subcommand the command line names
(argparse costs ~2 ms per subcommand, ~20 ms for all): the others get a
stub that lists their name and help. With no command named (agentctl
--help, tests), every one is built; full=True (shell completion) too.

Global options (--socket, --host, --json) are accepted before or after the
subcommand; --host ssh://... reaches another host's agent over OpenSSH
(agent/cli/ssh_transport.py).
"""
from __future__ import annotations

import argparse
import sys

from agent.cli import budget, checkpoint, containers, docker, images, network, ops, run, system
from agent.cli import attach
from agent.cli import exec as exec_verb
from agent.cli.flags import JSON_HELP, Parser

VERB_MODULES = (run, containers, images, network, docker, system, exec_verb, ops, checkpoint, attach)
SUBCOMMANDS = {name: verb for m in VERB_MODULES for name, verb in m.VERBS.items()}

USAGE_HELP = "billing usage records: totals, CSV, JSON lines, FOCUS (see agentctl usage --help)"
GLOBAL_VALUE_OPTIONS = ("--socket", "--host")
SOCKET_HELP = "control socket (default: $AGENT_SOCKET or /run/cgroup-agent/agent.sock)"
HOST_HELP = ("the agent of another host, over OpenSSH: ssh://[USER@]HOST[:PORT] (default: $AGENT_HOST, "
             "else this host's socket)")


def _command_in(argv: list[str]) -> str | None:
    """The subcommand word in argv (skipping global options), without parsing."""
    it = iter(argv)
    for a in it:
        if a in GLOBAL_VALUE_OPTIONS:
            next(it, None)
        elif a.startswith("-"):
            continue
        else:
            return a
    return None


def _add_global_options(sp, json_flag: bool) -> None:
    """Global options again after the subcommand (SUPPRESS: given only before, they keep their value)."""
    sp.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help=SOCKET_HELP)
    sp.add_argument("--host", metavar="URL", default=argparse.SUPPRESS, help=HOST_HELP)
    if json_flag:
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)


def build_parser(argv: list[str] | None = None, full: bool = False) -> Parser:
    """The parser for argv's subcommand (others are stubs); full=True builds every one (completion)."""
    p = Parser(prog="agentctl", description="Drive cgroup-agent (agentd) over its control socket.",
               epilog="Exit status: 0 ok, 1 failure, 2 bad usage. `run` without -d exits with the container's status; "
                      "127/126 when its program is not found / not executable.")
    p.add_argument("--socket", metavar="PATH", help=SOCKET_HELP)
    p.add_argument("--host", metavar="URL", help=HOST_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP + " (for the commands that read)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    chosen = _command_in(sys.argv[1:] if argv is None else argv)
    build_all = full or (chosen not in SUBCOMMANDS and chosen != "usage")
    for name, (help_text, json_flag, build, _command) in SUBCOMMANDS.items():
        if not build_all and name != chosen:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        sp = sub.add_parser(name, help=help_text, description=help_text)
        _add_global_options(sp, json_flag)
        build(sp)
    # `usage` belongs to the billing side (agent/cli/usage.py): imported only when named.
    if chosen == "usage" or full:
        from agent.cli import usage

        _add_global_options(usage.add_parser(sub), True)
    else:
        sub.add_parser("usage", help=USAGE_HELP, add_help=False)
    if chosen == "budget":
        budget.add_parser(sub)
    else:
        sub.add_parser("budget", help=budget.HELP, add_help=False)
    return p
