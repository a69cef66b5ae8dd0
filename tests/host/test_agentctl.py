"""agentctl against a real agentd, end to end, on this host's unified hierarchy.

Each agentd here has its own state dir, socket and cgroup root (a unique
cgroup from the `cgroup_factory` fixture, killed and removed afterwards);
metrics are off. agentctl runs as a separate process, as a user would run it.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid

import pytest

from agent.cli.client import Client
from helpers import kill_tree as _kill_tree
from helpers import agentd_in_own_cgroup
from helpers import AGENTCTL, ctl, names, one_line, start_agentd, stop_agentd, uname, wait_for

@pytest.fixture(scope="module")
def agentd(request):
    with agentd_in_own_cgroup("cga-ctl-") as d:
        yield d


def container_dirs(d) -> set[str]:
    top = os.path.join(d.root.path, "containers")
    return {n for n in os.listdir(top) if os.path.isdir(os.path.join(top, n))}


def inspect(d, name) -> dict:
    return Client(d.sock).call("GET", f"/v1/containers/{name}")


def running(d, name):
    return inspect(d, name)["state"] == "running"


# -- run, exit codes, output -----------------------------------------------------------


def test_run_exits_with_the_containers_code_and_keeps_stdout_and_stderr_apart(agentd):
    r = ctl(agentd, "run", "--name", uname(), "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert ctl(agentd, "run", "--", "/bin/true").returncode == 0


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("prog, code, why", [
    ("/nonexistent/prog", 127, "No such file or directory"),
    ("no-such-program-anywhere", 127, "not found in $PATH"),
    ("{tmp}/not-executable", 126, "Permission denied"),
    ("{tmp}/garbage", 126, "Exec format error"),
])
def test_a_program_that_cannot_run_exits_127_or_126_and_leaves_nothing(agentd, tmp_path, prog, code, why, detach):
    for f, mode in (("not-executable", 0o644), ("garbage", 0o755)):
        (tmp_path / f).write_bytes(b"\x00\x01 not a program\n")
        (tmp_path / f).chmod(mode)
    os.chmod(tmp_path, 0o755)
    argv = [prog.format(tmp=tmp_path)]
    name = uname()
    before = container_dirs(agentd)
    r = ctl(agentd, "run", *(["-d"] if detach else []), "--name", name, "--", *argv)
    assert r.returncode == code, (r.returncode, r.stderr)
    line = one_line(r)
    assert argv[0] in line and why in line, line
    assert name not in names(agentd)
    assert container_dirs(agentd) == before


def test_run_gets_its_own_pid_and_uts_namespace(agentd):
    r = ctl(agentd, "run", "--hostname", "inside", "--", "sh", "-c", "echo $$; hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "inside"]


def test_a_signal_ends_run_with_128_plus_the_signal(agentd):
    name = uname()
    p = subprocess.Popen([*AGENTCTL, "--socket", agentd.sock, "run", "--name", name, "--", "sleep", "600"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: name in names(agentd, all_=False), what="running")
        assert ctl(agentd, "kill", "-s", "KILL", name).returncode == 0
        assert p.wait(60) == 128 + signal.SIGKILL
        info = inspect(agentd, name)
        assert info["state"] == "exited" and info["exit_signal"] == signal.SIGKILL
    finally:
        p.kill()
        p.wait()


def test_run_forwards_sigterm_to_the_container(agentd):
    """Like docker's sig-proxy: a signal to `agentctl run` goes to the container, whose status ends run."""
    name = uname()
    p = subprocess.Popen([*AGENTCTL, "--socket", agentd.sock, "run", "--name", name, "--", "sh", "-c",
                          "trap 'echo caught; exit 42' TERM; echo ready; while :; do sleep 0.05; done"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 42, err
        assert out == "caught\n"
    finally:
        p.kill()
        p.wait()


def test_run_rm_leaves_nothing_behind(agentd):
    name = uname()
    before = container_dirs(agentd)
    r = ctl(agentd, "run", "--rm", "--name", name, "--", "sh", "-c", "echo bye; exit 4")
    assert r.returncode == 4 and r.stdout == "bye\n"
    assert name not in names(agentd)
    assert container_dirs(agentd) == before


def test_detached_run_then_ps_inspect_logs_stop_rm(agentd):
    name = uname()
    r = ctl(agentd, "run", "-d", "--name", name, "--label", "team=blue", "--", "sh", "-c",
            "echo started; exec sleep 600")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert len(cid) == 12 and int(cid, 16) >= 0
    wait_for(lambda: running(agentd, name), what="running")
    assert name in names(agentd, all_=False)
    table = ctl(agentd, "ps").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "ID", "STATE"] and any(line.split()[:3] == [name, cid, "running"] for line in table)

    info = inspect(agentd, name)
    assert info["name"] == name and info["id"] == cid and info["labels"] == {"team": "blue"}
    assert info["exit_code"] is None and info["oom_killed"] is False and info["restart_count"] == 0
    assert info["limits"] == {}
    with open(os.path.join(info["cgroup"], "cgroup.procs")) as f:  # the cgroup path is real and holds its pid
        assert info["pid"] in {int(p) for p in f.read().split()}
    assert info["cgroup"].startswith(os.path.join(agentd.root.path, "containers") + "/")

    wait_for(lambda: b"started" in b"".join(d for _, d in Client(agentd.sock).stream(
        "GET", f"/v1/containers/{name}/logs")), what="log line")
    r = ctl(agentd, "logs", name)
    assert r.returncode == 0 and r.stdout == "started\n"
    r = ctl(agentd, "stop", "-t", "0.5", name)
    assert r.returncode == 0 and r.stdout.strip() == name
    info = inspect(agentd, name)
    assert info["state"] == "exited"
    assert name not in names(agentd, all_=False) and name in names(agentd, all_=True)

    r = ctl(agentd, "rm", name)
    assert r.returncode == 0
    assert not os.path.exists(info["cgroup"])
    r = ctl(agentd, "inspect", name)
    assert r.returncode == 1 and "no container" in one_line(r)
    assert ctl(agentd, "inspect", cid).returncode == 1  # nor by its id


def test_logs_follow_returns_when_the_container_exits_with_all_output(agentd):
    name = uname()
    assert ctl(agentd, "run", "-d", "--name", name, "--", "sh", "-c",
               "echo one; echo two >&2; sleep 0.5; echo three").returncode == 0
    r = ctl(agentd, "logs", "-f", name)
    assert r.returncode == 0
    assert r.stdout == "one\nthree\n" and r.stderr == "two\n"
    assert inspect(agentd, name)["state"] == "exited"


def test_freeze_and_thaw_show_in_the_kernel(agentd):
    name = uname()
    assert ctl(agentd, "run", "-d", "--name", name, "--", "sleep", "600").returncode == 0
    wait_for(lambda: running(agentd, name), what="running")
    cg = inspect(agentd, name)["cgroup"]

    def frozen():
        with open(os.path.join(cg, "cgroup.events")) as f:
            return dict(line.split() for line in f)["frozen"] == "1"

    r = ctl(agentd, "freeze", name)
    assert r.returncode == 0, r.stderr
    assert frozen() and inspect(agentd, name)["state"] == "paused"
    r = ctl(agentd, "thaw", name)
    assert r.returncode == 0, r.stderr
    assert not frozen() and inspect(agentd, name)["state"] == "running"
    r = ctl(agentd, "rm", name)
    assert r.returncode == 1 and "stop it first" in one_line(r)
    assert ctl(agentd, "rm", "-f", name).returncode == 0
    assert not os.path.exists(cg)


def test_stats_shows_a_running_container(agentd):
    name = uname()
    assert ctl(agentd, "run", "-d", "--name", name, "--", "sleep", "600").returncode == 0
    wait_for(lambda: running(agentd, name), what="running")

    def sampled():
        r = ctl(agentd, "stats", name, "--no-stream", "--json")
        return r.returncode == 0 and json.loads(r.stdout)["containers"][0]["cpu_usage_usec"] is not None and r

    doc = json.loads(wait_for(sampled, what="a stats sample").stdout)
    (row,) = doc["containers"]
    assert row["name"] == name and row["state"] == "running" and row["cpu_usage_usec"] >= 0
    r = ctl(agentd, "stats", name, "--no-stream")
    assert r.returncode == 0, r.stderr
    header, line = r.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "STATE", "CPU"] and line.split()[:2] == [name, "running"]
    assert ctl(agentd, "rm", "-f", name).returncode == 0


