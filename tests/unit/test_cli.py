"""agentctl argument parsing, error lines and exit statuses (no agent needed).

Every malformed flag must end agentctl with exit status 2 and exactly one
line on stderr that names the flag; valid values must pass through to the
request body unchanged.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent.cli import stats_view
from agent.cli.errors import exit_status
from agent.cli.limit_flags import limits_body
from agent.cli import main
from agent.cli.parser import SUBCOMMANDS, build_parser
from agent.cli.run import attach
from agent.cli.client import FRAME_HEADER, ProtocolError, error_message, iter_frames


def run_cli(argv, capsys):
    """main(argv) -> (exit status, stdout, stderr); argparse's SystemExit included."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


MALFORMED = [
    (["run", "--memory", "12Q", "--", "true"], "--memory"),
    (["run", "--memory", "-1", "--", "true"], "--memory"),
    (["run", "--memory-high", "lots", "--", "true"], "--memory-high"),
    (["run", "--memory-low", "1X", "--", "true"], "--memory-low"),
    (["run", "--memory-swap", "abc", "--", "true"], "--memory-swap"),
    (["run", "--cpus", "abc", "--", "true"], "--cpus"),
    (["run", "--cpus", "-1", "--", "true"], "--cpus"),
    (["run", "--cpu-weight", "0", "--", "true"], "--cpu-weight"),
    (["run", "--cpu-weight", "10001", "--", "true"], "--cpu-weight"),
    (["run", "--cpuset", "x-y", "--", "true"], "--cpuset"),
    (["run", "--pids", "0", "--", "true"], "--pids"),
    (["run", "--pids", "many", "--", "true"], "--pids"),
    (["run", "--io-weight", "0", "--", "true"], "--io-weight"),
    (["run", "--io-max", "bogus", "--", "true"], "--io-max"),
    (["run", "--io-max", "8:0:rbps=fast", "--", "true"], "--io-max"),
    (["run", "--restart", "sometimes", "--", "true"], "--restart"),
    (["run", "--restart", "on-failure:x", "--", "true"], "--restart"),
    (["run", "--label", "novalue", "--", "true"], "--label"),
    (["run", "--env", "=x", "--", "true"], "--env"),
    (["run", "--env", "CGA_SURELY_UNSET_VARIABLE", "--", "true"], "--env"),
    (["run", "-v", "onlyone", "--", "true"], "--volume"),
    (["run", "-v", "/a:relative", "--", "true"], "--volume"),
    (["run", "-v", "/a:/b:rx", "--", "true"], "--volume"),
    (["run", "--network", "bad/name", "--", "true"], "--network"),
    (["run", "--userns", "private", "--", "true"], "--userns"),
    (["run", "--name", "a/b", "--", "true"], "--name"),
    (["run", "--name", "..", "--", "true"], "--name"),
    (["run", "--name", "../../etc", "--", "true"], "--name"),
    (["run", "--name", "x" * 64, "--", "true"], "--name"),
    (["run", "--rootfs", "/r", "--bundle", "/b", "--", "true"], "--bundle"),
    (["run", "--no-such-flag", "--", "true"], "--no-such-flag"),
    (["stop", "-t", "-1", "web"], "-t"),
    (["stop", "-t", "soon", "web"], "-t"),
    (["kill", "-s", "FOO", "web"], "-s"),
    (["kill", "-s", "0", "web"], "-s"),
    (["kill", "-s", "99", "web"], "-s"),
    (["limit", "web", "--memory", "1.5.5G"], "--memory"),
    (["limit", "web", "--cpus", "0"], "--cpus"),
    (["limit", "web", "--pids", "-3"], "--pids"),
    (["stop"], "NAME"),
    (["inspect"], "NAME"),
    (["bogus-command"], "bogus-command"),
]


@pytest.mark.parametrize("argv,flag", MALFORMED, ids=[" ".join(a)[:60] for a, _ in MALFORMED])
def test_malformed_flag_exits_2_with_one_line_naming_it(argv, flag, capsys, monkeypatch):
    monkeypatch.setenv("AGENT_SOCKET", "/nonexistent/agent.sock")  # nothing may be sent anyway
    rc, out, err = run_cli(argv, capsys)
    assert rc == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert flag in lines[0]


