"""agentctl, the command-line client of agentd's control API (the CLI side).

Nothing here is imported by the daemon; the CLI imports of the rest of agent/
only the shared rules and wire pieces (agent/wire.py, agent/rules.py,
agent/errors.py, ...; tests/unit/test_import_graph.py keeps the list).

    dispatch.py       parse, call the verb, errors -> one line and the exit status
    parser.py         the argparse tree (only the named subcommand is built in full)
    flags.py          the parser class and the flag value checks
    limit_flags.py    limit flags of run/limit/update (ours and Docker's spellings)
    errors.py         exit statuses and the errors more than one module raises
    format.py         output: tables, JSON, RFC 3339 times, --format templates, ps --filter
    run.py            run (attached or detached)
    containers.py     ps, inspect, logs, stop, kill, rm, limit, freeze, thaw, stats
    docker.py         Docker's verbs: start, restart, wait, pause, unpause, update
    images.py, network.py, system.py, exec.py, ops.py, checkpoint.py, usage.py, budget.py
                      the other verb groups, one module each
    stats_view.py     the `stats` table
    client.py         the HTTP-over-Unix-socket client; ssh_transport.py for --host ssh://
    completion.py     bash/zsh completion scripts generated from the parser (shtab)

Kept light: importing this package imports nothing; main() (agentctl's
entry point) imports the parser and the verbs when called.
"""


def main(argv: list[str] | None = None) -> int:
    """agentctl: exit status of the command line ``argv`` (default: sys.argv[1:])."""
    from agent.cli.dispatch import main as run

    return run(argv)
