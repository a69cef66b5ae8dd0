"""agentctl's Docker habits without an agent: parser, help texts, templates, filters, times."""
from __future__ import annotations

import argparse
import io
import json
import re

import pytest

from agent.cli import containers, stats_view
from agent.cli import format as cli_format
from agent.cli.format import table
from agent.cli.limit_flags import limits_body
from agent.cli import main
from agent.cli.dispatch import COMMANDS
from agent.cli.parser import build_parser
from agent.logtail import start_of_last_lines


def run_cli(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _walk(parser, path):
    yield path, parser
    sub = _subparsers(parser)
    if sub is not None:
        for name, p in sub.choices.items():
            yield from _walk(p, path + [name])


def test_every_subcommand_and_flag_has_help_text():
    sub = _subparsers(build_parser([]))
    helped = {a.dest for a in sub._choices_actions if a.help}
    assert set(sub.choices) == helped, set(sub.choices) - helped
    parsers = list(_walk(build_parser([]), ["agentctl"]))
    parsers += list(_walk(build_parser(["usage"]), ["agentctl"]))   # usage is built only when named
    checked = 0
    for path, p in parsers:
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = " ".join(path) + " " + (action.option_strings[0] if action.option_strings else action.dest)
            assert action.help and action.help.strip(), f"{what}: no help text"
            checked += 1
    assert checked > 80


@pytest.mark.parametrize("argv", [["ps", "--socket", "/tmp/s.sock", "--json"], ["--socket", "/tmp/s.sock", "ps", "--json"],
                                  ["--json", "--socket", "/tmp/s.sock", "ps"], ["--json", "ps", "--socket", "/tmp/s.sock"]])
def test_global_options_before_or_after_the_subcommand(argv):
    args = build_parser(argv).parse_args(argv)
    assert args.socket == "/tmp/s.sock" and args.json is True and args.command == "ps"


def test_a_global_option_given_only_before_keeps_its_value():
    args = build_parser(["--socket", "/a", "inspect", "x"]).parse_args(["--socket", "/a", "inspect", "x"])
    assert args.socket == "/a" and args.json is False


def test_docker_verbs_exist():
    sub = _subparsers(build_parser([]))
    for name in ("start", "restart", "wait", "pause", "unpause", "update"):
        assert name in sub.choices
    args = build_parser(["restart"]).parse_args(["restart", "-t", "3", "web"])
    assert args.time == 3.0 and args.name == "web"
    assert COMMANDS["pause"] is containers.cmd_freeze and COMMANDS["update"] is containers.cmd_limit


def _limits(argv):
    return limits_body(build_parser(["run"]).parse_args(["run", *argv, "--", "true"]))


def test_docker_limit_flags_keep_dockers_meaning():
    assert _limits(["--memory", "512M", "--memory-swap", "1G"]) == {"memory": "512M", "memory_swap": str(512 << 20)}
    assert _limits(["--memory", "512M", "--memory-swap", "512M"])["memory_swap"] == "0"     # no swap
    assert _limits(["--memory", "512M", "--memory-swap", "-1"])["memory_swap"] == "max"    # unlimited swap
    assert _limits(["--swap", "100M"]) == {"memory_swap": "100M"}                           # ours: swap alone
    assert _limits(["--pids-limit", "-1"]) == {"pids": "max"}
    assert _limits(["--pids-limit", "50"]) == {"pids": "50"}
    assert _limits(["--cpu-shares", "1024"]) == {"cpu_weight": 39}   # Docker's cgroup v2 conversion
    assert _limits(["--cpuset-cpus", "0"]) == {"cpuset": "0"}
    assert _limits(["--memory-reservation", "64M"]) == {"memory_low": "64M"}
    assert _limits(["-m", "1G"]) == {"memory": "1G"}
    assert _limits(["--blkio-weight", "500"]) == {"io_weight": 1 + 490 * 9999 // 990}


@pytest.mark.parametrize("argv,word", [
    (["run", "--memory-swap", "1G", "--", "true"], "--memory"),
    (["run", "--memory", "1G", "--memory-swap", "512M", "--", "true"], "--memory-swap"),
    (["run", "--cpu-shares", "1", "--", "true"], "--cpu-shares"),
    (["run", "--pids-limit", "lots", "--", "true"], "--pids-limit"),
    (["run", "-i", "-d", "--", "cat"], "-d"),
    (["logs", "--since", "yesterday-ish", "web"], "--since"),
    (["logs", "--tail", "many", "web"], "--tail"),
    (["ps", "--filter", "colour=red"], "--filter"),
    (["ps", "--filter", "status=sleeping"], "status"),
    (["ps", "--format", "{{range .}}"], "--format"),
    (["--json", "run", "--", "true"], "--json"),
])
def test_refusals_are_one_line_and_exit_2(argv, word, capsys, monkeypatch):
    monkeypatch.setenv("AGENT_SOCKET", "/nonexistent/agent.sock")  # refused before connecting
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2 and err.count("\n") == 1 and word in err, err
    assert "cannot connect" not in err


def test_rfc3339():
    assert cli_format.rfc3339(0) == "1970-01-01T00:00:00Z"
    assert cli_format.rfc3339(1764747387.25) == "2025-12-03T07:36:27Z"
    doc = cli_format.with_rfc3339({"created_at": 1764747387.25, "started_at": None, "pid": 5,
                                  "nested": [{"taken_at": 1764747387}]})
    assert doc == {"created_at": "2025-12-03T07:36:27.250000Z", "started_at": None, "pid": 5,
                   "nested": [{"taken_at": "2025-12-03T07:36:27Z"}]}


ITEMS = [{"name": "web", "id": "abc123", "state": "running", "labels": {"team": "blue"}, "created_at": "T1", "pid": 7},
         {"name": "db", "id": "def456", "state": "exited", "labels": {}, "created_at": "T2", "pid": None}]


def test_templates():
    t = cli_format.Template("{{.Name}}\\t{{ .State }} {{.Labels.team}} {{.CreatedAt}} {{.Pid}}")
    assert t.render(ITEMS[0]) == "web\trunning blue T1 7"
    assert t.render(ITEMS[1]) == "db\texited <no value> T2 <no value>"
    assert cli_format.Template("{{json .Labels}}").render(ITEMS[0]) == '{"team": "blue"}'
    assert json.loads(cli_format.Template("{{json .}}").render(ITEMS[1]))["name"] == "db"
    with pytest.raises(cli_format.FormatError, match="no field .Colour"):
        cli_format.Template("{{.Colour}}").render(ITEMS[0])
    with pytest.raises(cli_format.FormatError):
        cli_format.Template("{{if .Name}}x{{end}}")
    out = cli_format.render("table {{.Name}} {{.CreatedAt}}", ITEMS, lambda: "", table)
    assert out.splitlines() == ["NAME  CREATED AT", "web   T1", "db    T2"]
    lines = cli_format.render("json", ITEMS, lambda: "", table).splitlines()
    assert [json.loads(x)["name"] for x in lines] == ["web", "db"]


def test_filters_follow_dockers_rules():
    f = cli_format.parse_filters(["name=we", "status=running"])
    assert [c["name"] for c in ITEMS if cli_format.matches(f, c)] == ["web"]
    f = cli_format.parse_filters(["status=running", "status=exited"])          # same key: either
    assert len([c for c in ITEMS if cli_format.matches(f, c)]) == 2
    assert [c["name"] for c in ITEMS if cli_format.matches(cli_format.parse_filters(["label=team"]), c)] == ["web"]
    assert not [c for c in ITEMS if cli_format.matches(cli_format.parse_filters(["label=team=red"]), c)]
    assert [c["name"] for c in ITEMS if cli_format.matches(cli_format.parse_filters(["id=def"]), c)] == ["db"]


@pytest.mark.parametrize("content,n,expect", [
    (b"a\nb\nc\n", 2, b"b\nc\n"), (b"a\nb\nc", 2, b"b\nc"), (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
    (b"a\nb\nc\n", 0, b""), (b"", 3, b""), (b"\n\n\n", 1, b"\n"), (b"x" * 200000 + b"\nlast\n", 1, b"last\n"),
])
def test_start_of_last_lines(tmp_path, content, n, expect):
    p = tmp_path / "log"
    p.write_bytes(content)
    with open(p, "rb") as f:
        f.seek(start_of_last_lines(f, n))
        assert f.read() == expect


class _Out(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _stats_answers():
    row = {"name": "web", "id": "abc", "state": "running", "cpu_usage_usec": 0}
    n = iter(range(1, 1000))
    return lambda: {"taken_at": float(next(n)), "containers": [dict(row)]}


@pytest.mark.parametrize("tty", [True, False])
def test_stats_redraws_on_a_terminal_and_prints_a_table_per_tick_when_piped(tty):
    out, ticks = _Out(tty), []

    def sleep(_):
        ticks.append(1)
        if len(ticks) > 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stats_view.run(_stats_answers(), stream=True, as_json=False, out=out, sleep=sleep)
    text = out.getvalue()
    assert text.count("NAME") == 3
    if tty:
        assert text.count("\x1b[H\x1b[J") == 3 and text.startswith("\x1b[H\x1b[J")
    else:
        assert "\x1b" not in text and text.count("\n\n") == 3


def test_docs_cli_pairs_every_subcommand_and_flag():
    """docs/cli.md names every agentctl subcommand and every flag of run (limits included)."""
    import os

    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "cli.md")).read()
    sub = _subparsers(build_parser([]))
    for name in sub.choices:
        if name not in ("freeze", "thaw"):  # named as the twins of pause/unpause
            assert f"`{name}" in doc, f"docs/cli.md does not pair agentctl {name}"
    for parser_name in ("run", "ps", "logs", "stats", "stop", "restart", "kill", "rm", "inspect"):
        p = _subparsers(build_parser([parser_name])).choices[parser_name]
        for action in p._actions:
            opts = [o for o in action.option_strings if o not in ("-h", "--help", "--socket", "--json")]
            if opts:
                assert any(re.search(re.escape(o) + r"\b", doc) for o in opts), \
                    f"docs/cli.md does not mention agentctl {parser_name} {'/'.join(opts)}"
