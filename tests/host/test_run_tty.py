"""agentctl run -t against a real agentd: the container's PID 1 on a
pseudo-terminal made in the container's own devpts instance (its /dev/ptmx,
checked to be the pty multiplexer), the terminal's output in its log, the
client's window size and typing passed on, and the detach keys of attached
sessions with a terminal (run -it, exec -it). The client runs on a real
pty, as a user's shell would."""
from __future__ import annotations

import os
import select

import pytest

from helpers import ctl, names, on_terminal, one_line, uname, wait_for
from helpers import agentd_in_own_cgroup, busybox_rootfs

APPLETS = ("sh", "ls", "cat", "sleep", "echo", "tr", "stty", "tty", "stat", "kill", "true", "head")


@pytest.fixture(scope="module")
def agentd():
    with agentd_in_own_cgroup("cga-runtty-") as d:
        yield d


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    return busybox_rootfs(tmp_path_factory.mktemp("rootfs"), APPLETS, {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nwww:x:33:44:www:/var/www:/bin/sh\n",
        "etc/group": "root:x:0:\nwww:x:44:\n"})


def logs(d, name) -> str:
    """Its log ("" while it is not created yet)."""
    return ctl(d, "logs", name).stdout.replace("\r", "")


def state(d, name) -> str:
    from agent.cli.client import Client
    return Client(d.sock).call("GET", f"/v1/containers/{name}")["state"]


def test_run_tty_pid1_is_on_a_terminal_of_its_own_devpts_of_the_clients_size(agentd, rootfs):
    """run -it: PID 1's stdin, stdout and stderr are /dev/pts/0 of the
    container's own devpts, its controlling terminal, of the client's
    window size; what is typed reaches it; stderr and stdout are one stream
    (a terminal), in stdout.log; inspect shows tty. Before: -t was refused."""
    name = uname("tty")
    p, master = on_terminal(["--socket", agentd.sock, "run", "-i", "-t", "--name", name, "--rootfs", rootfs,
                             "--", "sh", "-c",
                             'read x; echo "typed=$x"; echo "tty=$(tty)"; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] '
                             '&& echo all-three-a-tty; echo "size=$(stty size)"; echo "pts=$(ls /dev/pts | tr "\\n" " ")"; '
                             'echo "owner=$(stat -c %u /dev/pts/0)"; echo to-stderr >&2; exit 3'])
    try:
        # typed after the size, on the same connection: once `read` has its line, the size is applied
        os.write(master, b"hello\r")
        out, err = p.communicate(timeout=90)
    finally:
        os.close(master)
    try:
        assert p.returncode == 3, err
        text = out.decode(errors="replace").replace("\r", "")
        got = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        assert got.get("typed") == "hello", text
        assert got.get("tty") == "/dev/pts/0", text             # a node of its own devpts, not the host's
        assert "0" in got.get("pts", "").split() and "ptmx" in got["pts"].split(), text
        assert "all-three-a-tty" in text.splitlines(), text
        assert got.get("size") == "33 99", text
        assert got.get("owner") == "0", text
        assert "to-stderr" in text.splitlines(), text            # one stream, as Docker's
        log = logs(agentd, name)
        assert "typed=hello" in log and "to-stderr" in log, log
        r = ctl(agentd, "logs", name)
        assert r.stderr == "", r.stderr
        r = ctl(agentd, "inspect", name)
        assert r.returncode == 0 and '"tty": true' in r.stdout, r.stdout
    finally:
        ctl(agentd, "rm", "-f", name)


def test_run_tty_starts_at_the_clients_size(agentd, rootfs):
    """run -t without -i: the terminal has the client's size before PID 1's
    first instruction (sent with the request, as Docker's ConsoleSize), so a
    program that asks at once gets it, not 0 0."""
    p, master = on_terminal(["--socket", agentd.sock, "run", "-t", "--rm", "--rootfs", rootfs, "--",
                             "stty", "size"], rows=41, cols=123)
    try:
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
    assert p.returncode == 0, err
    assert out.replace(b"\r", b"").splitlines() == [b"41 123"], out


def test_run_tty_detached_output_reaches_the_log(agentd, rootfs):
    """run -d -t (no client): PID 1 is on its terminal all the same, its
    output in `agentctl logs`; a restart (restart policy) gets a new one."""
    name = uname("ttyd")
    r = ctl(agentd, "run", "-d", "-t", "--restart", "on-failure:1", "--name", name, "--rootfs", rootfs, "--",
            "sh", "-c", 'echo "run tty=$(tty)"; [ -t 1 ] && echo stdout-is-a-tty; exit 5')
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: logs(agentd, name).count("stdout-is-a-tty") == 2, 60, "both runs' output in the log")
        assert logs(agentd, name).count("run tty=/dev/pts/0") == 2, logs(agentd, name)
    finally:
        ctl(agentd, "rm", "-f", name)


