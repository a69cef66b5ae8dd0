"""agentctl --host ssh://... against a second agentd reached only over ssh, and agentctl system.

The test starts Debian's OpenSSH server itself on 127.0.0.1 (a free port, its
own sshd_config and host key, an authorized key made here with ssh-keygen,
root login by key only) and points the client's ssh at its own ssh_config
(AGENT_SSH_COMMAND). The second agentd's socket is given to nobody but the
remote agentctl (AGENT_SOCKET in the ssh session's environment through the
remote command), so every request of the client goes through ssh.
Nothing connects anywhere but 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

import sshd_fixtures
from helpers import kill_tree as _kill_tree
from helpers import AGENTCTL, start_agentd, stop_agentd, uname, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REMOTE_AGENTCTL_BIN = os.path.join(os.path.dirname(sys.executable), "agentctl")


def remote_agentctl(sock: str) -> str:
    """AGENT_REMOTE_AGENTCTL for the ssh session: this checkout's code, the second agentd's
    socket as the remote agentctl's own default."""
    return f"env PYTHONPATH={REPO} AGENT_SOCKET={sock} {REMOTE_AGENTCTL_BIN}"


@pytest.fixture(scope="module")
def remote():
    why = sshd_fixtures.available()
    if why:
        pytest.skip(why)
    if not os.path.exists(REMOTE_AGENTCTL_BIN):
        pytest.skip(f"no agentctl beside {sys.executable} (install the package: pip install -e .)")
    from runtime.cgroupfs import Cgroup, find_mount

    top = tempfile.mkdtemp(prefix="cga-remote-")
    os.chmod(top, 0o755)
    sshd = sshd_fixtures.Sshd(top)
    root = Cgroup(os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}"))
    os.mkdir(root.path)
    d = None
    try:
        sshd.start()
        agent_top = os.path.join(top, "agent")
        os.mkdir(agent_top)
        d = start_agentd(root, agent_top)
        env = {k: v for k, v in os.environ.items() if k not in ("AGENT_SOCKET", "AGENT_HOST")}
        env.update(AGENT_SSH_COMMAND=f"ssh -F {sshd.ssh_config(sshd.user_key)}",
                   AGENT_REMOTE_AGENTCTL=remote_agentctl(d.sock),
                   AGENT_SOCKET=os.path.join(top, "no-such-local.sock"))   # the local socket is never used
        yield {"url": sshd.url, "env": env, "agentd": d, "port": sshd.port,
               "other_config": sshd.ssh_config(sshd.other_key), "top": top}
    finally:
        if d is not None:
            stop_agentd(d)
        sshd.stop()
        _kill_tree(root)
        shutil.rmtree(top, ignore_errors=True)


def rctl(remote, *args, env=None, host=True, timeout=120):
    e = dict(remote["env"], **(env or {}))
    argv = [*AGENTCTL, *(["--host", remote["url"]] if host else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=e)


def test_ps_run_logs_rm_work_over_ssh_only(remote):
    # the local socket is absent: without --host agentctl fails, so what works below went over ssh
    local = rctl(remote, "ps", host=False)
    assert local.returncode == 1 and "no-such-local.sock" in local.stderr
    r = rctl(remote, "ps")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("NAME")
    name = uname("remote")
    r = rctl(remote, "run", "-d", "--name", name, "--", "/bin/sh", "-c", "echo hello-over-ssh; sleep 600")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "hello-over-ssh" in rctl(remote, "logs", name).stdout, 60, "the container's output over ssh")
    r = rctl(remote, "ps", "--json")
    assert r.returncode == 0, r.stderr
    assert [c["state"] for c in json.loads(r.stdout) if c["name"] == name] == ["running"]
    # the second agentd itself has it (its own socket, read directly)
    from agent.cli.client import Client
    assert Client(remote["agentd"].sock).call("GET", f"/v1/containers/{name}")["state"] == "running"
    r = rctl(remote, "rm", "-f", name)
    assert r.returncode == 0, r.stderr
    assert name not in rctl(remote, "ps", "-a", "-q").stdout.split()


def test_run_attached_streams_output_and_exit_status_over_ssh(remote):
    r = rctl(remote, "run", "--rm", "--", "/bin/sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")


