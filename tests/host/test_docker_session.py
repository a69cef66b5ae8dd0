"""A typical docker session replayed with agentctl in place of docker.

    docker run -d --name web ...; docker ps; docker logs --tail 3 web;
    docker stats --no-stream web; docker update --pids-limit 100 web;
    docker pause web; docker unpause web; docker stop web; docker start web;
    docker restart web; docker wait; docker rm web (refused: running); docker rm -f web

against a real agentd on this host (own state dir, socket and cgroup root).
Every call puts the global --socket AFTER the subcommand, as people type it.
The kernel is asked directly where it can answer (cgroup.freeze, the pid's
cgroup); docs/cli.md pairs each command with its Docker twin.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

from agent.cli.client import Client
from helpers import kill_tree, new_cgroup, start_agentd_with_flags, stop_agentd, wait_for
from runtime.cgroupfs import find_mount

AGENTCTL = [sys.executable, "-m", "agent.cli"]
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


@pytest.fixture(scope="module")
def agentd():
    root = new_cgroup(find_mount())
    top = tempfile.mkdtemp(prefix="cga-docker-")
    d = None
    try:
        d = start_agentd_with_flags(root, top)
        yield d
    finally:
        if d is not None:
            stop_agentd(d)
        kill_tree(root)
        shutil.rmtree(top, ignore_errors=True)


def ctl(d, cmd, *args, stdin=None, timeout=60):
    """agentctl CMD --socket SOCK ARGS...: the global option after the subcommand."""
    env = dict(os.environ)
    env.pop("AGENT_SOCKET", None)
    return subprocess.run([*AGENTCTL, cmd, "--socket", d.sock, *args], capture_output=True, text=True,
                          timeout=timeout, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          env=env)


def ok(r) -> str:
    assert r.returncode == 0, (r.args, r.returncode, r.stderr)
    return r.stdout


def inspect(d, name) -> dict:
    return json.loads(ok(ctl(d, "inspect", name)))


def freeze_file(d, info) -> str:
    with open(os.path.join(info["cgroup"], "cgroup.freeze")) as f:
        return f.read().strip()


def test_a_docker_session(agentd):
    d = agentd
    name = f"web-{uuid.uuid4().hex[:6]}"
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; done; exec sleep 600"
    # docker run -d --name web IMAGE CMD
    out = ok(ctl(d, "run", "-d", "--name", name, "--", "sh", "-c", script))
    first = inspect(d, name)
    assert out.strip() == first["id"] and first["state"] == "running"
    assert RFC3339.fullmatch(first["created_at"]) and RFC3339.fullmatch(first["started_at"])

    # docker ps / ps -q / ps --filter / --format
    assert name in ok(ctl(d, "ps")).split()
    assert name in ok(ctl(d, "ps", "-q")).split()
    assert ok(ctl(d, "ps", "--filter", f"name={name}", "--format", "{{.Name}} {{.State}}")) == f"{name} running\n"
    assert name not in ok(ctl(d, "ps", "--filter", "status=exited", "-q")).split()
    rows = [json.loads(x) for x in ok(ctl(d, "ps", "--filter", f"id={first['id']}", "--format", "json")).splitlines()]
    assert [r["name"] for r in rows] == [name] and RFC3339.fullmatch(rows[0]["created_at"])

    # docker logs --tail 3 web
    wait_for(lambda: "line 10" in ok(ctl(d, "logs", name)), what="the ten lines")
    assert ok(ctl(d, "logs", "--tail", "3", name)) == "line 8\nline 9\nline 10\n"
    assert ok(ctl(d, "logs", "-n", "0", name)) == ""
    doc = json.loads(ok(ctl(d, "logs", "--tail", "1", "--json", name)))
    assert doc == [{"stream": "stdout", "data": "line 10\n"}]

    # docker stats --no-stream web
    table = wait_for(lambda: (lambda r: r.stdout if r.returncode == 0 else None)(ctl(d, "stats", "--no-stream", name)),
                     what="a stats table")
    assert table.splitlines()[0].split()[:2] == ["NAME", "STATE"] and table.splitlines()[1].split()[0] == name
    stats = json.loads(ok(ctl(d, "stats", "--no-stream", "--json", name)))
    assert RFC3339.fullmatch(stats["taken_at"])

    # docker update --pids-limit 100 web: applied, or refused as a host limitation (exit 1)
    with open(os.path.join(d.root.path, "containers", "cgroup.subtree_control")) as f:
        has_pids = "pids" in f.read().split()
    r = ctl(d, "update", name, "--pids-limit", "100")
    if has_pids:
        assert r.returncode == 0 and inspect(d, name)["limits"]["pids_max"] == 100
    else:
        print("update: this host has no pids controller for containers; checking the refusal")
        assert r.returncode == 1 and "pids controller is" in r.stderr and r.stderr.count("\n") == 1

    # docker pause / unpause
    ok(ctl(d, "pause", name))
    info = inspect(d, name)
    assert info["state"] == "paused" and freeze_file(d, info) == "1"
    ok(ctl(d, "unpause", name))
    info = inspect(d, name)
    assert info["state"] == "running" and freeze_file(d, info) == "0"

    # docker stop / start / restart
    ok(ctl(d, "stop", "-t", "1", name))
    stopped = inspect(d, name)
    # sleep is its PID 1 and ignores SIGTERM: the grace period ends in cgroup.kill, after
    # which (on a 6.18 kernel) clone3 into this cgroup kills the child: start must still work
    assert stopped["state"] == "exited" and stopped["exit_signal"] == 9, stopped
    assert name not in ok(ctl(d, "ps", "-q")).split() and name in ok(ctl(d, "ps", "-a", "-q")).split()
    ok(ctl(d, "start", name))
    started = inspect(d, name)
    assert started["state"] == "running" and started["pid"] != first["pid"]
    ok(ctl(d, "restart", "-t", "1", name))
    again = inspect(d, name)
    assert again["state"] == "running" and again["pid"] not in (first["pid"], started["pid"])
    with open(f"/proc/{again['pid']}/cgroup") as f:  # the cgroup2 line, "0::/path"
        (v2,) = [line[3:].strip() for line in f if line.startswith("0::")]
    assert again["cgroup"].endswith(v2)
    assert ok(ctl(d, "inspect", "--format", "{{.State}} {{.Pid}}", name)) == f"running {again['pid']}\n"

    # docker rm web (running: refused, naming -f), then docker rm -f web
    r = ctl(d, "rm", name)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and f"rm -f {name}" in r.stderr, r.stderr
    assert inspect(d, name)["state"] == "running"
    ok(ctl(d, "rm", "-f", name))
    assert name not in ok(ctl(d, "ps", "-a", "-q")).split()


def test_wait_prints_the_exit_status(agentd):
    name = f"w-{uuid.uuid4().hex[:6]}"
    ok(ctl(agentd, "run", "-d", "--name", name, "--", "sh", "-c", "sleep 0.5; exit 3"))
    assert ok(ctl(agentd, "wait", name)) == "3\n"
    assert inspect(agentd, name)["state"] == "exited"
    assert json.loads(ok(ctl(agentd, "wait", "--json", name)))["exit_code"] == 3
    ok(ctl(agentd, "rm", name))


def test_run_without_a_name_gets_one(agentd):
    cid = ok(ctl(agentd, "run", "-d", "--", "sleep", "600")).strip()
    (row,) = [c for c in Client(agentd.sock).call("GET", "/v1/containers") if c["id"] == cid]
    assert row["name"]
    ok(ctl(agentd, "rm", "-f", row["name"]))


def test_run_i_forwards_stdin_and_its_end(agentd):
    r = ctl(agentd, "run", "--rm", "-i", "--", "cat", stdin="hi\n")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    data = "".join(f"line {i}\n" for i in range(20000))      # past a pipe's buffer
    r = ctl(agentd, "run", "--rm", "-i", "--", "sh", "-c", "wc -l; exit 4", stdin=data)
    assert (r.returncode, r.stdout.strip()) == (4, "20000"), r.stderr


def test_run_i_detached_is_refused_with_one_line_and_creates_nothing(agentd):
    before = {c["name"] for c in Client(agentd.sock).call("GET", "/v1/containers", {"all": "1"})}
    r = ctl(agentd, "run", "-d", "-i", "--", "cat", stdin="hi\n")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "-i" in r.stderr and r.stdout == ""
    assert {c["name"] for c in Client(agentd.sock).call("GET", "/v1/containers", {"all": "1"})} == before


def test_usage_json_is_one_document_or_a_clear_refusal(agentd):
    r = ctl(agentd, "usage", "--json")
    if r.returncode == 0:
        json.loads(r.stdout)
    else:  # an agent without a ledger says so in one line
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "usage" in r.stderr