def test_a_terminal_flood_goes_to_a_copier_in_its_cgroup_and_every_byte_is_counted(agentd, rootfs):
    """A terminal's output flood (past 4 MiB in 1 s) is copied by a copier
    in the container's cgroup, reading the multiplexer as it splices pipes;
    log_bytes counts every byte (the cap rotates the file) and the end of the
    stream is seen."""
    from agent.launcher.logcopier import COPIER_COMM

    def copiers(cg):
        found = []
        for pid in open(os.path.join(cg, "cgroup.procs")).read().split():
            try:
                if open(f"/proc/{pid}/comm").read().strip() == COPIER_COMM:
                    found.append(pid)
            except OSError:
                pass
        return found

    name = uname("flood")
    size = 24 << 20
    r = ctl(agentd, "run", "-d", "-t", "--name", name, "--rootfs", rootfs, "--",
            "sh", "-c", f"head -c {size} /dev/zero; echo flood-done; sleep 1000")
    assert r.returncode == 0, r.stderr
    try:
        from agent.cli.client import Client
        info = Client(agentd.sock).call("GET", f"/v1/containers/{name}")
        cg = info["cgroup"]
        wait_for(lambda: copiers(cg), 120, "a log copier in the container's cgroup")
        want = size + len("flood-done\r\n")     # the terminal turns its newline into CR LF
        wait_for(lambda: Client(agentd.sock).call("GET", f"/v1/containers/{name}")["log_bytes"] == want, 120,
                 f"log_bytes to reach {want}")
        assert "flood-done" in logs(agentd, name)
    finally:
        ctl(agentd, "rm", "-f", name)


def test_run_it_detach_keys_leave_the_container_running(agentd, rootfs):
    """ctrl-p ctrl-q typed into run -it: agentctl says `read escape
    sequence` and exits 0; the container runs on, its later output in its
    log; the keys themselves never reach it."""
    name = uname("det")
    p, master = on_terminal(["--socket", agentd.sock, "run", "-i", "-t", "--name", name, "--rootfs", rootfs,
                             "--", "sh", "-c", 'while read x; do echo "line=$x"; done; echo input-ended; sleep 1000'])
    try:
        os.write(master, b"first\r")
        wait_for(lambda: "line=first" in logs(agentd, name), 60, "the typed line in the log")
        os.write(master, b"ab\x10\x11")
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
    try:
        assert p.returncode == 0, err
        assert err.decode().strip().splitlines()[-1] == "read escape sequence", err
        assert state(agentd, name) == "running"
        # the terminal is the launcher's: what PID 1 writes later is logged
        r = ctl(agentd, "exec", name, "sh", "-c", "echo after-detach > /proc/1/fd/1")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "after-detach" in logs(agentd, name), 60, "output after the detach in the log")
        assert "input-ended" not in logs(agentd, name)
        assert state(agentd, name) == "running"
    finally:
        ctl(agentd, "rm", "-f", name)


def test_custom_detach_keys_and_a_bad_sequence(agentd, rootfs):
    """--detach-keys in Docker's syntax; one that is not refused in one line."""
    r = ctl(agentd, "run", "-i", "-t", "--detach-keys", "ctrl-1", "--rootfs", rootfs, "--", "true")
    assert r.returncode == 2
    assert "ctrl-1" in one_line(r) and "ctrl-p,ctrl-q" in one_line(r)
    name = uname("detk")
    p, master = on_terminal(["--socket", agentd.sock, "run", "-i", "-t", "--detach-keys", "ctrl-x,z", "--name", name,
                             "--rootfs", rootfs, "--", "sh", "-c", 'while read x; do echo "line=$x"; done'])
    try:
        os.write(master, b"\x10\x11one\r")      # the default keys are just keys now
        wait_for(lambda: "line=" in logs(agentd, name), 60, "the typed line in the log")
        os.write(master, b"\x18z")
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
    try:
        assert p.returncode == 0, err
        assert b"read escape sequence" in err, err
        assert state(agentd, name) == "running"
    finally:
        ctl(agentd, "rm", "-f", name)