# -- refusals ---------------------------------------------------------------------------


def test_duplicate_name_is_refused(agentd):
    name = uname()
    assert ctl(agentd, "run", "-d", "--name", name, "--", "sleep", "600").returncode == 0
    r = ctl(agentd, "run", "-d", "--name", name, "--", "sleep", "600")
    assert r.returncode == 1 and "already exists" in one_line(r)
    assert ctl(agentd, "rm", "-f", name).returncode == 0


@pytest.mark.parametrize("args,field", [
    (["--user", "nobody-at-all"], "user"),
    (["--workdir", "relative/dir"], "workdir"),
    (["--hostname", "bad host!"], "hostname"),
    (["-v", "/nonexistent-cga-src:/data"], "volume"),
    (["-v", "/etc:/host-etc"], "volume"),
    (["--rootfs", "/nonexistent-cga-root"], "rootfs"),
    (["--label", "bad key=v"], "label"),
    (["--env", "1BAD=x"], "env"),
])
def test_values_only_the_agent_can_judge_are_bad_usage_and_create_nothing(agentd, args, field):
    name = uname()
    before = container_dirs(agentd)
    r = ctl(agentd, "run", "--name", name, *args, "--", "/bin/true")
    assert r.returncode == 2, r.stderr
    assert field in one_line(r).lower()
    assert name not in names(agentd) and container_dirs(agentd) == before


