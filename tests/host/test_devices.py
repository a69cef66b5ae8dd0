"""The device allow-list, for real: a BPF_PROG_TYPE_CGROUP_DEVICE program on a
container's cgroup, against a real loop device holding a known first block.

The attack: a container process (root, CAP_MKNOD as in Docker's default set)
makes a node for the host's disk, or finds one, in a place without nodev
(a volume taken from under the host's /dev, or the host's own /dev for a
container on the host root) and reads the disk. Each test shows the attack
working on a cgroup without the program, and EPERM with it; /dev/null keeps
working; --device grants exactly the one disk.
"""
from __future__ import annotations

import os
import stat
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid

import pytest

from runtime import devfilter
from runtime import seccomp
from helpers import Agentd, populated, wait_for
from test_spawn import env, make_spec, new_cgroup, read, run, wait_exit   # noqa: F401 (fixture)

MAGIC = b"CGA-DISK-MAGIC-0123"
EPERM = "Operation not permitted"
APPLETS = ("sh", "mknod", "head", "cat", "echo", "mkdir", "sleep", "true", "test", "wc", "stat")


@pytest.fixture(scope="module")
def loopdev(tmp_path_factory):
    """A real loop device whose first bytes are MAGIC: (path, major, minor)."""
    if not shutil.which("losetup"):
        pytest.skip("losetup missing (apt-get install mount)")
    img = tmp_path_factory.mktemp("disk") / "disk.img"
    with open(img, "wb") as f:
        f.write(MAGIC + b"\0" * (1 << 20))
    r = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device here: {r.stderr.strip()}")
    dev = r.stdout.strip()
    st = os.stat(dev)
    try:
        yield dev, os.major(st.st_rdev), os.minor(st.st_rdev)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    root = tmp_path_factory.mktemp("devroot")
    (root / "bin").mkdir()
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", root / "bin" / applet)
    return str(root)


