"""agentctl attach: a running container's output from now on, here, until it
exits (Docker's `attach`).

    attach [--detach-keys SEQ] NAME      POST /v1/containers/NAME/attach

A container on a terminal (run -t) gets what is typed here (this terminal
raw meanwhile, its size passed on); the detach keys (default ctrl-p,ctrl-q)
leave it running. Signals are forwarded as by an attached run; exits with
its exit status.
"""
from __future__ import annotations

from agent.cli import detachkeys
from agent.cli import exec as exec_verb
from agent.cli.run import attach


def _build_attach(p) -> None:
    detachkeys.add_flag(p)
    p.add_argument("name", help="container name or id")


def cmd_attach(args, client) -> int:
    info = client.call("GET", f"/v1/containers/{args.name}")
    path = f"/v1/containers/{args.name}/attach"
    if info.get("tty"):
        frames = exec_verb.stream_with_input(client, "POST", path, None, True, True, args.detach_keys)
    else:
        frames = client.stream("POST", path)
    return attach(client, args.name, frames)


VERBS = {"attach": ("attach to a running container: its output from now on, its terminal's input (run -t)",
                    False, _build_attach, cmd_attach)}