def test_agent_host_environment_variable(remote):
    r = rctl(remote, "system", "info", "--json", host=False, env={"AGENT_HOST": remote["url"]})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["state_dir"] == os.path.join(remote["agentd"].top, "state")
    assert info["kernel"] == os.uname().release
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1:3] for line in f]
    mode = ("unified" if ["/sys/fs/cgroup", "cgroup2"] in mounts
            else "hybrid" if any(t == "cgroup2" for _, t in mounts) else "legacy")
    cg = info["cgroup"]
    assert cg["mode"] == mode and cg["root"] == remote["agentd"].root.path
    assert set(cg["controllers_enabled"]) | set(cg["controllers_missing"]) >= {"cpu", "memory", "io", "pids", "cpuset"}
    assert all(cg["controllers_missing"].values())   # each with its reason
    from agent.cli.client import Client
    listed = Client(remote["agentd"].sock).call("GET", "/v1/containers", {"all": "1"})
    assert info["containers"]["total"] == len(listed)
    text = rctl(remote, "system", "info", host=False, env={"AGENT_HOST": remote["url"]}).stdout
    for name, reason in cg["controllers_missing"].items():
        assert f"Controller missing: {name}" in text and reason in text


def test_unreachable_host_is_one_line_exit_1(remote):
    closed = sshd_fixtures.free_port()   # nothing listens there
    r = rctl(remote, "--host", f"ssh://root@127.0.0.1:{closed}", "ps", host=False)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "cannot reach ssh://root@127.0.0.1" in lines[0] and "refused" in lines[0], r.stderr


def test_refused_key_is_one_line_permission_denied(remote):
    r = rctl(remote, "ps", env={"AGENT_SSH_COMMAND": f"ssh -F {remote['other_config']}"})
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentctl: permission denied by ssh://root@127.0.0.1"), r.stderr


def test_missing_remote_agentctl_and_missing_ssh_are_one_line(remote):
    r = rctl(remote, "ps", env={"AGENT_REMOTE_AGENTCTL": "/nonexistent/agentctl"})
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "agentctl not found on ssh://root@127.0.0.1" in lines[0], r.stderr
    r = rctl(remote, "ps", env={"AGENT_SSH_COMMAND": "/nonexistent/ssh"})
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "'/nonexistent/ssh' not found" in lines[0], r.stderr


def test_a_host_that_is_not_ssh_is_refused(remote):
    r = rctl(remote, "--host", "tcp://127.0.0.1:2375", "ps", host=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "agentctl: host 'tcp://127.0.0.1:2375' is not accepted; use ssh://[USER@]HOST[:PORT] (only ssh:// is supported)"]


