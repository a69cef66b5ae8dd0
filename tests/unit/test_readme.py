"""README.md describes only commands, flags and files that exist."""
from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def code_lines() -> list[str]:
    """Indented code lines of the README (4+ spaces), comments stripped."""
    out = []
    for line in README.splitlines():
        if line.startswith("    ") and line.strip():
            out.append(line.split("  #")[0].strip())
    return out


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def invocations(prog: str) -> list[list[str]]:
    """Every `prog ...` command in code lines (also after ; and &&)."""
    found = []
    for line in code_lines():
        for part in re.split(r";|&&|\|", line):
            words = shlex.split(part.replace("\\", ""), comments=False)
            if words and words[0] == prog:
                found.append(words[1:])
    return found


def flags_of(words: list[str]) -> list[str]:
    out = []
    for w in words:
        if w == "--":
            break
        if w.startswith("-") and w != "-":
            out.append(w.split("=")[0])
    return out


def test_the_two_setup_commands():
    # written for a root shell: a minimal Debian has no sudo
    assert "\n    ./scripts/run-demo.sh " in README and "\n    ./test.sh " in README
    assert "no" in README[README.index("From a root shell"):][:200] and "`sudo`" in README
    for path in ("scripts/run-demo.sh", "test.sh"):
        assert os.access(ROOT / path, os.X_OK), f"{path} is not executable"
    # CI runs exactly the README's test command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./test.sh" in ci


def test_agentctl_commands_and_flags_exist():
    from agent.cli.parser import build_parser

    seen = invocations("agentctl")
    assert len(seen) >= 10, "the agentctl tour went missing"
    for words in seen:
        while words and words[0].startswith("--socket"):
            words = words[2:] if words[0] == "--socket" else words[1:]
        # agentctl builds some subcommands' full parser only when asked for them
        subs = subparsers(build_parser(words[:1]))
        assert words and words[0] in subs, f"agentctl {words[:1]}: no such command"
        sub = subs[words[0]]
        nested = subparsers(sub)  # agentctl image load -i ...: flags belong to the nested command
        if nested and len(words) > 1 and words[1] in nested:
            sub, words = nested[words[1]], words[1:]
        for flag in flags_of(words[1:]):
            assert flag in sub._option_string_actions, f"agentctl {words[0]} {flag}: no such flag"


def test_every_agentctl_command_is_in_the_tour():
    from agent.cli.parser import build_parser

    shown = {w[0] for w in invocations("agentctl") if w}
    assert set(subparsers(build_parser([]))) <= shown


def test_run_flags_listed_exist():
    """The `run` flag list in prose names real flags."""
    from agent.cli.parser import build_parser

    run = subparsers(build_parser(["run"]))["run"]
    section = README[README.index("`run` flags:"):]
    section = section[:section.index("\n\n")]
    for flag in re.findall(r"`(-{1,2}[a-z][a-z-]*)", section):
        assert flag in run._option_string_actions, f"run {flag}: no such flag"


def test_agentd_flags_exist():
    from agent.daemon.agentd import build_parser

    opts = build_parser()._option_string_actions
    seen = invocations("agentd")
    assert seen
    for words in seen:
        for flag in flags_of(words):
            assert flag in opts, f"agentd {flag}: no such flag"


@pytest.mark.parametrize("target", sorted(set(re.findall(r"\]\(([^)#]+)\)", README))))
def test_links_resolve(target):
    assert (ROOT / target).exists(), f"README links to missing {target}"


@pytest.mark.parametrize("path", sorted(set(re.findall(r"\b(deploy/[\w.-]+|docs/[\w.-]+|scripts/[\w.-]+)", README))))
def test_files_named_exist(path):
    assert (ROOT / path).exists(), f"README names missing {path}"


def test_live_keys_in_readme_match_the_daemon():
    """The reload paragraph lists what changes live; the daemon decides."""
    from agent.daemon.agentd import LIVE_KEYS

    para = README[README.index("`systemctl reload cgroup-agent`"):]
    para = para[:para.index("\n\n")]
    for key in LIVE_KEYS:
        short = key.split(".", 1)[1]
        words = {"log_level": "log level", "socket_group": "groups", "read_group": "groups",
                 "admin_group": "groups", "stop_containers_on_exit": "stop settings",
                 "stop_timeout": "stop settings", "entries": "[budgets.NAME]"}.get(short, short)
        assert words in para or key in para, f"{key} changes live but the README does not say so"