@pytest.fixture
def devdir():
    """A directory on the host's /dev (devtmpfs, not nodev): a volume from
    there is bound without nodev, so nodes in it work unless the filter says no."""
    path = f"/dev/cga-test-{uuid.uuid4().hex[:10]}"
    os.mkdir(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def eperm(err: str, path: str) -> bool:
    """A line of err says opening/making `path` failed with EPERM (busybox and
    coreutils word it differently)."""
    return any(path in line and EPERM in line for line in err.splitlines())


def attack_script(major: int, minor: int, placed: str = "/scratch/placed") -> str:
    return (f"mknod /scratch/own b {major} {minor}; echo mknod=$?; "
            f"head -c {len(MAGIC)} /scratch/own; echo; "
            f"head -c {len(MAGIC)} {placed}; echo; "
            "echo hi > /dev/null && echo null=ok; head -c 4 /dev/zero | wc -c")


# ------------------------------------------------------------------ runtime level (launcher)


def test_rootfs_container_reads_the_host_disk_without_the_filter_and_gets_eperm_with_it(
        env, rootfs, loopdev, devdir):
    dev, major, minor = loopdev
    os.mknod(os.path.join(devdir, "placed"), 0o600 | 0o060000, os.makedev(major, minor))   # S_IFBLK
    # a volume from under /dev is a sensitive bind: the operator allowed it (the worst case for nodev)
    kw = dict(rootfs=rootfs, env={"PATH": "/bin"}, mounts=[{"src": devdir, "dst": "/scratch"}],
              allow_sensitive_binds=True)

    # without the program: the attack works (nodev does not cover a volume from /dev)
    r = run(env, ["sh", "-c", attack_script(major, minor)], **kw)
    lines = r.out.splitlines()
    assert lines[:3] == ["mknod=0", MAGIC.decode(), MAGIC.decode()], (r.out, r.err)
    os.unlink(os.path.join(devdir, "own"))

    # with it: mknod refused, the node placed from outside refused on open
    cid, cg = new_cgroup(env)
    prog_id, new = devfilter.install(cg)
    assert new and devfilter.attached(cg) == [prog_id]
    spec = make_spec(env, cid, cg, ["sh", "-c", attack_script(major, minor)], **kw)
    pid = env.client.spawn(cid, spec)
    wait_exit(env.client, cid, pid)
    out, err = read(spec["stdout"]), read(spec["stderr"])
    assert out.splitlines() == ["mknod=1", "", "", "null=ok", "4"], (out, err)
    assert eperm(err, "/scratch/own") and eperm(err, "/scratch/placed")
    assert not os.path.exists(os.path.join(devdir, "own"))


def test_host_root_container_cannot_open_the_hosts_disk_with_the_filter(env, loopdev):
    dev, major, minor = loopdev
    script = f"head -c {len(MAGIC)} {dev}; echo; echo hi > /dev/null && echo null=ok"
    r = run(env, ["sh", "-c", script])
    assert r.out.splitlines() == [MAGIC.decode(), "null=ok"], r.err      # today, without it

    cid, cg = new_cgroup(env)
    devfilter.install(cg)
    spec = make_spec(env, cid, cg, ["sh", "-c", script])
    pid = env.client.spawn(cid, spec)
    wait_exit(env.client, cid, pid)
    assert read(spec["stdout"]).splitlines() == ["", "null=ok"]
    assert eperm(read(spec["stderr"]), dev)


def test_granted_device_is_bound_and_allowed_and_nothing_else(env, rootfs, loopdev):
    dev, major, minor = loopdev
    cid, cg = new_cgroup(env)
    devfilter.install(cg, devfilter.DEFAULT_RULES + (devfilter.Rule("b", major, minor, "rw"),))
    script = (f"head -c {len(MAGIC)} /dev/xvdc; echo; mknod /tmp/again b {major} {minor}; echo mknod=$?; "
              "head -c 1 /dev/null; echo null=$?")
    os.makedirs(os.path.join(rootfs, "tmp"), exist_ok=True)
    spec = make_spec(env, cid, cg, ["sh", "-c", script], rootfs=rootfs, env={"PATH": "/bin"},
                     devices=[{"src": dev, "dst": "/dev/xvdc", "type": "b", "major": major, "minor": minor},
                              {"src": "/dev/null", "dst": "/dev/null", "type": "c", "major": 1, "minor": 3}])
    pid = env.client.spawn(cid, spec)
    wait_exit(env.client, cid, pid)
    out, err = read(spec["stdout"]), read(spec["stderr"])
    assert out.splitlines() == [MAGIC.decode(), "mknod=1", "null=0"], (out, err)   # rw granted, not m
    assert eperm(err, "/tmp/again")


def test_a_granted_path_that_changed_is_refused_in_one_line(env, rootfs, loopdev):
    dev, major, minor = loopdev
    cid, cg = new_cgroup(env)
    spec = make_spec(env, cid, cg, ["true"], rootfs=rootfs, env={"PATH": "/bin"},
                     devices=[{"src": dev, "dst": "/dev/xvdc", "type": "b", "major": major, "minor": minor + 1}])
    from agent.launcher import LaunchError
    with pytest.raises(LaunchError) as e:
        env.client.spawn(cid, spec)
    assert str(e.value) == f"device {dev}: is no longer b {major}:{minor + 1} as when it was granted"


def test_the_program_on_the_cgroup_is_the_generated_one_and_detaches(cgroup):
    rules = devfilter.DEFAULT_RULES + (devfilter.Rule("c", 10, 200, "rw"),)
    prog_id, new = devfilter.install(cgroup.path, rules)
    assert new
    assert devfilter.install(cgroup.path, rules) == (prog_id, False)     # one program per cgroup
    info = devfilter.program_info(prog_id)
    assert info["name"] == "cga_devices" and info["type"] == devfilter.BPF_PROG_TYPE_CGROUP_DEVICE
    assert info["insns"] == devfilter.compile_rules(rules)
    devfilter.detach(cgroup.path, prog_id)
    assert devfilter.attached(cgroup.path) == []


def test_without_cap_bpf_and_cap_sys_admin_it_is_one_line(cgroup):
    code = ("import sys\nfrom runtime import devfilter\n"
            "try:\n    devfilter.install(sys.argv[1])\nexcept devfilter.Unavailable as e:\n"
            "    print(e)\n    sys.exit(3)\n")
    r = subprocess.run(["setpriv", "--bounding-set", "-bpf,-sys_admin,-net_admin", "--inh-caps", "-all",
                        sys.executable, "-c", code, cgroup.path], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert r.returncode == 3, r.stderr
    assert r.stdout.count("\n") == 1 and EPERM in r.stdout and "CAP_BPF" in r.stdout, r.stdout
    assert devfilter.attached(cgroup.path) == []


# ------------------------------------------------------------------ through agentd


@pytest.fixture
def agentd(cgroup, tmp_path):
    a = Agentd(cgroup, tmp_path)
    yield a
    a.stop()


def logs(a: Agentd, info: dict, stream: str = "stdout") -> str:
    return read(os.path.join(a.state, "logs", info["id"], f"{stream}.log"))


def wait_settled(a: Agentd, name: str) -> dict:
    return wait_for(lambda: (lambda i: i if i["state"] == "exited" else None)(a.inspect(name)),
                    timeout=60, what=f"{name} to exit")


def test_agentctl_run_device_grants_one_disk_and_the_default_denies_it(agentd, rootfs, loopdev, tmp_path):
    dev, major, minor = loopdev
    agentd.start()
    denied = agentd.run("denied", f"head -c {len(MAGIC)} {dev}")            # host root: the host's /dev
    wait_settled(agentd, "denied")
    info = agentd.inspect("denied")
    assert info["device_filter"] == "on" and info["devices"] == []
    assert eperm(logs(agentd, info, "stderr"), dev)
    assert devfilter.attached(info["cgroup"])

    r = subprocess.run([sys.executable, "-m", "agent.cli", "--socket", agentd.sock, "run", "--name", "granted",
                        "--rootfs", rootfs, "--userns", "host", "--device", f"{dev}:/dev/xvdc:r", "--",
                        "sh", "-c", f"head -c {len(MAGIC)} /dev/xvdc; echo hi > /dev/xvdc; echo write=$?"],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines() == [MAGIC.decode() + "write=1"], (r.stdout, r.stderr)   # r only
    assert EPERM in r.stderr
    g = agentd.inspect("granted")
    assert g["devices"] == [f"{dev}:/dev/xvdc:r"] and g["device_filter"] == "on"


def test_a_granted_device_in_a_user_namespace_is_owned_as_on_the_host_and_opens(agentd, rootfs, loopdev):
    """The default user namespace: the host's node would show as nobody's
    there (devtmpfs cannot be idmapped) and its 0660 would keep the
    container's root out. The node made for the container is owned by the
    ids its host owner has inside (root:disk stays 0:6), so it reads as under
    --userns host; the filter still refuses the write (granted r only)."""
    dev, major, minor = loopdev
    st = os.stat(dev)
    assert st.st_mode & 0o006 == 0, "the loop device must not be world-accessible for this test"
    agentd.start()
    r = subprocess.run([sys.executable, "-m", "agent.cli", "--socket", agentd.sock, "run", "--name", "inns",
                        "--rootfs", rootfs, "--device", f"{dev}:/dev/xvdc:r", "--",
                        "sh", "-c", f"stat -c %u:%g:%a /dev/xvdc; head -c {len(MAGIC)} /dev/xvdc; echo; "
                                    "echo hi > /dev/xvdc; echo write=$?"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    info = agentd.inspect("inns")
    assert isinstance(info["userns"], dict) and info["userns"]["uid"][0][1] != 0, info["userns"]
    assert r.stdout.splitlines() == [f"{st.st_uid}:{st.st_gid}:{stat.S_IMODE(st.st_mode):o}", MAGIC.decode(),
                                     "write=1"], (r.stdout, r.stderr)
    assert EPERM in r.stderr                                   # the filter, not the mode


def test_default_rootfs_container_through_agentd_cannot_use_the_hosts_disk(cgroup, tmp_path, rootfs,
                                                                           loopdev, devdir):
    # the worst case for nodev: an operator allowed a volume from under /dev
    dev, major, minor = loopdev
    os.mknod(os.path.join(devdir, "placed"), 0o600 | 0o060000, os.makedev(major, minor))
    cfg = tmp_path / "agentd.toml"
    cfg.write_text("[security]\nallow_sensitive_binds = true\n")
    a = Agentd(cgroup, tmp_path, config=str(cfg))
    try:
        a.start()
        # userns host: in a user namespace mknod fails anyway (no CAP_MKNOD over the host's devices);
        # this is the case where only the device filter stands in the way
        c = a.run("tenant", attack_script(major, minor), rootfs=rootfs, env={"PATH": "/bin"},
                  volumes=[f"{devdir}:/scratch"], userns="host")
        wait_settled(a, "tenant")
        out, err = logs(a, c), logs(a, c, "stderr")
        assert out.splitlines() == ["mknod=1", "", "", "null=ok", "4"], (out, err)
        assert eperm(err, "/scratch/own") and eperm(err, "/scratch/placed")
        assert a.inspect("tenant")["device_filter"] == "on"
    finally:
        a.stop()


def test_filter_survives_agentd_sigkill_and_container_restarts(agentd, loopdev, tmp_path):
    dev, major, minor = loopdev
    go = tmp_path / "go"
    agentd.start()
    c = agentd.run("keeps", f"while [ ! -e {go} ]; do sleep 0.05; done; head -c 4 {dev}; exit 5",
                   restart="on-failure:1")
    before = devfilter.attached(c["cgroup"])
    assert len(before) == 1
    agentd.signal(signal.SIGKILL)
    agentd.wait()
    agentd.start()                                       # live restore: re-adopted, same cgroup
    again = agentd.inspect("keeps")
    assert again["pid"] == c["pid"] and again["device_filter"] == "on"
    go.write_text("")
    wait_for(lambda: agentd.inspect("keeps")["restart_count"] == 1 and agentd.inspect("keeps")["state"] == "exited",
             timeout=60, what="keeps to run twice and settle")
    assert devfilter.attached(c["cgroup"]) == before     # the restart reused the cgroup and its program
    assert sum(eperm(line, dev) for line in logs(agentd, c, "stderr").splitlines()) == 2
    assert not populated(c["cgroup"])


DENY_BPF = """
import os, sys
from runtime import devfilter, seccomp
# bpf(2) answers EPERM in this process tree (agentd, its launcher, the
# containers), as on a host whose policy refuses BPF to the agent
seccomp.install([seccomp.Insn(seccomp.LD_W_ABS, 0, 0, seccomp.OFF_NR),
                 seccomp.Insn(seccomp.JEQ_K, 0, 1, devfilter.SYS_BPF),
                 seccomp.Insn(seccomp.RET_K, 0, 0, seccomp.RET_ERRNO | 1),
                 seccomp.Insn(seccomp.RET_K, 0, 0, seccomp.RET_ALLOW)])
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
"""


def test_where_bpf_is_refused_the_container_runs_as_before_and_it_is_said(agentd, loopdev):
    dev, major, minor = loopdev
    agentd.args = [sys.executable, "-c", DENY_BPF] + agentd.args[1:]
    agentd.start()
    c = agentd.run("nofilter", f"echo hi > /dev/null && echo null=ok; head -c {len(MAGIC)} {dev}")
    wait_settled(agentd, "nofilter")
    info = agentd.inspect("nofilter")
    assert info["device_filter"].startswith("off: bpf(BPF_PROG_QUERY): Operation not permitted"), info
    assert "\n" not in info["device_filter"]
    assert logs(agentd, c) == "null=ok\n" + MAGIC.decode()      # as before: nothing stops it
    ev = [e for e in agentd.events() if e.get("event") == "container.device_filter_unavailable"]
    assert len(ev) == 1 and ev[0]["name"] == "nofilter" and EPERM in ev[0]["reason"]
    port = agentd.args[agentd.args.index("--metrics-listen") + 1].rsplit(":", 1)[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    got = [l for l in text.splitlines() if l.startswith("cgroup_agent_device_filter_unavailable_total ")]
    assert got and float(got[0].split()[1]) == 1, got
    assert devfilter.attached(info["cgroup"]) == []