def test_dial_stdio_answers_a_request_and_handles_half_close(remote):
    """stdin's end (a half-close) must not cut the answer short."""
    d = remote["agentd"]
    req = b"GET /v1/health HTTP/1.1\r\nHost: agentd\r\nConnection: close\r\n\r\n"
    r = subprocess.run([*AGENTCTL, "--socket", d.sock, "system", "dial-stdio"], input=req, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["status"] == "ok"
    r = subprocess.run([*AGENTCTL, "--socket", os.path.join(remote["top"], "nope.sock"), "system", "dial-stdio"],
                       input=req, capture_output=True, timeout=60)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and b"nope.sock" in r.stderr


def test_system_info_df_prune_over_ssh(remote):
    d = remote["agentd"]
    r = rctl(remote, "system", "info")
    assert r.returncode == 0, r.stderr
    assert "Cgroup mode:" in r.stdout and os.uname().release in r.stdout
    done = uname("done")
    r = rctl(remote, "run", "--name", done, "--", "/bin/sh", "-c", "echo bytes-in-the-log")
    assert r.returncode == 0, r.stderr
    keep = uname("keep")
    assert rctl(remote, "run", "-d", "--name", keep, "--", "/bin/sleep", "600").returncode == 0
    df = json.loads(rctl(remote, "system", "df", "--json").stdout)
    assert df["containers"]["count"] >= 2 and df["logs"]["bytes"] > 0
    assert "state.db" in df["databases"]["files"] and df["databases"]["bytes"] > 0
    # without -f: says what it would remove, removes nothing
    r = rctl(remote, "system", "prune")
    assert r.returncode == 0, r.stderr
    assert f"would remove container {done} (exited)" in r.stdout and keep not in r.stdout
    from agent.cli.client import Client
    c = Client(d.sock)
    assert c.call("GET", f"/v1/containers/{done}")["state"] == "exited"
    r = rctl(remote, "system", "prune", "-f")
    assert r.returncode == 0, r.stderr
    assert f"removed container {done}" in r.stdout
    left = {x["name"] for x in c.call("GET", "/v1/containers", {"all": "1"})}
    assert done not in left and keep in left
    assert rctl(remote, "rm", "-f", keep).returncode == 0


def _ours(remote) -> list[int]:
    """Pids of the client's ssh to this sshd and of the remote dial-stdio for the second agentd."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ssh") and str(remote["port"]).encode() in argv:
            found.append(int(pid))
        elif b"dial-stdio" in argv and f"AGENT_SOCKET={remote['agentd'].sock}".encode() in environ:
            found.append(int(pid))
    return found


def test_interrupting_logs_follow_leaves_no_ssh_and_no_dial_stdio(remote):
    import signal

    name = uname("follow")
    assert rctl(remote, "run", "-d", "--name", name, "--", "/bin/sh", "-c",
                "while :; do echo tick; sleep 0.2; done").returncode == 0
    p = subprocess.Popen([*AGENTCTL, "--host", remote["url"], "logs", "-f", name], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=remote["env"])
    try:
        assert p.stdout.readline() == b"tick\n"   # streaming over ssh
        assert _ours(remote), "no ssh session seen while logs -f streams"
        p.send_signal(signal.SIGINT)   # Ctrl-C
        assert p.wait(60) == 130
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
    wait_for(lambda: not _ours(remote), 60, "the ssh session and the remote dial-stdio to end")
    assert rctl(remote, "rm", "-f", name).returncode == 0


def test_socket_flag_names_the_remote_socket(remote):
    """--socket with --host goes to the remote agentctl: the right one works, a wrong one is one line."""
    d = remote["agentd"]
    plain = f"env PYTHONPATH={REPO} {REMOTE_AGENTCTL_BIN}"   # no AGENT_SOCKET on the remote side
    r = rctl(remote, "--socket", d.sock, "ps", env={"AGENT_REMOTE_AGENTCTL": plain})
    assert r.returncode == 0 and r.stdout.startswith("NAME"), r.stderr
    wrong = os.path.join(remote["top"], "missing.sock")
    r = rctl(remote, "ps", "--socket", wrong, env={"AGENT_REMOTE_AGENTCTL": plain})
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"agentctl: on {remote['url']}: cannot connect to agentd at {wrong}: "
                                     "No such file or directory (is agentd running? use --socket or AGENT_SOCKET)"]


def test_df_counts_upper_dirs_and_prune_removes_an_unnamed_unused_image(remote):
    """Images loaded over ssh: a named one runs a container whose writes show in df's upper
    bytes; an unnamed one is listed by prune, removed only by prune -f; the named one stays."""
    if not (shutil.which("umoci") and shutil.which("skopeo")):
        pytest.skip("umoci / skopeo are not installed (scripts/setup.sh installs them)")
    from registry_fixtures import ImageBuilder

    top = remote["top"]
    b = ImageBuilder(top, f"img-{uuid.uuid4().hex[:6]}").busybox()
    with open(os.path.join(b.root, "marker"), "w") as f:
        f.write(uuid.uuid4().hex)   # a digest of its own
    b.layer()
    named, unnamed = os.path.join(top, "named.tar"), os.path.join(top, "unnamed.tar")
    ref = f"local/df-{uuid.uuid4().hex[:6]}:1"
    subprocess.run(["skopeo", "copy", f"oci:{b.layout}:1", f"docker-archive:{named}:{ref}"], check=True,
                   capture_output=True)
    with open(os.path.join(b.root, "marker2"), "w") as f:
        f.write(uuid.uuid4().hex)
    b.layer()
    subprocess.run(["skopeo", "copy", f"oci:{b.layout}:1", f"docker-archive:{unnamed}"], check=True,
                   capture_output=True)
    for archive in (named, unnamed):
        r = rctl(remote, "image", "load", "-i", archive)
        assert r.returncode == 0, r.stderr
    before = json.loads(rctl(remote, "system", "df", "--json").stdout)
    lone = before["images"]["prunable"]
    assert len(lone) == 1
    name = uname("upper")
    r = rctl(remote, "run", "-d", "--name", name, "--pull", "never", "--image", ref, "--", "sh", "-c",
             "head -c 3000000 /dev/zero > /big && touch /written; sleep 600")
    assert r.returncode == 0, r.stderr

    def grown():
        df = json.loads(rctl(remote, "system", "df", "--json").stdout)
        return df if df["containers"]["upper_bytes"] >= before["containers"]["upper_bytes"] + 3_000_000 else None

    df = wait_for(grown, 60, "the container's 3 MB write to show in system df")
    assert df["images"]["count"] == before["images"]["count"] and df["images"]["bytes"] > 0
    r = rctl(remote, "system", "prune")
    assert r.returncode == 0 and f"would remove image {lone[0]}" in r.stdout, r.stderr
    assert rctl(remote, "image", "inspect", lone[0]).returncode == 0   # still there
    r = rctl(remote, "system", "prune", "-f")
    assert r.returncode == 0, r.stderr
    assert rctl(remote, "image", "inspect", lone[0]).returncode == 1
    assert rctl(remote, "image", "inspect", ref).returncode == 0 and name in rctl(remote, "ps", "-q").stdout
    assert rctl(remote, "rm", "-f", name).returncode == 0