@pytest.mark.parametrize("argv", [["run", "--memory", "12Q", "--", "true"], ["run", "--name", "../x", "--", "true"],
                                  ["kill", "-s", "NOPE", "x"], ["stop", "-t", "never", "x"], ["run", "--cpus", "0"]])
def test_malformed_flags_are_refused_before_reaching_the_agent(agentd, argv):
    r = ctl(agentd, *argv)
    assert r.returncode == 2 and one_line(r)


def test_names_with_slash_or_dotdot_never_reach_a_path(agentd):
    c = Client(agentd.sock)
    before = container_dirs(agentd)
    for bad in ("../escape", "a/b", "..", "x/../../y"):
        r = c.request("POST", "/v1/containers", body={"name": bad, "argv": ["/bin/true"]})
        assert r.status == 400 and "name" in r.json()["error"]
    for path in ("/v1/containers/..%2F..%2Fagentd", "/v1/containers/%2E%2E/freeze", "/v1/containers/a%2Fb/logs"):
        assert c.request("GET" if "freeze" not in path else "POST", path).status == 400
    assert container_dirs(agentd) == before
    assert os.path.isdir(os.path.join(agentd.root.path, "agentd"))


@pytest.mark.parametrize("cmd", [["inspect"], ["stop"], ["kill"], ["rm"], ["logs"], ["freeze"], ["thaw"], ["limit"],
                                 ["stats", "--no-stream"]])
def test_unknown_container_is_a_failure_with_one_line(agentd, cmd):
    r = ctl(agentd, *cmd, "nope-" + uuid.uuid4().hex[:6])
    assert r.returncode == 1 and "no container" in one_line(r)


def _controller_enabled(d, name) -> bool:
    with open(os.path.join(d.root.path, "containers", "cgroup.subtree_control")) as f:
        return name in f.read().split()


def test_a_limit_the_host_cannot_enforce_is_refused_and_creates_nothing(agentd):
    if _controller_enabled(agentd, "memory") or _controller_enabled(agentd, "pids"):
        pytest.skip("this host enforces memory/pids limits (the vm tier tests them)")
    name = uname()
    before = container_dirs(agentd)
    r = ctl(agentd, "run", "--name", name, "--memory", "64M", "--", "/bin/true")
    assert r.returncode == 1  # a property of the host, not bad usage (2)
    assert "memory controller" in one_line(r)
    assert name not in names(agentd) and container_dirs(agentd) == before

    assert ctl(agentd, "run", "-d", "--name", name, "--", "sleep", "600").returncode == 0
    r = ctl(agentd, "limit", name, "--pids", "10")
    assert r.returncode == 1 and "pids controller" in one_line(r)
    assert inspect(agentd, name)["limits"] == {}
    r = ctl(agentd, "limit", name)
    assert r.returncode == 0 and r.stdout == f"{name}: no limits set\n"
    assert ctl(agentd, "rm", "-f", name).returncode == 0


def test_every_missing_controller_is_named_in_one_refusal(agentd):
    """One run names all the controllers its limits need and the host lacks, each with its
    reason, so the user learns everything in one try (exit 1: the host, not the usage)."""
    flags = {"memory": ["--memory", "64M"], "pids": ["--pids", "10"], "cpu": ["--cpus", "0.5"],
             "io": ["--io-weight", "50"]}
    lacking = [c for c in flags if not _controller_enabled(agentd, c)]
    if len(lacking) < 2:
        pytest.skip(f"this host lacks fewer than two of {sorted(flags)} for containers (the vm tier has them all)")
    name = uname()
    before = container_dirs(agentd)
    argv = [a for c in flags for a in flags[c]]
    r = ctl(agentd, "run", "--name", name, *argv, "--", "/bin/true")
    assert r.returncode == 1, r.stderr
    line = one_line(r)
    for c in lacking:
        assert f"{c} controller is " in line, (c, line)
    assert line.count(" controller is ") == len(lacking)
    assert name not in names(agentd) and container_dirs(agentd) == before


