"""agentctl's dispatch (the entry point agent.cli.main calls): parse the
command line, call the verb, and turn what went wrong into one line on
stderr and the exit status (agent/cli/errors.py lists them).

Starts fast: only argparse, json and the small socket client are imported
up front; runtime.limits (flag checks), the stats view and `usage` are
imported by the commands that need them.
"""
from __future__ import annotations

import os
import sys

from agent.cli.errors import EXEC_EXIT, EXIT_FAIL, EXIT_OK, EXIT_USAGE, UsageError
from agent.cli.format import print_json
from agent.cli.parser import SUBCOMMANDS, build_parser


def cmd_usage(args, client) -> int:
    from agent.cli import usage

    if args.json:  # the API's answer as one JSON document
        print_json(client.call("GET", "/v1/usage", usage.query_params(args)))
        return EXIT_OK
    rc = usage.run(args, client)
    return EXIT_OK if rc is None else rc


def cmd_budget(args, client) -> int:
    from agent.cli import budget

    return budget.run(args, client)


COMMANDS = {name: verb[3] for name, verb in SUBCOMMANDS.items()}
COMMANDS.update(usage=cmd_usage, budget=cmd_budget)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.json and args.command in SUBCOMMANDS and not SUBCOMMANDS[args.command][1]:
        print(f"agentctl: error: {args.command} has no --json output; --json is for the commands that read "
              "(ps, inspect, logs, stats, usage, ...)", file=sys.stderr)
        return EXIT_USAGE
    from agent.cli.client import ApiError, Client, ConnectError, ProtocolError
    from agent.cli.format import FormatError

    try:
        # dial-stdio is the remote end of --host: always this host's socket
        local = args.command == "system" and args.system_command == "dial-stdio"
        client = Client(args.socket, host=None if local else args.host) if not local else None
        return COMMANDS[args.command](args, client)
    except (UsageError, FormatError) as e:
        print(f"agentctl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as e:
        if e.status == 403:
            print(f"agentctl: {e.message}" if e.message.startswith("permission denied")
                  else f"agentctl: permission denied: {e.message}", file=sys.stderr)
            return EXIT_FAIL
        print(f"agentctl: error: {e.message}", file=sys.stderr)
        if e.reason in EXEC_EXIT:  # as shells and docker run do
            return EXEC_EXIT[e.reason]
        return EXIT_USAGE if e.status == 400 else EXIT_FAIL
    except (ConnectError, ProtocolError) as e:
        print(f"agentctl: {e}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # agentctl ps | head
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
