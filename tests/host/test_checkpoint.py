"""Checkpoint/restore on this host: the refusals, for real.

CRIU (Debian's 3.17) is installed here but `criu check` fails on this
host's kernel (6.18: vDSO layout), so every checkpoint of a container CRIU
could otherwise take is refused with that reason, in one line, and nothing
changes: the container keeps running with the same pid, no checkpoint is
left behind. What CRIU cannot take (the host network, the bridge network
with a user namespace, an idmapped root, a terminal, a unix socket, an
established TCP connection) is refused before CRIU runs. A restored
volume's staging (no CRIU needed) runs here too, raced. The dump and restore themselves run in the VM tier
(tests/vm/test_checkpoint_vm.py, kernel 6.1, where the check passes).
"""
from __future__ import annotations

import os
import pty
import shutil
import socket
import stat
import subprocess

import pytest

from agent.checkpoint import criu, refusals
from helpers import agentd_in_own_cgroup, ctl, one_line, uname
from test_agentctl import inspect


@pytest.fixture(scope="module")
def criu_here():
    st = criu.status()
    if st["version"] is None and "not installed" in (st["reason"] or ""):
        pytest.fail("criu is not installed: scripts/setup.sh installs the Debian package criu")
    print(f"criu here: {st}")
    return st


@pytest.fixture(scope="module")
def agentd(request):
    with agentd_in_own_cgroup("cga-ckpt-") as d:
        rootfs = os.path.join(d.top, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
        for applet in ("sh", "sleep"):
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        d.rootfs = rootfs
        d.state = os.path.join(d.top, "state")
        yield d


def test_criu_check_fails_here_and_says_why(criu_here):
    """The premise of the refusal tests below (the host kernel is 6.18)."""
    assert criu_here["ok"] is False, criu_here
    assert criu_here["reason"].startswith("criu check fails on this kernel (")
    assert "\n" not in criu_here["reason"]


def test_checkpoint_is_refused_in_one_line_and_changes_nothing(agentd, criu_here):
    name = uname("ck")
    r = ctl(agentd, "run", "-d", "--name", name, "--rootfs", agentd.rootfs, "--network", "none",
            "--userns", "host", "--",
            "sleep", "1000")
    assert r.returncode == 0, r.stderr
    before = inspect(agentd, name)
    r = ctl(agentd, "checkpoint", name)
    assert r.returncode == 1
    line = one_line(r)
    # the launcher ran `criu check` itself: the same reason, up to CRIU's first error line
    assert line.startswith(f"agentctl: error: checkpoint {name}: criu check fails on this kernel "
                           f"({os.uname().release}, criu {criu_here['version']}): Error (criu/")
    after = inspect(agentd, name)
    assert (after["state"], after["pid"]) == ("running", before["pid"])
    ckdir = os.path.join(agentd.state, "checkpoints")
    assert not os.path.exists(ckdir) or os.listdir(ckdir) == []   # no checkpoint, no .tmp- dir
    ls = ctl(agentd, "checkpoint", "ls", "--json")
    assert ls.returncode == 0 and '"' + name + '"' not in ls.stdout
    # it still stops normally: nothing held it for a checkpoint
    assert ctl(agentd, "rm", "-f", name).returncode == 0


def test_host_network_container_is_refused_before_criu(agentd):
    """Bridge networks and user namespaces are taken now (the VM tier restores them); a rootfs
    container on the host's network is not: its sockets are the host's."""
    name = uname("hn")
    r = ctl(agentd, "run", "-d", "--name", name, "--rootfs", agentd.rootfs, "--network", "host",
            "--userns", "host", "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = ctl(agentd, "checkpoint", name)
    assert r.returncode == 1
    line = one_line(r)
    assert f"checkpoint {name}: it is on the host's network" in line
    assert line.endswith(refusals.ACCEPTED), line
    assert inspect(agentd, name)["state"] == "running"
    ctl(agentd, "rm", "-f", name)


def test_bridge_container_passes_the_spec_refusals(agentd, criu_here):
    """A bridge container (the default network) is no longer refused for its spec: what stops
    it here is only CRIU's check on this kernel."""
    name = uname("br")
    r = ctl(agentd, "run", "-d", "--name", name, "--rootfs", agentd.rootfs, "--userns", "host", "--",
            "sleep", "1000")
    assert r.returncode == 0, r.stderr
    r = ctl(agentd, "checkpoint", name)
    assert r.returncode == 1
    assert one_line(r).startswith(f"agentctl: error: checkpoint {name}: criu check fails on this kernel (")
    assert inspect(agentd, name)["state"] == "running"
    ctl(agentd, "rm", "-f", name)


def test_default_container_owns_its_network_namespace_and_passes_the_refusals(agentd, criu_here):
    """The default container (`run --rootfs`: bridge network, user namespace): CRIU dumps a
    container in a user namespace only when that namespace owns all of its namespaces, so its
    network namespace is made inside its user namespace (agentd's root still configures it):
    owned by it, across a restart too. Nothing refuses it before CRIU (an idmapped root is
    idmapped again by the restore); on this kernel CRIU's own check does."""
    name = uname("df")
    r = ctl(agentd, "run", "-d", "--name", name, "--rootfs", agentd.rootfs, "--", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    before = inspect(agentd, name)
    for _ in range(2):
        pid = inspect(agentd, name)["pid"]
        with open(f"/proc/{pid}/uid_map") as f:
            assert f.read().split()[:2] != ["0", "0"]          # a user namespace of its own
        assert ns_owner(f"/proc/{pid}/ns/net") == os.stat(f"/proc/{pid}/ns/user").st_ino
        assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        assert ctl(agentd, "restart", name).returncode == 0
    r = ctl(agentd, "checkpoint", name)
    assert r.returncode == 1
    assert one_line(r).startswith(f"agentctl: error: checkpoint {name}: criu check fails on this kernel (")
    after = inspect(agentd, name)
    assert after["state"] == "running" and after["id"] == before["id"]
    ctl(agentd, "rm", "-f", name)


def ns_owner(path: str) -> int | None:
    from runtime import namespaces as ns
    fd = os.open(path, os.O_RDONLY)
    try:
        return ns.owner_inode(fd)
    finally:
        os.close(fd)


def test_userns_container_with_an_idmapped_root_passes_the_refusals(agentd, criu_here):
    """A user-namespace container off the bridge whose root the kernel idmapped (as this host's
    does on the rootfs's file system): CRIU keeps no idmap, so the restore idmaps the root again
    itself (the VM tier restores one); nothing refuses it before CRIU, whose check on this kernel
    does."""
    name = uname("un")
    r = ctl(agentd, "run", "-d", "--name", name, "--rootfs", agentd.rootfs, "--network", "none", "--",
            "sleep", "1000")
    assert r.returncode == 0, r.stderr
    before = inspect(agentd, name)
    idmap = (before.get("userns") or {}).get("idmap") or {}
    print(f"root of the user-namespace container here: {idmap.get('/')}")
    r = ctl(agentd, "checkpoint", name)
    assert r.returncode == 1
    assert one_line(r).startswith(f"agentctl: error: checkpoint {name}: criu check fails on this kernel ("), r
    after = inspect(agentd, name)
    assert (after["state"], after["pid"]) == ("running", before["pid"])
    ctl(agentd, "rm", "-f", name)


def test_host_root_container_is_refused_before_criu(agentd):
    name = uname("hr")
    assert ctl(agentd, "run", "-d", "--name", name, "--", "sleep", "1000").returncode == 0
    r = ctl(agentd, "checkpoint", name)
    assert r.returncode == 1
    assert "runs on the host's root file system" in one_line(r)
    assert inspect(agentd, name)["state"] == "running"
    ctl(agentd, "rm", "-f", name)


def test_restore_and_import_refusals_are_one_line(agentd, tmp_path):
    r = ctl(agentd, "restore", "nosuch")
    assert r.returncode == 1
    assert one_line(r) == ("agentctl: error: restore: no checkpoint named 'nosuch'; "
                           "see `agentctl checkpoint ls`")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar")
    r = ctl(agentd, "restore", "--import", str(junk))
    assert r.returncode == 1
    line = one_line(r)
    # CRIU fails its check here, which is said first; a host where it passes says the file is no export
    assert "criu check fails on this kernel" in line or "not a readable checkpoint export" in line
    r = ctl(agentd, "restore")
    assert r.returncode == 2 and "give the checkpoint NAME, or --import FILE" in one_line(r)
    r = ctl(agentd, "checkpoint", "rm", "nosuch")
    assert r.returncode == 1
    assert one_line(r) == "agentctl: error: checkpoint: no checkpoint named 'nosuch'; see `agentctl checkpoint ls`"
    r = ctl(agentd, "checkpoint", "nosuch")
    assert r.returncode == 1 and "no container named 'nosuch'" in one_line(r)


def test_a_terminal_in_the_container_is_refused_for_real():
    """A real process holding a pty (as `run -t` would give it)."""
    main, sub = pty.openpty()
    p = subprocess.Popen(["sleep", "1000"], stdin=sub, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        why = refusals.process_refusal("c1", [p.pid])
        assert why is not None and why.startswith(f"checkpoint c1: process {p.pid} holds a terminal (/dev/pts/")
    finally:
        p.kill()
        p.wait()
        os.close(main)
        os.close(sub)


def test_a_unix_socket_in_the_container_is_refused_for_real(tmp_path):
    path = str(tmp_path / "s")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    code = ("import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "print('ok', flush=True); time.sleep(1000)")
    p = subprocess.Popen([os.sys.executable, "-S", "-c", code, path], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ok"
        why = refusals.process_refusal("c2", [p.pid])
        assert why is not None and "holds a unix socket (socket:[" in why
        # the same process tree without the socket passes
        plain = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            assert refusals.process_refusal("c3", [plain.pid]) is None
        finally:
            plain.kill()
            plain.wait()
    finally:
        p.kill()
        p.wait()
        srv.close()


def test_an_established_tcp_connection_is_refused_for_real():
    """A real process holding a connected TCP socket (to a listener on 127.0.0.1 made here):
    refused in one line naming --tcp-established; a listening socket alone is not."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    code = ("import socket,sys,time; s=socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
            "print('ok', flush=True); time.sleep(1000)")
    p = subprocess.Popen([os.sys.executable, "-S", "-c", code, str(port)], stdout=subprocess.PIPE)
    lp = subprocess.Popen([os.sys.executable, "-S", "-c",
                           "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); "
                           "print('ok', flush=True); time.sleep(1000)"], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ok"
        conn, _ = srv.accept()
        why = refusals.process_refusal("c4", [p.pid])
        assert why is not None and "\n" not in why
        assert why.startswith(f"checkpoint c4: process {p.pid} holds an established TCP connection (socket:[")
        assert f") to 127.0.0.1:{port}; pass --tcp-established to take it along" in why
        assert refusals.process_refusal("c4", [p.pid], tcp_established=True) is None   # the flag takes it along
        assert lp.stdout.readline().strip() == b"ok"
        assert refusals.process_refusal("c5", [lp.pid]) is None
        conn.close()
    finally:
        for q in (p, lp):
            q.kill()
            q.wait()
        srv.close()


FLIP = """
import os, sys
src, real = sys.argv[1], sys.argv[2]
i = 0
while True:
    t = src + ".flip%d" % (i % 2)
    try:
        os.unlink(t)
    except FileNotFoundError:
        pass
    os.symlink("/etc" if i % 2 else real, t)
    os.replace(t, src)
    i += 1
"""


def test_a_restored_volume_is_staged_from_what_was_checked_race(tmp_path):
    """The restore hands CRIU a volume's source as a staged mount (agent/checkpoint/volumes.py):
    opened once, checked as what was opened, cloned from that descriptor. A host user flips
    the source between a symlink to a plain directory and one to /etc while it is staged,
    100 times: every try is either refused naming /etc or stages the plain directory; /etc
    is never staged (a path checked and then given by name could be swapped in between)."""
    from agent.checkpoint import volumes
    real = tmp_path / "real"
    real.mkdir()
    (real / "marker").write_text("the volume")
    src = tmp_path / "src"
    src.symlink_to(real)
    d = tmp_path / "ckpt"
    d.mkdir()
    prot = {"state_dir": str(tmp_path / "state"), "socket": str(tmp_path / "state" / "agent.sock")}
    flipper = subprocess.Popen([os.sys.executable, "-S", "-c", FLIP, str(src), str(real)])
    staged = refused = wins = 0
    try:
        for _ in range(100):
            try:
                out = volumes.stage(str(d), {"/data": "v0"}, [{"src": str(src), "dst": "/data"}], prot, False)
            except volumes.VolumeError as e:
                assert "refused: /etc is /etc or below it" in str(e), e
                refused += 1
                continue
            try:
                if os.path.exists(os.path.join(out["v0"], "marker")):
                    staged += 1
                else:
                    wins += 1
            finally:
                volumes.unstage(str(d))
    finally:
        flipper.kill()
        flipper.wait()
    print(f"volume staging race: {staged} staged, {refused} refused, {wins} wins")
    assert wins == 0
    assert staged + refused == 100 and not os.path.exists(volumes.stage_dir(str(d)))


def test_a_staged_volume_keeps_its_flags_and_is_unstaged(tmp_path):
    """What CRIU binds is the checked tree with the volume's flags (ro, nosuid, nodev, noexec),
    detached again after the restore."""
    from agent.checkpoint import volumes
    src = tmp_path / "vol"
    src.mkdir()
    d = tmp_path / "ckpt"
    d.mkdir()
    (src / "data-file").write_text("kept")
    spec = [{"src": str(src), "dst": "/data", "ro": True, "noexec": True}]
    out = volumes.stage(str(d), {"/data": "v0"}, spec, {}, False)
    try:
        with open("/proc/self/mountinfo") as f:
            line = next(line for line in f if line.split()[4] == out["v0"])
        opts = set(line.split()[5].split(","))
        assert {"ro", "nosuid", "nodev", "noexec"} <= opts, line
        # under /run, searchable by a restored user namespace's root (CRIU opens it from there)
        top = volumes.stage_dir(str(d))
        assert os.path.dirname(top) == "/run" and stat.S_IMODE(os.stat(top).st_mode) == 0o711
        # staged again over what a restore that died left (a writable volume): detached first,
        # never removed through, the volume's files kept
        volumes.unstage(str(d))
        volumes.stage(str(d), {"/data": "v0"}, [dict(spec[0], ro=False)], {}, False)
        out = volumes.stage(str(d), {"/data": "v0"}, [dict(spec[0], ro=False)], {}, False)
        assert (src / "data-file").read_text() == "kept"
    finally:
        volumes.unstage(str(d))
    with open("/proc/self/mountinfo") as f:
        assert out["v0"] not in f.read()
    assert not os.path.exists(volumes.stage_dir(str(d)))
