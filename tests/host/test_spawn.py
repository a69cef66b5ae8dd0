"""Containers spawned through a real launcher on this machine's cgroup2 mount:
cgroup from the first instruction, namespaces, /proc, mounts, rootfs with
pivot_root, user switch, capabilities, no_new_privs, seccomp, exit statuses,
launch failures, logs."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import uuid
from typing import NamedTuple

import pytest

from agent.launcher import LaunchError, LauncherClient, ExitRecord
from runtime.cgroupfs import find_mount
from helpers import kill_tree, wait_exit, zombie_children

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "/bin/busybox"


class Env(NamedTuple):
    client: LauncherClient
    base: str
    state_dir: str
    launcher_pid: int


class Result(NamedTuple):
    id: str
    pid: int
    exit: ExitRecord
    out: str
    err: str


def stop_launcher(client: LauncherClient, pid: int) -> None:
    try:
        client.shutdown()
    except Exception:
        pass
    client.close()
    for _ in range(500):
        if not os.path.exists(f"/proc/{pid}"):
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


def new_cgroup(env: Env) -> tuple[str, str]:
    cid = "t" + uuid.uuid4().hex[:11]
    cg = os.path.join(env.base, "containers", cid)
    os.mkdir(cg)
    return cid, cg


def make_spec(ctx: Env, cid: str, cg: str, argv, **kw) -> dict:
    spec = {"argv": argv, "env": {"PATH": PATH}, "cgroup": cg,
            "stdout": os.path.join(ctx.state_dir, cid + ".out"),
            "stderr": os.path.join(ctx.state_dir, cid + ".err")}
    spec.update(kw)
    return spec


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def run(ctx: Env, /, argv, **kw) -> Result:
    cid, cg = new_cgroup(ctx)
    spec = make_spec(ctx, cid, cg, argv, **kw)
    pid = ctx.client.spawn(cid, spec)
    rec = wait_exit(ctx.client, cid, pid)
    assert ctx.client.ack(cid, pid) is True
    kill_tree(cg)
    return Result(cid, pid, rec, read(spec["stdout"]), read(spec["stderr"]))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}")
    os.mkdir(base)
    os.mkdir(os.path.join(base, "containers"))
    state_dir = str(tmp_path_factory.mktemp("launcher"))
    client = LauncherClient.connect_or_start(state_dir, os.path.join(base, "launcher"))
    lpid = client.ping()["pid"]
    try:
        yield Env(client, base, state_dir, lpid)
    finally:
        stop_launcher(client, lpid)
        kill_tree(base)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in ("sh", "ls", "cat", "hostname", "touch", "id", "mount", "echo", "ip"):
        os.symlink("busybox", root / "bin" / applet)
    return str(root)


# ------------------------------------------------------------------ cgroup and namespaces

def test_first_instruction_runs_in_the_container_cgroup(env):
    r = run(env, ["cat", "/proc/self/cgroup"])
    rel = os.path.relpath(os.path.join(env.base, "containers", r.id), find_mount())
    assert f"0::/{rel}\n" in r.out
    assert r.exit.exit_code == 0 and r.exit.signal is None


def _in_child(fork, work) -> tuple[bool, str]:
    """fork() -> (pid, joined); the child returns work()'s text through a pipe."""
    r, w = os.pipe()
    pid, joined = fork()
    if pid == 0:
        try:
            os.write(w, work().encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    os.waitpid(pid, 0)
    return joined, text


def _single_threaded(work) -> str:
    """work()'s text, computed in a forked child of this (multi-threaded:
    the launcher client's reader) pytest process: single-threaded, as the
    launcher is, so fork_in_cgroup may use clone3 there."""
    _, text = _in_child(lambda: (os.fork(), None), work)
    return text


def test_launch_child_is_born_in_its_cgroup_without_migrating(env):
    """clone3(CLONE_INTO_CGROUP) on this kernel (>= 5.7), from a single-threaded
    process: the child starts in the cgroup; no write to cgroup.procs (a
    migration waits for an RCU grace period)."""
    from runtime import spawn
    _cid, cg = new_cgroup(env)

    def launcher_like() -> str:
        mine = read("/proc/self/cgroup")
        joined, seen = _in_child(lambda: spawn.fork_in_cgroup(cg), lambda: read("/proc/self/cgroup"))
        return repr((joined, seen, read("/proc/self/cgroup") == mine))

    try:
        joined, seen, parent_stayed = eval(_single_threaded(launcher_like))
    finally:
        kill_tree(cg)
    assert joined is True
    assert f"0::/{os.path.relpath(cg, find_mount())}\n" in seen
    assert parent_stayed                                  # the parent stayed where it was


def test_a_multi_threaded_caller_forks_instead_of_clone3(env):
    """clone3 is a raw syscall: glibc's fork handlers do not run, so a child
    of a process with other threads could inherit a malloc or stdio lock
    held forever. With another thread alive (this pytest process has the
    launcher client's reader), fork_in_cgroup forks and the child joins the
    cgroup itself; 200 tries while a thread churns the allocator all finish."""
    import threading
    from runtime import spawn
    _cid, cg = new_cgroup(env)
    stop = threading.Event()
    blob = os.urandom(1 << 18)

    def churn():
        import zlib
        while not stop.is_set():
            zlib.decompress(zlib.compress(blob, 1))

    t = threading.Thread(target=churn, daemon=True)
    t.start()
    try:
        results = set()
        for _ in range(200):
            joined, seen = _in_child(lambda: spawn.fork_in_cgroup(cg),
                                     lambda: str(len([bytes(100000) for _ in range(8)])))
            results.add((joined, seen))
    finally:
        stop.set()
        t.join()
        kill_tree(cg)
    assert results == {(False, "8")}


def test_launch_child_falls_back_to_fork_where_clone3_is_refused(env):
    """Under a seccomp filter answering clone3 with ENOSYS (Docker's profile, and
    ours for containers), fork_in_cgroup forks and the child must join itself."""
    from runtime import seccomp, spawn
    _cid, cg = new_cgroup(env)

    def agent_under_such_a_filter() -> str:
        seccomp.install()
        joined, seen = _in_child(lambda: spawn.fork_in_cgroup(cg), lambda: read("/proc/self/cgroup"))
        again, _ = _in_child(lambda: spawn.fork_in_cgroup(cg), lambda: "")
        return f"{joined} {again} {seen}"

    try:
        _, report = _in_child(lambda: (os.fork(), None), agent_under_such_a_filter)
    finally:
        kill_tree(cg)
    mine = read("/proc/self/cgroup")
    assert report == f"False False {mine}"   # forked where its parent was; clone3 not retried


@pytest.mark.parametrize("where, reason", [("missing", "No such file or directory"),
                                           ("not-a-cgroup", "Bad file descriptor")])
def test_launch_child_refused_by_its_cgroup_is_one_line(tmp_path, where, reason):
    from runtime.spawn import CgroupRefused, fork_in_cgroup
    path = str(tmp_path / "nope") if where == "missing" else str(tmp_path)

    def launcher_like() -> str:       # clone3 is tried only when single-threaded
        try:
            pid, _ = fork_in_cgroup(path)
        except CgroupRefused as e:
            return e.strerror
        if pid == 0:
            os._exit(0)
        return "forked"

    assert _single_threaded(launcher_like) == f"join cgroup {path}: {reason}"


def test_pid1_private_proc_and_hostname(env):
    r = run(env, ["sh", "-c", "echo $$; hostname; ls /proc"], hostname="box-1")
    lines = r.out.split()
    assert lines[0] == "1"
    assert lines[1] == "box-1"
    pids = sorted(int(x) for x in lines[2:] if x.isdigit())
    assert pids[0] == 1 and len(pids) <= 2        # sh itself and its ls
    assert os.uname().nodename != "box-1"


def test_docker_default_capabilities_no_new_privs_and_seccomp(env):
    r = run(env, ["grep", "-E", "^(CapEff|CapPrm|CapBnd|CapInh|CapAmb|NoNewPrivs|Seccomp):",
                  "/proc/self/status"])
    st = dict(line.split(":\t") for line in r.out.splitlines())
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(st[field], 16) == 0xA80425FB, field
        assert not int(st[field], 16) >> 21 & 1       # no CAP_SYS_ADMIN
    assert int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0
    assert st["NoNewPrivs"] == "1"
    assert st["Seccomp"] == "2"


def test_explicit_capability_list(env):
    r = run(env, ["grep", "^CapEff:", "/proc/self/status"], capabilities=["CHOWN", "KILL"])
    assert int(r.out.split()[1], 16) == (1 << 0) | (1 << 5)


def test_uid_gid_switch_drops_capabilities(env):
    r = run(env, ["sh", "-c", "id -u; id -g; id -G; grep ^CapEff: /proc/self/status"],
            uid=65534, gid=65534)
    lines = r.out.splitlines()
    assert lines[:3] == ["65534", "65534", "65534"]
    assert int(lines[3].split()[1], 16) == 0


def test_no_new_privs_and_seccomp_can_be_turned_off(env):
    r = run(env, ["grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status"],
            no_new_privs=False, seccomp=False)
    assert r.out.split() == ["NoNewPrivs:", "0", "Seccomp:", "0"]


def test_network_none_has_only_loopback_and_it_is_up(env):
    r = run(env, ["sh", "-c", f"cat /proc/net/dev; {BUSYBOX} ip link show lo"], network="none")
    ifaces = [line.split(":")[0].strip() for line in r.out.splitlines() if ":" in line
              and not line.startswith((" face", "Inter", "1:", "    link"))]
    assert ifaces == ["lo"]
    assert "<LOOPBACK,UP" in r.out


def test_network_host_sees_host_interfaces(env):
    r = run(env, ["cat", "/proc/net/dev"])
    with open("/proc/net/dev") as f:
        assert len(r.out.splitlines()) == len(f.read().splitlines())


# ------------------------------------------------------------------ seccomp in effect

SYSCALL_PROBE = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *a):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    return 0 if r >= 0 else ctypes.get_errno()
print("keyctl", sc(250, 0, -3, 0))
print("personality", sc(135, 0x0400000))
print("clone3", sc(435, 0, 0))
print("unshare_user", sc(272, 0x10000000))
"""


def probe(env, seccomp_on: bool) -> dict[str, int]:
    r = run(env, [os.path.realpath(sys.executable), "-c", SYSCALL_PROBE], seccomp=seccomp_on)
    assert r.exit.exit_code == 0, r.err
    return {k: int(v) for k, v in (line.split() for line in r.out.splitlines())}


def test_seccomp_filter_refuses_what_capabilities_alone_allow(env):
    import errno
    with_filter, without = probe(env, True), probe(env, False)
    assert with_filter == {"keyctl": errno.EPERM, "personality": errno.EPERM,
                           "clone3": errno.ENOSYS, "unshare_user": errno.EPERM}
    # the control: the same calls, same capabilities, no filter: not refused
    assert without["keyctl"] != errno.EPERM
    assert without["personality"] == 0
    assert without["clone3"] == errno.EINVAL
    assert without["unshare_user"] == 0


IO_URING_PROBE = r"""
import ctypes, ctypes.util
libc = ctypes.CDLL(None, use_errno=True)
class Params(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_uint8 * 120)]      # struct io_uring_params
p = Params()
ctypes.set_errno(0)
fd = libc.syscall(ctypes.c_long(425), ctypes.c_uint(4), ctypes.byref(p))
print(fd if fd >= 0 else -ctypes.get_errno())
"""


def test_seccomp_refuses_io_uring_setup(env):
    import errno
    py = os.path.realpath(sys.executable)
    refused = run(env, [py, "-c", IO_URING_PROBE])
    # the control: the same call without the filter gets a ring (a descriptor)
    allowed = run(env, [py, "-c", IO_URING_PROBE], seccomp=False)
    assert refused.exit.exit_code == 0 and allowed.exit.exit_code == 0, refused.err + allowed.err
    assert int(refused.out) == -errno.EPERM
    assert int(allowed.out) >= 0, allowed.out


def test_reboot_swapoff_unshare_fail_with_eperm(env):
    r = run(env, ["sh", "-c", f"{BUSYBOX} reboot -f; {BUSYBOX} swapoff /nonexistent; unshare -U true"])
    assert "reboot" in r.err and r.err.count("Operation not permitted") == 3, r.err


# ------------------------------------------------------------------ mounts and rootfs

def host_mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


def test_bind_mounts_ro_and_rw_and_nothing_leaks_to_the_host(env, tmp_path):
    ro_src, rw_src = tmp_path / "ro", tmp_path / "rw"
    ro_dst, rw_dst = tmp_path / "ro-dst", tmp_path / "rw-dst"
    for d in (ro_src, rw_src, ro_dst, rw_dst):
        d.mkdir()
    (ro_src / "f").write_text("from host\n")
    r = run(env, ["sh", "-c", f"cat {ro_dst}/f; echo x > {ro_dst}/new; echo ro=$?; "
                  f"echo y > {rw_dst}/new; echo rw=$?"],
            mounts=[{"src": str(ro_src), "dst": str(ro_dst), "ro": True},
                    {"src": str(rw_src), "dst": str(rw_dst), "ro": False}])
    lines = r.out.splitlines()
    assert lines[0] == "from host" and lines[1] != "ro=0" and lines[2] == "rw=0"
    assert "Read-only file system" in r.err
    assert not (ro_src / "new").exists()
    assert (rw_src / "new").read_text() == "y\n"
    assert not (rw_dst / "new").exists()             # the host's view never had the mount
    assert str(ro_dst) not in host_mountinfo()


def test_rootfs_pivot_root_dev_sys_proc(env, rootfs, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("hello\n")
    script = ("ls /; echo --; ls /dev; echo --; hostname; cat /data/f; "
              "touch /sys/x; echo sys=$?; touch /data/g; echo data=$?; "
              "echo hi > /dev/null; echo null=$?; cat /proc/1/cmdline; echo")
    r = run(env, ["sh", "-c", script], rootfs=rootfs, hostname="inside",
            env={"PATH": "/bin"}, mounts=[{"src": str(data), "dst": "/data", "ro": True}])
    top, dev, rest = r.out.split("--\n")
    assert top.split() == ["bin", "data", "dev", "proc", "sys"]
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm"} <= set(dev.split())
    lines = rest.splitlines()
    assert lines[:3] == ["inside", "hello", "sys=1"]
    assert lines[3] == "data=1" and lines[4] == "null=0"
    assert lines[5].startswith("sh")
    assert rootfs not in host_mountinfo()


def test_rootfs_mount_destination_through_a_symlink_stays_in_the_rootfs(env, rootfs, tmp_path):
    # destinations are resolved inside the rootfs (RESOLVE_IN_ROOT): an
    # absolute or ../ symlink means the container's own /etc, never the host's
    (tmp_path / "f").write_text("volume\n")
    os.symlink("/etc", os.path.join(rootfs, "escape"))
    os.symlink("../../../../../../../../etc", os.path.join(rootfs, "dotdot"))
    os.mkdir(os.path.join(rootfs, "etc"))
    try:
        r = run(env, ["sh", "-c", "cat /etc/sub/f /etc/sub2/f; ls /etc"], rootfs=rootfs, env={"PATH": "/bin"},
                mounts=[{"src": str(tmp_path), "dst": "/escape/sub", "ro": True},
                        {"src": str(tmp_path), "dst": "/dotdot/sub2", "ro": True}])
        assert r.out.split() == ["volume", "volume", "sub", "sub2"], r.err
        assert not os.path.exists("/etc/sub") and not os.path.exists("/etc/sub2")
        assert sorted(os.listdir(os.path.join(rootfs, "etc"))) == ["sub", "sub2"]   # mount points made inside
    finally:
        os.unlink(os.path.join(rootfs, "escape"))
        os.unlink(os.path.join(rootfs, "dotdot"))
        shutil.rmtree(os.path.join(rootfs, "etc"))


# ------------------------------------------------------------------ exit statuses

def test_exit_code_is_reported(env):
    r = run(env, ["sh", "-c", "exit 7"])
    assert (r.exit.exit_code, r.exit.signal) == (7, None)


def test_signal_is_reported_and_event_pushed(env):
    cid, cg = new_cgroup(env)
    pid = env.client.spawn(cid, make_spec(env, cid, cg, ["sleep", "1000"]))
    assert env.client.running()[cid] == pid
    env.client.signal(pid, signal.SIGKILL)
    rec = wait_exit(env.client, cid, pid)
    assert (rec.exit_code, rec.signal) == (128 + 9, 9)
    assert cid not in env.client.running()
    env.client.ack(cid, pid)
    kill_tree(cg)


def test_signal_to_unknown_pid_is_refused(env):
    with pytest.raises(ProcessLookupError, match="no running container"):
        env.client.signal(os.getpid(), 0)


# ------------------------------------------------------------------ launch failures

def assert_nothing_left(env, cid, cg):
    assert cid not in env.client.running()
    assert all(r.id != cid for r in env.client.exits())
    with open(os.path.join(cg, "cgroup.procs")) as f:
        assert f.read() == ""
    assert zombie_children(env.launcher_pid) == []


@pytest.mark.parametrize("argv,kw,message", [
    (["/bin/nope"], {}, "exec /bin/nope: No such file or directory"),
    (["nope-cga"], {}, "exec nope-cga: executable file not found in $PATH"),
    (["/etc/passwd"], {}, "exec /etc/passwd: Permission denied"),
    (["true"], {"cwd": "/nonexistent"}, "cwd /nonexistent: No such file or directory"),
    (["true"], {"mounts": [{"src": "/nonexistent-src", "dst": "/tmp", "ro": False}]},
     "bind mount /nonexistent-src on /tmp: No such file or directory"),
    (["true"], {"rootfs": "/nonexistent-root"}, "rootfs /nonexistent-root: not a directory"),
])
def test_launch_failure_is_one_clear_line_and_leaves_nothing(env, argv, kw, message):
    cid, cg = new_cgroup(env)
    with pytest.raises(LaunchError) as e:
        env.client.spawn(cid, make_spec(env, cid, cg, argv, **kw))
    assert str(e.value) == message
    assert_nothing_left(env, cid, cg)
    kill_tree(cg)


def test_missing_cgroup_is_refused_before_forking(env):
    cid = "t" + uuid.uuid4().hex[:11]
    cg = os.path.join(env.base, "containers", cid)
    with pytest.raises(LaunchError, match="no such cgroup"):
        env.client.spawn(cid, make_spec(env, cid, cg, ["true"]))


def test_malformed_spec_names_the_field(env):
    cid, cg = new_cgroup(env)
    with pytest.raises(ValueError, match=r"^spec\.network: accepted: host, none$"):
        env.client.spawn(cid, make_spec(env, cid, cg, ["true"], network="bridge"))
    with pytest.raises(ValueError, match=r"^id: "):
        env.client.spawn("../x", make_spec(env, cid, cg, ["true"]))
    kill_tree(cg)


def test_same_id_twice_is_refused_while_running(env):
    cid, cg = new_cgroup(env)
    spec = make_spec(env, cid, cg, ["sleep", "1000"])
    pid = env.client.spawn(cid, spec)
    with pytest.raises(LaunchError, match=f"already running with pid {pid}"):
        env.client.spawn(cid, spec)
    env.client.signal(pid, signal.SIGKILL)
    wait_exit(env.client, cid, pid)
    env.client.ack(cid, pid)
    kill_tree(cg)


# ------------------------------------------------------------------ logs

def test_stdout_and_stderr_go_to_their_files(env):
    r = run(env, ["sh", "-c", "echo to-out; echo to-err >&2"])
    assert r.out == "to-out\n" and r.err == "to-err\n"


def test_log_cap_rotates_to_dot_one(env):
    cid, cg = new_cgroup(env)
    log = os.path.join(env.state_dir, cid + ".log")
    script = "i=0; while [ $i -lt 300 ]; do echo line-$i-................................; i=$((i+1)); done"
    pid = env.client.spawn(cid, make_spec(env, cid, cg, ["sh", "-c", script], stdout=log, stderr=log,
                                          log_max_bytes=2048))
    wait_exit(env.client, cid, pid)
    env.client.ack(cid, pid)
    kill_tree(cg)
    cur, old = read(log), read(log + ".1")
    assert len(cur) <= 2048 and len(old) == 2048
    total = sum(len(f"line-{i}-................................\n") for i in range(300))
    assert total > 2 * 2048
    assert (old + cur).endswith("line-299-................................\n")
    assert "line-0-" not in old + cur


# ------------------------------------------------------------------ kernel files out of reach

@pytest.mark.parametrize("with_rootfs", [False, True])
def test_proc_sys_read_only_kcore_masked_no_cgroupfs(env, rootfs, with_rootfs):
    sh = "/bin/sh" if with_rootfs else "sh"
    script = ("echo 1 > /proc/sys/kernel/ns_last_pid; echo sys=$?; "
              "cat /proc/kcore | wc -c; ls /sys/fs/cgroup | wc -l; "
              f"echo $$ > {env.base}/cgroup.procs; echo move=$?; cat /proc/self/cgroup")
    kw = {"rootfs": rootfs, "env": {"PATH": "/bin"}} if with_rootfs else {}
    if with_rootfs:
        for applet in ("wc",):
            if not os.path.exists(os.path.join(rootfs, "bin", applet)):
                os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    r = run(env, [sh, "-c", script], **kw)
    lines = r.out.split()
    assert lines[0] != "sys=0" and "Read-only file system" in r.err
    assert lines[1] == "0"                    # /proc/kcore is /dev/null
    assert lines[3] != "move=0"
    if with_rootfs:
        # its own cgroup namespace: its cgroup (only) at /sys/fs/cgroup, and "/"
        # in /proc/self/cgroup (test_cgroup_namespace_* below)
        assert lines[2] != "0" and lines[-1] == "0::/"
    else:
        assert lines[2] == "0"                # no cgroupfs under /sys
        rel = os.path.relpath(os.path.join(env.base, "containers", r.id), find_mount())
        assert lines[-1] == f"0::/{rel}"      # still accounted where it belongs


SOCKET_PROBE = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
    s.sendall(b'{"seq": 1, "op": "ping"}\n')
    data = s.recv(4096)
except OSError:
    data = b""
print("answer" if data else "closed")
"""


