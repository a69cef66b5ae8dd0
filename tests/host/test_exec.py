"""agentctl exec against a real agentd: the process joins the container's
namespaces (its user namespace first), its cgroup (metered, billed) and its
PID 1's security, through the launcher; its exit status comes back."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agent.cli.client import Client
from helpers import AGENTCTL, ctl, on_terminal, one_line, uname, wait_for
from helpers import agentd_in_own_cgroup, busybox_rootfs

APPLETS = ("sh", "ls", "cat", "sleep", "id", "echo", "ps", "readlink", "true", "wc", "tr", "stty", "tty", "stat")


@pytest.fixture(scope="module")
def agentd():
    with agentd_in_own_cgroup("cga-exec-") as d:
        yield d


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    return busybox_rootfs(tmp_path_factory.mktemp("rootfs"), APPLETS, {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nwww:x:33:44:www:/var/www:/bin/sh\n",
        "etc/group": "root:x:0:\nwww:x:44:\nstaff:x:50:\n",
        "inside-marker": "in the container\n"})


def run_sleeper(d, rootfs=None, **extra) -> tuple[str, dict]:
    name = uname("x")
    args = ["run", "-d", "--name", name]
    if rootfs:
        args += ["--rootfs", rootfs]
    r = ctl(d, *args, "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    info = wait_for(lambda: _running(d, name), 30, "container to run")
    return name, info


def _running(d, name):
    from agent.cli.client import Client
    info = Client(d.sock).call("GET", f"/v1/containers/{name}")
    return info if info["state"] == "running" and info.get("pid") else None


def cgroup_path(d, info) -> str:
    from runtime.cgroupfs import find_mount
    cg = info["cgroup"]
    return cg if cg.startswith("/sys/") else os.path.join(find_mount(), cg.lstrip("/"))


def procs(cg: str) -> set[int]:
    with open(os.path.join(cg, "cgroup.procs")) as f:
        return {int(x) for x in f.read().split()}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def status(pid: int) -> dict:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@pytest.fixture(scope="module")
def box(agentd, rootfs):
    name, info = run_sleeper(agentd, rootfs)
    yield name, info
    ctl(agentd, "rm", "-f", name)


def test_exec_output_and_exit_status_propagate(agentd, box):
    name, _ = box
    r = ctl(agentd, "exec", name, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    r = ctl(agentd, "exec", name, "--", "true")
    assert r.returncode == 0


def test_exec_sees_the_container_root_and_pid_namespace_not_the_hosts(agentd, box, tmp_path):
    name, info = box
    host_file = tmp_path / "host-only"
    host_file.write_text("host secret\n")
    r = ctl(agentd, "exec", name, "sh", "-c",
            f"cat /inside-marker; cat {host_file} 2>/dev/null || echo no-host-file; echo pid=$$; "
            "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | wc -l; ls /")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "in the container"
    assert lines[1] == "no-host-file"
    pid_inside = int(lines[2].split("=")[1])
    assert pid_inside < 20                       # a small pid: the container's PID namespace
    assert lines[3].strip() == "sleep 1000"      # its PID 1 is the container's init
    assert "work" not in lines[5:] and "inside-marker" in lines[5:]


def test_exec_process_is_in_the_container_cgroup_namespaces_and_security(agentd, box):
    name, info = box
    cg = cgroup_path(agentd, info)
    init = info["pid"]
    before = procs(cg)
    p = subprocess.Popen([*AGENTCTL, "--socket", agentd.sock, "exec", name, "sleep", "300"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def execd():
            found = {x for x in procs(cg) - before if _comm(x) == "sleep"}
            return found if len(found) == 1 else None
        (pid,) = wait_for(execd, 30, "the exec'd process in the container's cgroup")
        for ns in ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup"):
            assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}"), ns
        assert os.stat(f"/proc/{pid}/root/inside-marker").st_ino == os.stat(f"/proc/{init}/root/inside-marker").st_ino
        a, b = status(pid), status(init)
        for key in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs", "Seccomp", "Uid", "Gid"):
            assert a[key] == b[key], key
        assert a["Seccomp"] == "2" and a["NoNewPrivs"] == "1"
        with open(f"/proc/{pid}/uid_map") as f1, open(f"/proc/{init}/uid_map") as f2:
            assert f1.read() == f2.read()
        # the launcher is its parent (agentd never forks)
        assert int(status(pid)["PPid"]) == int(status(init)["PPid"])
    finally:
        for x in procs(cg) - before:
            os.kill(x, 9)
        p.wait(30)
    assert p.returncode == 137


def test_exec_cpu_is_billed_to_the_container(agentd, box):
    name, info = box
    cg = cgroup_path(agentd, info)

    def usage():
        with open(os.path.join(cg, "cpu.stat")) as f:
            return int(next(line.split()[1] for line in f if line.startswith("usage_usec")))

    before = usage()
    # busybox sh's `times`: the shell's own user and system CPU time
    r = ctl(agentd, "exec", name, "sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; times",
            timeout=300)
    assert r.returncode == 0, r.stderr
    after = usage()
    user, system = r.stdout.splitlines()[0].split()
    spent = sum(int(float(t.split("m")[0]) * 60e6 + float(t.split("m")[1].rstrip("s")) * 1e6) for t in (user, system))
    assert spent > 0
    assert after - before >= spent * 0.9, (after - before, spent)


def test_exec_user_workdir_env_and_stdin(agentd, box):
    name, _ = box
    r = ctl(agentd, "exec", "-u", "www:staff", "-w", "/bin", "-e", "FOO=bar", name,
            "sh", "-c", "id -u; id -g; pwd; echo $FOO $HOME")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["33", "50", "/bin", "bar /var/www"]
    r = subprocess.run([*AGENTCTL, "--socket", agentd.sock, "exec", "-i", name, "sh", "-c", "cat; echo done"],
                       input="line one\nline two\n", capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "line one\nline two\ndone\n"), r.stderr
    r = ctl(agentd, "exec", "-u", "nobody-here", name, "true")
    assert r.returncode != 0 and "nobody-here" in one_line(r)


def test_exec_into_a_stopped_container_is_a_one_line_refusal(agentd, rootfs):
    name, _ = run_sleeper(agentd, rootfs)
    try:
        assert ctl(agentd, "pause", name).returncode == 0
        r = ctl(agentd, "exec", name, "true")
        assert r.returncode == 1 and "paused" in one_line(r)
        assert ctl(agentd, "unpause", name).returncode == 0
        assert ctl(agentd, "stop", "-t", "1", name).returncode == 0
        r = ctl(agentd, "exec", name, "true")
        assert r.returncode == 1
        assert "not running" in one_line(r) and name in one_line(r)
        r = ctl(agentd, "exec", "no-such-container", "true")
        assert r.returncode == 1 and "no-such-container" in one_line(r)
    finally:
        ctl(agentd, "rm", "-f", name)


def test_exec_missing_program_exits_127(agentd, box):
    name, _ = box
    r = ctl(agentd, "exec", name, "/bin/nope")
    assert r.returncode == 127
    assert "nope" in one_line(r)


def test_exec_in_a_host_root_container(agentd):
    name, info = run_sleeper(agentd)
    try:
        r = ctl(agentd, "exec", name, "sh", "-c", "echo $$; readlink /proc/1/exe")
        assert r.returncode == 0, r.stderr
        pid, exe = r.stdout.split()
        assert int(pid) < 20 and exe.endswith("sleep")
    finally:
        ctl(agentd, "rm", "-f", name)


def test_exec_tty_gives_a_terminal_of_the_clients_size(agentd, box):
    name, _ = box
    p, master = on_terminal(["--socket", agentd.sock, "exec", "-i", "-t", name, "sh", "-c",
                             "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; read x; stty size; exit 3"], 33, 99)
    try:
        os.write(master, b"go\r")
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
    assert p.returncode == 3, err
    lines = out.replace(b"\r", b"").splitlines()
    assert b"is-a-tty" in lines and lines[-1] == b"33 99", out   # (the terminal echoes "go" somewhere)



def test_exec_tty_starts_at_the_clients_size(agentd, box):
    """exec -t sends the terminal's size with the request (console_size): the
    process's terminal has it before the command starts, so a command that reads
    it first thing sees it. Before, the size came in the first RESIZE frame,
    after the start: `stty size` found a 0x0 terminal and failed, 20 times of 20."""
    name, _ = box
    sizes = []
    for _ in range(20):
        p, master = on_terminal(["--socket", agentd.sock, "exec", "-t", name, "stty", "size"], 33, 99)
        try:
            out, err = p.communicate(timeout=60)
        finally:
            os.close(master)
        assert p.returncode == 0, err
        sizes.append(out.replace(b"\r", b"").strip())
    assert set(sizes) == {b"33 99"}, sizes
    client = Client(agentd.sock)
    with pytest.raises(Exception) as e:       # the rule run's console_size has, one line
        client.call("POST", f"/v1/containers/{name}/exec", body={"command": ["true"], "console_size": [1, 2]})
    assert "console_size: only with tty" in str(e.value)

def test_exec_tty_is_a_terminal_of_the_containers_own_devpts(agentd, box):
    """The terminal of `exec -t` is made in the container's devpts instance
    (its /dev/ptmx), as Docker's: `tty` names it (/dev/pts/0, a node that
    exists inside), and it belongs to the exec'd user. Before, it was one of
    the host's ptys, which the container's /dev/pts does not have: `tty`
    answered "not a tty" and the host's pty numbering showed through."""
    import pty

    name, _ = box
    for user, want_uid in ((None, "0"), ("www", "33")):
        pid, fd = pty.fork()
        if pid == 0:   # agentctl on a terminal of its own (exec -t wants one)
            os.execv(sys.executable, [sys.executable, "-m", "agent.cli", "--socket", agentd.sock, "exec", "-t",
                                      *(["-u", user] if user else []), name, "sh", "-c",
                                      'echo "tty=$(tty)"; ls /dev/pts | tr "\\n" " "; echo; '
                                      'echo "owner=$(stat -c %u "$(tty)")"'])
        out = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(fd)
        _, status = os.waitpid(pid, 0)
        text = out.decode(errors="replace").replace("\r", "")
        assert os.waitstatus_to_exitcode(status) == 0, text
        lines = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert lines.get("tty", "").startswith("/dev/pts/"), text
        listed = next(line for line in text.splitlines() if "ptmx" in line).split()
        assert lines["tty"].rsplit("/", 1)[1] in listed, text   # a node of the container's own devpts
        assert lines["owner"] == want_uid, text


def test_exec_tty_refuses_a_ptmx_the_tenant_replaced(agentd, rootfs):
    """A tenant that points its /dev/ptmx at another device (here /dev/null,
    in its own /dev) gets no terminal: exec -t fails in one line naming the
    device, and nothing of the host's is opened for it."""
    name, _ = run_sleeper(agentd, rootfs)
    try:
        r = ctl(agentd, "exec", name, "sh", "-c", "rm /dev/ptmx && ln -s null /dev/ptmx && ls -l /dev/ptmx")
        assert r.returncode == 0 and "null" in r.stdout, r.stderr   # the tenant can do that in its /dev
        r = ctl(agentd, "exec", "-t", name, "true")
        assert r.returncode != 0
        line = one_line(r)
        assert "/dev/ptmx is not the pty multiplexer (device 1:3)" in line, line
        assert _running(agentd, name)
    finally:
        ctl(agentd, "rm", "-f", name)
