"""Shell completion: static scripts generated from agentctl's parser (shtab), kept in sync."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from agent.cli import completion

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIR = os.path.join(ROOT, "deploy", "completion")


def test_committed_scripts_match_the_parser():
    for name, text in completion.scripts().items():
        with open(os.path.join(DIR, name)) as f:
            assert f.read() == text, f"deploy/completion/{name} is stale: run python3 -m agent.cli.completion deploy/completion"


def _complete_bash(*words: str) -> list[str]:
    script = (f"source {os.path.join(DIR, 'agentctl.bash')}\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              f"COMP_LINE='{' '.join(words)}'; COMP_POINT=${{#COMP_LINE}}\n"
              "_shtab_agentctl agentctl; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True, check=True)
    return r.stdout.split()


def test_bash_completes_subcommands_and_flags():
    assert {"ps", "pause"} <= set(_complete_bash("agentctl", "p"))
    assert {"start", "stats", "stop"} <= set(_complete_bash("agentctl", "st"))
    assert {"--memory", "--memory-swap", "--memory-reservation"} <= set(_complete_bash("agentctl", "run", "--mem"))
    assert "--tail" in _complete_bash("agentctl", "logs", "--t")


def test_zsh_completes_subcommands():
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh not installed (scripts/setup.sh installs it)")
    subprocess.run([zsh, "-n", os.path.join(DIR, "_agentctl")], check=True)
    # the script defines its completion function and the subcommand list names the new verbs
    r = subprocess.run([zsh, "-fc", f"autoload -Uz compinit; compinit -u; source {os.path.join(DIR, '_agentctl')}; "
                        "whence -w _shtab_agentctl"], capture_output=True, text=True)
    assert "function" in r.stdout, (r.stdout, r.stderr)


def test_agentctl_does_not_import_the_completion_module():
    code = "import sys\nimport agent.cli.dispatch\nprint('shtab' in sys.modules, 'agent.cli.completion' in sys.modules)"
    import sys
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
