"""Static bash and zsh completion for agentctl, generated from its parser by shtab.

    python3 -m agent.cli.completion DIR      writes DIR/agentctl.bash and DIR/_agentctl (zsh)

agentctl never imports this module or shtab, so completion costs its start-up
nothing: the scripts are generated at build/test time into deploy/completion/
(a unit test regenerates them and fails if the committed ones differ from the
parser). Install:

    bash: cp deploy/completion/agentctl.bash /etc/bash_completion.d/agentctl
    zsh:  cp deploy/completion/_agentctl /usr/local/share/zsh/site-functions/_agentctl
"""
from __future__ import annotations

import os
import sys

FILES = {"bash": "agentctl.bash", "zsh": "_agentctl"}


def scripts() -> dict[str, str]:
    """{file name: script} for every shell, from agentctl's full parser."""
    import shtab

    from agent.cli.parser import build_parser

    parser = build_parser([], full=True)
    return {name: shtab.complete(parser, shell=shell) for shell, name in FILES.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python3 -m agent.cli.completion DIR", file=sys.stderr)
        return 2
    os.makedirs(argv[0], exist_ok=True)
    for name, text in scripts().items():
        with open(os.path.join(argv[0], name), "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