def test_exec_it_detach_keys_leave_the_process_running(agentd, rootfs):
    """ctrl-p ctrl-q typed into exec -it: agentctl exits 0, the exec'd
    process keeps running (agentd holds its terminal until it exits)."""
    name = uname("exd")
    r = ctl(agentd, "run", "-d", "--name", name, "--rootfs", rootfs, "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: state(agentd, name) == "running", 30, "container to run")
        p, master = on_terminal(["--socket", agentd.sock, "exec", "-i", "-t", name, "sh", "-c",
                                 'echo $$ > /dev/shm/pid; while read x; do echo "line=$x" > /dev/shm/line; done'])
        try:
            os.write(master, b"one\r")
            wait_for(lambda: ctl(agentd, "exec", name, "cat", "/dev/shm/line").stdout == "line=one\n", 60,
                     "the typed line")
            os.write(master, b"\x10\x11")
            out, err = p.communicate(timeout=60)
        finally:
            os.close(master)
        assert p.returncode == 0, err
        assert b"read escape sequence" in err, err
        r = ctl(agentd, "exec", name, "sh", "-c", 'kill -0 "$(cat /dev/shm/pid)" && echo alive')
        assert r.stdout == "alive\n", r.stderr
    finally:
        ctl(agentd, "rm", "-f", name)


def test_run_tty_refuses_a_ptmx_that_is_not_the_multiplexer(agentd, rootfs, tmp_path):
    """A /dev/ptmx that leads elsewhere (here: a volume over /dev/pts whose
    ptmx is a symlink to /dev/null) gives no terminal: run -t fails in one
    line naming the device, and no container or cgroup is left."""
    fake = tmp_path / "fakepts"
    fake.mkdir()
    os.symlink("/dev/null", fake / "ptmx")
    name = uname("ptmx")
    before = set(os.listdir(_cgroup_parent(agentd)))
    r = ctl(agentd, "run", "-d", "-t", "--name", name, "--rootfs", rootfs, "-v", f"{fake}:/dev/pts", "--", "true")
    assert r.returncode != 0
    line = one_line(r)
    assert "/dev/ptmx is not the pty multiplexer (device 1:3)" in line, line
    assert name not in names(agentd)
    assert set(os.listdir(_cgroup_parent(agentd))) == before


def test_run_tty_on_the_hosts_root_is_refused(agentd):
    r = ctl(agentd, "run", "-t", "--", "true")
    assert r.returncode != 0
    assert "tty: needs a rootfs, a bundle or an image" in one_line(r)


def _cgroup_parent(d) -> str:
    return os.path.join(d.root.path, "containers")     # where agentd makes each container's cgroup


def test_run_tty_survives_an_agentd_restart(rootfs):
    """The launcher holds PID 1's terminal, not agentd: across an agentd
    restart the container keeps it, and what it writes later is logged."""
    from agent.cli.client import Client
    from helpers import start_agentd, stop_agentd

    with agentd_in_own_cgroup("cga-runtty-live-") as d:
        name = uname("live")
        r = ctl(d, "run", "-d", "-t", "--name", name, "--rootfs", rootfs, "--", "sh", "-c", "echo before; sleep 1000")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: "before" in logs(d, name), 60, "its first output in the log")
        pid = Client(d.sock).call("GET", f"/v1/containers/{name}")["pid"]
        stop_agentd(d)
        d2 = start_agentd(d.root, d.top)
        try:
            info = Client(d2.sock).call("GET", f"/v1/containers/{name}")
            assert (info["state"], info["pid"]) == ("running", pid), info
            r = ctl(d2, "exec", name, "sh", "-c", "echo after-restart > /proc/1/fd/1")
            assert r.returncode == 0, r.stderr
            wait_for(lambda: "after-restart" in logs(d2, name), 60, "output after the restart in the log")
        finally:
            ctl(d2, "rm", "-f", name)
            stop_agentd(d2)


def test_a_bundles_process_terminal_puts_pid1_on_a_terminal(agentd, rootfs, tmp_path):
    """An OCI bundle's process.terminal (as runc reads it) is run -t."""
    import json

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({
        "ociVersion": "1.0.2", "root": {"path": rootfs},
        "process": {"terminal": True, "cwd": "/", "user": {"uid": 0, "gid": 0},
                    "args": ["sh", "-c", 'echo "bundle tty=$(tty)"']}}))
    name = uname("bun")
    r = ctl(agentd, "run", "-d", "--name", name, "--bundle", str(bundle))
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: "bundle tty=" in logs(agentd, name), 60, "its output in the log")
        assert "bundle tty=/dev/pts/0" in logs(agentd, name), logs(agentd, name)
        assert '"tty": true' in ctl(agentd, "inspect", name).stdout
    finally:
        ctl(agentd, "rm", "-f", name)


def test_attach_types_into_a_terminal_and_detaches(agentd, rootfs):
    """agentctl attach to a run -d -t container: its output from now on (not
    its past), what is typed reaches its terminal, the detach keys leave it
    running (Docker's attach)."""
    name = uname("att")
    r = ctl(agentd, "run", "-d", "-t", "--name", name, "--rootfs", rootfs, "--", "sh", "-c",
            'echo before-attach; while read x; do echo "line=$x"; done')
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: "before-attach" in logs(agentd, name), 60, "its first output in the log")
        p, master = on_terminal(["--socket", agentd.sock, "attach", name])
        seen = bytearray()

        def echoed():
            # what the attach prints so far: the detach keys go only after the echo came back
            # on this stream (in the log first, it reaches agentd's next read of it a moment later)
            if select.select([p.stdout], [], [], 0.1)[0]:
                seen.extend(os.read(p.stdout.fileno(), 65536))
            return b"line=hello" in seen

        try:
            # typed at once: agentctl forwards it once attached, and the echo comes back on this stream
            os.write(master, b"hello\r")
            wait_for(echoed, 60, "the typed line's echo on the attach stream")
            os.write(master, b"\x10\x11")
            out, err = p.communicate(timeout=60)
        finally:
            os.close(master)
        assert p.returncode == 0, err
        assert b"read escape sequence" in err, err
        text = (bytes(seen) + out).decode(errors="replace").replace("\r", "")
        assert "line=hello" in text and "before-attach" not in text, text
        assert state(agentd, name) == "running"
    finally:
        ctl(agentd, "rm", "-f", name)