def test_a_container_cannot_talk_to_the_launcher(env):
    # host root: the socket is reachable by path and the container is uid 0,
    # so the launcher itself refuses peers from another PID namespace
    sock = os.path.join(env.state_dir, "launcher.sock")
    r = run(env, [os.path.realpath(sys.executable), "-c", SOCKET_PROBE, sock])
    assert r.out == "closed\n", r.err
    assert env.client.ping()["pid"] == env.launcher_pid


def test_rootfs_container_cannot_use_a_device_node_it_creates(env, rootfs):
    # CAP_MKNOD is in Docker's set and cgroup v2 has no devices allowlist file:
    # the node can be made, but every writable mount is nodev
    for applet in ("mknod", "head", "wc", "mkdir"):
        if not os.path.lexists(os.path.join(rootfs, "bin", applet)):
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    st = os.stat(os.path.realpath(find_root_block_device()))
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    script = (f"mkdir -p /tmp; mknod /tmp/disk b {major} {minor}; echo made=$?; "
              f"mknod /dev/disk b {major} {minor}; echo made=$?; "
              "head -c 512 /tmp/disk | wc -c; head -c 512 /dev/disk | wc -c; "
              "head -c 4 /dev/zero | wc -c")
    try:
        r = run(env, ["sh", "-c", script], rootfs=rootfs, env={"PATH": "/bin"})
    finally:
        shutil.rmtree(os.path.join(rootfs, "tmp"), ignore_errors=True)
    assert r.out.split() == ["made=0", "made=0", "0", "0", "4"]
    assert r.err.count("Permission denied") == 2


def find_root_block_device() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/":
                source = fields[fields.index("-") + 2]
                if source.startswith("/dev/"):
                    return source
    pytest.skip("the root filesystem is not on a block device here")