# -- who may do what ------------------------------------------------------------------------

AS_USER = r"""
import os, sys, pwd
# the standard library lives under /root (mode 0700): import what agentctl needs before dropping root
import argparse, json, signal, socket, struct, time, importlib.util, urllib.parse, decimal, dataclasses, locale
import shutil, gettext, textwrap, re, errno, select, selectors, io, codecs, encodings.idna
import agent.cli, agent.cli.dispatch, agent.cli.client, agent.cli.stats_view, runtime.limits, runtime.errors
name = sys.argv[1]
pw = pwd.getpwnam(name)
os.initgroups(name, pw.pw_gid)
os.setgid(pw.pw_gid)
os.setuid(pw.pw_uid)
try:
    rc = agent.cli.main(sys.argv[2:])
except SystemExit as e:
    rc = e.code
sys.stdout.flush()
os._exit(rc)
"""


def _run(argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def guarded():
    """An agentd whose socket group, read group and admin group are real groups, with real users in them."""
    from runtime.cgroupfs import Cgroup, find_mount

    tag = uuid.uuid4().hex[:6]
    groups = {g: f"cgc{tag}{g}" for g in ("sock", "read", "admin")}
    members = {"none": ["sock"], "reader": ["sock", "read"], "admin": ["sock", "admin"]}
    users = {u: f"cgc{tag}{u}" for u in members}
    made_g, made_u = [], []
    root = Cgroup(os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}"))
    os.mkdir(root.path)
    top = tempfile.mkdtemp(prefix="cga-ctl-")
    os.chmod(top, 0o755)
    d = None
    try:
        for g in groups.values():
            _run(["groupadd", g])
            made_g.append(g)
        for u, gs in members.items():
            _run(["useradd", "-M", "-N", "-g", "nogroup", "-s", "/usr/sbin/nologin", "-G",
                  ",".join(groups[g] for g in gs), users[u]])
            made_u.append(users[u])
        d = start_agentd(root, top, f'socket_group = "{groups["sock"]}"\nread_group = "{groups["read"]}"\n'
                                    f'admin_group = "{groups["admin"]}"\n')
        d.users = users
        yield d
    finally:
        if d is not None:
            stop_agentd(d)
        _kill_tree(root)
        shutil.rmtree(top, ignore_errors=True)
        for u in made_u:
            subprocess.run(["userdel", u], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for g in made_g:
            subprocess.run(["groupdel", g], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ctl_as(d, who, *args):
    return subprocess.run([sys.executable, "-c", AS_USER, d.users[who], "--socket", d.sock, *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_client_without_permission_is_refused_with_a_clear_line(guarded):
    r = ctl_as(guarded, "none", "ps")
    assert r.returncode == 1 and "permission denied" in one_line(r)
    r = ctl_as(guarded, "reader", "ps", "-a")
    assert r.returncode == 0, r.stderr
    name = uname()
    r = ctl_as(guarded, "reader", "run", "-d", "--name", name, "--", "/bin/true")
    assert r.returncode == 1 and "permission denied" in one_line(r)
    assert name not in names(guarded)


def test_an_admin_group_member_may_run_containers(guarded):
    name = uname()
    r = ctl_as(guarded, "admin", "run", "--rm", "--name", name, "--", "sh", "-c", "echo hi; exit 5")
    assert r.returncode == 5 and r.stdout == "hi\n", r.stderr
    assert name not in names(guarded)


def test_a_process_inside_a_container_has_no_access_even_as_root(agentd):
    # A host-root container sees the control socket by path and is uid 0: it must
    # still not be able to drive the agent (it could start an unconfined sibling).
    script = ("import subprocess,sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
              "print(r.returncode); print(r.stderr.strip())")
    r = ctl(agentd, "run", "--name", uname("inside"), "--", sys.executable, "-c", script,
            *AGENTCTL, "--socket", agentd.sock, "ps")
    assert r.returncode == 0, r.stderr
    code, err = r.stdout.splitlines()[:2]
    assert code == "1", r.stdout
    assert "processes inside the agent's containers have no access" in err, r.stdout
    # the same command from the host, as root, works
    assert ctl(agentd, "ps").returncode == 0