def test_run_without_command_is_bad_usage_before_any_connection(capsys, monkeypatch):
    monkeypatch.setenv("AGENT_SOCKET", "/nonexistent/agent.sock")
    rc, out, err = run_cli(["run", "--name", "web"], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and "command" in err


def test_valid_values_reach_the_request_body_unchanged():
    args = build_parser([]).parse_args([
        "run", "-d", "--rm", "--name", "web.1", "--memory", "512M", "--memory-high", "400M", "--swap", "0",
        "--cpus", "1.5", "--cpu-weight", "200", "--cpuset", "0-1", "--pids", "64", "--io-weight", "50",
        "--io-max", "8:0:rbps=10M,wiops=100", "--io-max", "8:16 wbps=1M", "--restart", "on-failure:3",
        "--label", "team=a", "--env", "A=1=2", "-v", "/srv:/data:ro", "--network", "none", "--user", "1000:1000",
        "--workdir", "/tmp", "--hostname", "h", "--", "sh", "-c", "echo hi --"])
    assert args.detach and args.rm and args.name == "web.1"
    assert limits_body(args) == {
        "memory": "512M", "memory_high": "400M", "memory_swap": "0", "cpus": "1.5", "cpu_weight": "200",
        "cpuset": "0-1", "pids": "64", "io_weight": "50", "io_max": ["8:0:rbps=10M,wiops=100", "8:16 wbps=1M"]}
    assert args.argv == ["--", "sh", "-c", "echo hi --"]
    assert args.env == ["A=1=2"] and args.label == ["team=a"] and args.volume == ["/srv:/data:ro"]
    assert args.restart == "on-failure:3" and args.network == "none"


def test_env_without_value_is_taken_from_this_environment(monkeypatch):
    monkeypatch.setenv("CGA_TEST_VALUE", "from-here")
    args = build_parser([]).parse_args(["run", "-e", "CGA_TEST_VALUE", "--", "true"])
    assert args.env == ["CGA_TEST_VALUE=from-here"]


def test_relative_volume_source_is_made_absolute_here():
    args = build_parser([]).parse_args(["run", "-v", "data:/data", "--", "true"])
    assert args.volume == [os.path.abspath("data") + ":/data"]


@pytest.mark.parametrize("value,sent", [("KILL", "KILL"), ("sigterm", "TERM"), ("hup", "HUP"), ("9", "9"), ("64", "64")])
def test_signals_by_name_or_number(value, sent):
    assert build_parser([]).parse_args(["kill", "-s", value, "web"]).signal == sent


def test_unreachable_socket_is_a_failure_with_one_line(capsys, tmp_path):
    rc, out, err = run_cli(["--socket", str(tmp_path / "none.sock"), "ps"], capsys)
    assert rc == 1
    assert err.count("\n") == 1 and "cannot connect" in err and "none.sock" in err


def test_agent_socket_environment_variable_is_used(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_SOCKET", str(tmp_path / "env.sock"))
    rc, out, err = run_cli(["ps"], capsys)
    assert rc == 1 and "env.sock" in err


@pytest.mark.parametrize("event,status", [
    ({"exit_code": 0, "exit_signal": None}, 0),
    ({"exit_code": 3, "exit_signal": None}, 3),
    ({"exit_code": None, "exit_signal": 9}, 137),
    ({"exit_code": None, "exit_signal": 15}, 143),
    ({"exit_code": None, "exit_signal": None}, 1),
])
def test_run_exit_status_follows_docker(event, status):
    assert exit_status(event) == status


def test_attached_run_returns_only_at_the_end_of_the_stream(capsys):
    """With --rm, agentd removes the container after the exited event and before
    it ends the stream: run must read to the end, so that once it returns the
    container is gone."""
    seen = []

    def frames():
        yield 1, b"out\n"
        yield 3, json.dumps({"event": "exited", "exit_code": 4, "exit_signal": None}).encode()
        seen.append("removal done, stream ended")

    assert attach(None, "web", frames()) == 4
    assert seen == ["removal done, stream ended"]
    assert capsys.readouterr().out == "out\n"


def test_only_the_named_subcommand_is_built():
    """agentctl starts faster building one subcommand's parser; --help lists them all."""
    def subs(parser):
        action = next(a for a in parser._actions if a.dest == "command")
        return action.choices

    ps_only = subs(build_parser(["--socket", "/s", "ps", "-a"]))
    assert "-a" in ps_only["ps"]._option_string_actions
    assert ps_only["run"]._option_string_actions == {}          # a stub: name and help only
    everything = subs(build_parser([]))
    assert set(everything) == set(ps_only) == set(SUBCOMMANDS) | {"usage", "budget"}
    assert "--memory" in everything["run"]._option_string_actions


def test_help_lists_every_command(capsys):
    rc, out, err = run_cli(["--help"], capsys)
    assert rc == 0
    for name in ("run", "ps", "inspect", "logs", "stop", "kill", "rm", "limit", "freeze", "thaw", "stats"):
        assert f"    {name} " in out


def test_every_read_command_has_json():
    parser = build_parser([])
    for argv in (["ps"], ["inspect", "x"], ["logs", "x"], ["stats"], ["limit", "x"]):
        assert parser.parse_args(argv + ["--json"]).json is True


def test_starting_imports_nothing_heavy():
    """agentctl --help must not load the daemon's dependencies (fast start)."""
    code = ("import sys\nfrom agent.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = {'structlog', 'prometheus_client', 'sqlite3', '_sqlite3', 'http.client', 'ssl', 'psutil',"
            " 'pyinotify', 'agent.api', 'agent.supervisor', 'runtime.limits', 'decimal'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# -- client framing -----------------------------------------------------------


def _frame(stream, data):
    return FRAME_HEADER.pack(stream, len(data)) + data


def test_frames_are_reassembled_across_chunk_boundaries():
    raw = _frame(1, b"hello ") + _frame(2, b"oops\n") + _frame(3, b'{"event":"exited"}') + _frame(1, b"")
    chunks = [raw[i:i + 3] for i in range(0, len(raw), 3)]
    assert list(iter_frames(iter(chunks))) == [(1, b"hello "), (2, b"oops\n"), (3, b'{"event":"exited"}'), (1, b"")]


def test_a_stream_cut_inside_a_frame_is_an_error():
    with pytest.raises(ProtocolError):
        list(iter_frames(iter([_frame(1, b"hello")[:-2]])))


def test_error_message_prefers_the_json_error_line():
    assert error_message(404, json.dumps({"error": "name: no container named 'x'"}).encode()) == "name: no container named 'x'"
    assert error_message(502, b"<html>\nbad gateway</html>") == "<html>"
    assert error_message(500, b"") == "HTTP status 500"


# -- stats view -----------------------------------------------------------------


def _row(**kw):
    base = {"name": "web", "id": "abc", "state": "running", "cpu_usage_usec": 0, "cpu_nr_periods": 0,
            "cpu_nr_throttled": 0, "memory_current": 100 << 20, "memory_limit": 200 << 20, "io_read_bytes": 0,
            "io_write_bytes": 0, "pids_current": 3, "pids_limit": 10, "cpu_limit": 0.5}
    base.update(kw)
    return base


def test_stats_rates_come_from_two_snapshots():
    prev = {"taken_at": 100.0, "containers": [_row()]}
    cur = {"taken_at": 102.0, "containers": [_row(cpu_usage_usec=1_000_000, io_read_bytes=4096, io_write_bytes=2048,
                                                  cpu_nr_periods=20, cpu_nr_throttled=5)]}
    (r,) = stats_view.rows(prev, cur)
    assert r.cpu_percent == pytest.approx(50.0)  # 1 s of CPU in 2 s
    assert r.io_read_rate == pytest.approx(2048) and r.io_write_rate == pytest.approx(1024)
    assert r.memory_percent == pytest.approx(50.0)
    assert r.throttled_percent == pytest.approx(25.0)
    text = stats_view.render([r])
    assert text.splitlines()[0].split()[:3] == ["NAME", "STATE", "CPU"]
    assert "50.0%" in text and "100.0MiB / 200.0MiB" in text and "3 / 10" in text and "2.0KiB/s" in text


def test_stats_counter_reset_and_first_sight_show_no_rate():
    prev = {"taken_at": 100.0, "containers": [_row(cpu_usage_usec=5_000_000)]}
    cur = {"taken_at": 101.0, "containers": [_row(cpu_usage_usec=10), _row(id="new", name="other")]}
    reset, new = stats_view.rows(prev, cur)
    assert reset.cpu_percent is None and new.cpu_percent is None
    assert "-" in stats_view.render([reset, new]).splitlines()[1].split()


def test_stats_no_stream_prints_once_after_a_second_sample():
    answers = iter([{"taken_at": 1.0, "containers": [_row()]}, {"taken_at": 1.0, "containers": [_row()]},
                    {"taken_at": 2.0, "containers": [_row(cpu_usage_usec=250_000)]}])
    import io

    out = io.StringIO()
    assert stats_view.run(lambda: next(answers), stream=False, as_json=False, out=out, sleep=lambda s: None) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "25.0%" in lines[1]


@pytest.mark.parametrize("n,text", [(0, "0B"), (1023, "1023B"), (1024, "1.0KiB"), (1536 << 20, "1.5GiB"), (None, "-")])
def test_human_bytes(n, text):
    assert stats_view.human_bytes(n) == text


def test_userns_flag_reaches_the_request_body():
    args = build_parser([]).parse_args(["run", "--rootfs", "/", "--userns", "host", "--", "true"])
    assert args.userns == "host"
    assert build_parser([]).parse_args(["run", "--", "true"]).userns is None   # the agent's default
