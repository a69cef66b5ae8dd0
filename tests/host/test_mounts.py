"""Mounts from descriptors, for real: the volume swap race against a real
agentd, flags on every nested mount, a real loop device behind a nested
mount, the cgroup namespace, and the rootfs rule (issue 11 items 2, 3, 5).

The launcher-level tests use test_spawn's launcher fixture; the race and the
rootfs refusals run against a real agentd (test_agentctl's start_agentd).
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

from agent.cli.client import ApiError, Client
from agent.launcher import LaunchError
from helpers import kill_tree
from runtime import mounts
from runtime import namespaces as ns
from runtime.cgroupfs import Cgroup, find_mount
from helpers import ctl, names, one_line, start_agentd, stop_agentd
from test_spawn import BUSYBOX, env, make_spec, new_cgroup, run  # noqa: F401  (env: the launcher fixture)

APPLETS = ("sh", "ls", "cat", "touch", "mknod", "head", "echo", "mkdir", "grep", "wc", "test", "[")
NOBODY = 65534


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", root / "bin" / applet)
    return str(root)


@pytest.fixture
def nested(tmp_path):
    """A volume source with a real tmpfs mounted (on the host) at sub/."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "top").write_text("top\n")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "cga-nested", str(src / "sub")], check=True)
    try:
        (src / "sub" / "inner").write_text("inner\n")
        yield src
    finally:
        subprocess.run(["umount", "-l", str(src / "sub")], check=False)


def _where(tmp_path, with_rootfs, rootfs):
    """(run() keyword arguments, the volume's destination): in a rootfs, /data;
    on the host's root, an existing host directory."""
    if with_rootfs:
        return {"rootfs": rootfs, "env": {"PATH": "/bin"}}, "/data"
    dst = tmp_path / "dst"
    dst.mkdir()
    return {}, str(dst)


# ------------------------------------------------------------------ item 3: flags reach every submount

@pytest.mark.parametrize("with_rootfs", [True, False], ids=["rootfs", "host-root"])
def test_ro_volume_is_read_only_on_its_nested_mounts_too(env, rootfs, nested, tmp_path, with_rootfs):
    kw, dst = _where(tmp_path, with_rootfs, rootfs)
    script = (f"cat {dst}/sub/inner; touch {dst}/new; echo top=$?; touch {dst}/sub/new; echo sub=$?; "
              f"grep ' {dst}/sub ' /proc/self/mountinfo")
    r = run(env, ["sh", "-c", script], mounts=[{"src": str(nested), "dst": dst, "ro": True}], **kw)
    lines = r.out.splitlines()
    assert lines[:3] == ["inner", "top=1", "sub=1"], (r.out, r.err)
    opts = lines[3].split()[5].split(",")
    assert {"ro", "nosuid", "nodev"} <= set(opts), lines[3]
    assert r.err.count("Read-only file system") == 2
    assert not (nested / "sub" / "new").exists() and not (nested / "new").exists()


def test_rw_volume_nested_mounts_are_nodev_and_nosuid(env, rootfs, nested):
    r = run(env, ["sh", "-c", "touch /data/sub/new; echo sub=$?; grep ' /data/sub ' /proc/self/mountinfo"],
            mounts=[{"src": str(nested), "dst": "/data", "ro": False}], rootfs=rootfs, env={"PATH": "/bin"})
    lines = r.out.splitlines()
    assert lines[0] == "sub=0", r.err
    opts = set(lines[1].split()[5].split(","))
    assert {"rw", "nosuid", "nodev"} <= opts, lines[1]
    assert (nested / "sub" / "new").exists()


@pytest.fixture
def loop_device(tmp_path):
    """A real loop device over a small file that starts with a marker."""
    if shutil.which("losetup") is None or not os.path.exists("/dev/loop-control"):
        print("SKIP: no losetup or /dev/loop-control on this host")
        pytest.skip("no losetup or /dev/loop-control on this host")
    marker = f"SECRET-LOOP-{uuid.uuid4().hex[:8]}"
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.write(marker.encode().ljust(1 << 20, b"\0"))
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if dev.returncode != 0:
        print(f"SKIP: losetup failed: {dev.stderr.strip()}")
        pytest.skip(f"losetup failed: {dev.stderr.strip()}")
    path = dev.stdout.strip()
    try:
        st = os.stat(path)
        with open(path, "rb") as f:                # the host can read it: the marker is there
            assert f.read(len(marker)).decode() == marker
        yield os.major(st.st_rdev), os.minor(st.st_rdev), marker
    finally:
        subprocess.run(["losetup", "-d", path], check=False)


@pytest.mark.parametrize("with_rootfs", [True, False], ids=["rootfs", "host-root"])
def test_device_node_on_a_nested_mount_of_a_volume_cannot_be_opened(env, rootfs, nested, loop_device, tmp_path,
                                                                    with_rootfs):
    # the attack of issue 11 item 3: CAP_MKNOD (Docker's set) makes a node for
    # a host block device on a nested mount of a volume, which had no nodev
    major, minor, marker = loop_device
    kw, dst = _where(tmp_path, with_rootfs, rootfs)
    script = (f"mknod {dst}/sub/disk b {major} {minor}; echo made=$?; "
              f"head -c {len(marker)} {dst}/sub/disk; echo; echo read=$?")
    r = run(env, ["sh", "-c", script], mounts=[{"src": str(nested), "dst": dst, "ro": False}], **kw)
    assert marker not in r.out, "the container read the host's block device"
    lines = r.out.split()
    assert lines[0] == "made=0", r.err                 # only nodev stands in the way
    assert "Permission denied" in r.err
    assert (nested / "sub" / "disk").exists()


def test_device_node_on_a_nested_mount_inside_the_rootfs_cannot_be_opened(env, rootfs, loop_device, tmp_path):
    # the rootfs is cloned with its submounts: nodev reaches them too
    major, minor, marker = loop_device
    root = tmp_path / "root"
    shutil.copytree(rootfs, root, symlinks=True)
    (root / "mnt").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "cga-rootfs-nested", str(root / "mnt")], check=True)
    try:
        r = run(env, ["sh", "-c", f"mknod /mnt/disk b {major} {minor}; echo made=$?; head -c {len(marker)} /mnt/disk"],
                rootfs=str(root), env={"PATH": "/bin"})
        assert marker not in r.out, "the container read the host's block device"
        assert r.out.split() == ["made=0"] and "Permission denied" in r.err, (r.out, r.err)
    finally:
        subprocess.run(["umount", "-l", str(root / "mnt")], check=False)


def test_a_file_can_be_a_volume(env, rootfs, tmp_path):
    f = tmp_path / "one-file"
    f.write_text("just me\n")
    r = run(env, ["sh", "-c", "cat /etc/one; ls /etc"], mounts=[{"src": str(f), "dst": "/etc/one", "ro": True}],
            rootfs=rootfs, env={"PATH": "/bin"})
    assert r.out.split() == ["just", "me", "one"], r.err


def test_remount_walk_fallback_reaches_every_submount(nested, tmp_path):
    # the Linux < 5.12 path (no mount_setattr), run here in a private mount
    # namespace: a walk of /proc/self/mountinfo remounting each submount
    target = tmp_path / "target"
    target.mkdir()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            ns.unshare(ns.CLONE_NEWNS)
            ns.mount(None, "/", None, ns.MS_REC | ns.MS_PRIVATE)
            ns.mount(str(nested), str(target), None, ns.MS_BIND | ns.MS_REC)
            mounts.remount_walk(str(target), ro=True, nodev=True)
            out = []
            for sub in ("new", "sub/new"):
                try:
                    open(target / sub, "w").close()
                    out.append("written")
                except OSError as e:
                    out.append(os.strerror(e.errno))
            out.append(str(len([m for m in mounts.submounts(str(target)) if {"ro", "nodev"} <= m[1]])))
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read() or "[]")
    os.waitpid(pid, 0)
    assert out == ["Read-only file system", "Read-only file system", "2"]


def test_mountinfo_unescapes_odd_mount_points():
    info = "40 30 0:50 / /tmp/a\\040b rw,nodev - tmpfs t rw\n41 40 0:51 / /tmp/a\\040b/c rw - tmpfs t rw\n"
    assert [p for p, _ in mounts.submounts("/tmp/a b", info)] == ["/tmp/a b", "/tmp/a b/c"]
    assert mounts.submounts("/tmp/a", info) == []


# ------------------------------------------------------------------ item 2: checked on the descriptor

def test_launcher_checks_what_it_opens_not_what_agentd_saw(env, rootfs, tmp_path):
    # what agentd's check passed can be a symlink to /etc by the time the
    # launcher opens it: the launcher refuses what the descriptor is
    link = tmp_path / "was-a-dir"
    link.symlink_to("/etc")
    cid, cg = new_cgroup(env)
    with pytest.raises(LaunchError, match=rf"^bind mount {link} on /data: refused: /etc is /etc or below it$"):
        env.client.spawn(cid, make_spec(env, cid, cg, ["true"], rootfs=rootfs,
                                        mounts=[{"src": str(link), "dst": "/data"}]))
    kill_tree(cg)


def test_launcher_refuses_the_state_dir_and_magic_links(env, rootfs, tmp_path):
    state = tmp_path / "state"
    (state / "sub").mkdir(parents=True)
    prot = {"state_dir": str(state), "socket": str(tmp_path / "run" / "a.sock")}
    for src, why in ((state / "sub", "is in the agent's state dir"), (tmp_path, "holds the agent's state dir")):
        cid, cg = new_cgroup(env)
        with pytest.raises(LaunchError, match=rf"^bind mount {src} on /data: refused: {src} {why}$"):
            env.client.spawn(cid, make_spec(env, cid, cg, ["true"], rootfs=rootfs, protected=prot,
                                            mounts=[{"src": str(src), "dst": "/data"}]))
        kill_tree(cg)
    cid, cg = new_cgroup(env)
    with pytest.raises(LaunchError, match=r"^bind mount /proc/self/cwd on /data: Too many levels of symbolic links$"):
        env.client.spawn(cid, make_spec(env, cid, cg, ["true"], rootfs=rootfs, allow_sensitive_binds=True,
                                        mounts=[{"src": "/proc/self/cwd", "dst": "/data"}]))
    kill_tree(cg)
    # a rootfs swapped for a symlink to the host's root is not the host's root
    to_root = tmp_path / "to-root"
    to_root.symlink_to("/")
    cid, cg = new_cgroup(env)
    with pytest.raises(LaunchError, match=rf"^rootfs {to_root}: refused: / is the host's root$"):
        env.client.spawn(cid, make_spec(env, cid, cg, ["true"], rootfs=str(to_root)))
    kill_tree(cg)


@pytest.fixture
def etc_alias(tmp_path):
    """/etc bind-mounted (on the host) under another name."""
    alias = tmp_path / "alias"
    alias.mkdir()
    subprocess.run(["mount", "--bind", "/etc", str(alias)], check=True)
    try:
        yield alias
    finally:
        subprocess.run(["umount", "-l", str(alias)], check=False)


def test_a_second_name_for_etc_is_refused_by_the_launcher(env, rootfs, etc_alias):
    cid, cg = new_cgroup(env)
    with pytest.raises(LaunchError, match=rf"^bind mount {etc_alias} on /data: refused: {etc_alias} "
                                          r"is /etc \(another name for it\)$"):
        env.client.spawn(cid, make_spec(env, cid, cg, ["true"], rootfs=rootfs,
                                        mounts=[{"src": str(etc_alias), "dst": "/data"}]))
    kill_tree(cg)


# ------------------------------------------------------------------ cgroup namespace

def test_cgroup_namespace_shows_only_its_own_cgroup_read_only(env, rootfs):
    script = ("cat /proc/self/cgroup; echo --; ls /sys/fs/cgroup; echo --; "
              "echo 1 > /sys/fs/cgroup/cgroup.freeze; echo freeze=$?; "
              "mkdir /sys/fs/cgroup/escape; echo mkdir=$?; "
              "echo $$ > /sys/fs/cgroup/cgroup.procs; echo procs=$?; echo --; "
              "grep ' /sys/fs/cgroup ' /proc/self/mountinfo")
    r = run(env, ["sh", "-c", script], rootfs=rootfs, env={"PATH": "/bin"})
    cgroup, listing, writes, mountline = r.out.split("--\n")
    assert "0::/" in cgroup.splitlines(), cgroup
    # the same files as a container cgroup seen from the host, and no child
    # cgroups or parents: only its own
    _, probe = new_cgroup(env)
    try:
        assert sorted(listing.split()) == sorted(os.listdir(probe))
    finally:
        kill_tree(probe)
    assert writes.split() == [w for w in writes.split() if not w.endswith("=0")], writes
    assert r.err.count("Read-only file system") == 3, r.err
    fields = mountline.split()
    assert fields[fields.index("-") + 1] == "cgroup2"
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(fields[5].split(","))
    assert not os.path.exists(os.path.join(env.base, "containers", r.id, "escape"))


# ------------------------------------------------------------------ against a real agentd

@pytest.fixture(scope="module")
def agentd():
    root = Cgroup(os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}"))
    os.mkdir(root.path)
    top = tempfile.mkdtemp(prefix="cga-mounts-")
    os.chmod(top, 0o755)
    d = None
    try:
        os.mkdir(os.path.join(top, "run"), 0o755)          # the socket's own dir, as /run/cgroup-agent
        d = start_agentd(root, top, sock=os.path.join(top, "run", "agent.sock"))
        yield d
    finally:
        if d is not None:
            stop_agentd(d)
        kill_tree(root)
        shutil.rmtree(top, ignore_errors=True)


# swaps DIR/d (a directory) and DIR/s (a symlink to a host path) atomically, forever
RACER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
d, s = (os.path.join(sys.argv[1], n).encode() for n in ("d", "s"))
open(os.path.join(sys.argv[1], "racing"), "w").close()
failed = 0
while True:
    if libc.syscall(316, -100, d, -100, s, 2) != 0:        # renameat2(RENAME_EXCHANGE)
        failed += 1
        if failed in (1, 1000):
            with open(os.path.join(sys.argv[1], f"racer-error-{failed}"), "w") as f:
                f.write(os.strerror(ctypes.get_errno()))
"""

def _python_for_nobody() -> str:
    """A python3 an unprivileged user can run (the test's own may sit in /root)."""
    for cand in (shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin"), sys.executable):
        if cand and subprocess.run([cand, "-c", "import ctypes"], user=NOBODY, group=NOBODY,
                                   capture_output=True).returncode == 0:
            return cand
    print("SKIP: no python3 that an unprivileged user can run")
    pytest.skip("no python3 that an unprivileged user can run")


TRIES = 100
# what the tenant swaps in, and what a container that sees it runs into:
#   volume: VOL/d is mounted at /data; a win is /data being the host's /etc
#   rootfs: VOL/d is the rootfs (busybox, no /etc); a win is the host's root
RACES = {
    "volume": ("/etc", "if [ -e /data/passwd ]; then exit 42; elif [ -e /data/mine ]; then exit 0; else exit 3; fi",
               "400: volumes[0] source:", " refused: /etc is /etc or below it"),
    "rootfs": ("/", "if [ -e /etc/passwd ]; then exit 42; elif [ -e /mine ]; then exit 0; else exit 3; fi",
               "400: rootfs:", " refused: / is the host's root"),
}


def _race_dir(top: str, target: str, rootfs: str) -> str:
    """VOL (owned by the tenant, nobody) with d, the directory the container
    is given (a copy of the busybox rootfs, with a file "mine"), and s, a
    symlink to `target`."""
    vol = tempfile.mkdtemp(prefix="vol-", dir=top)
    d = os.path.join(vol, "d")
    shutil.copytree(rootfs, d, symlinks=True)
    open(os.path.join(d, "mine"), "w").close()
    os.symlink(target, os.path.join(vol, "s"))
    for p in (vol, d, os.path.join(vol, "s")):
        os.lchown(p, NOBODY, NOBODY)
    os.chmod(vol, 0o755)
    return vol


def _wait_racing(vol: str) -> None:
    import time
    for _ in range(600):
        if os.path.exists(os.path.join(vol, "racing")):
            return
        time.sleep(0.05)
    raise AssertionError("the racer never started")


@pytest.mark.parametrize("racer", ["host-user", "container"])
@pytest.mark.parametrize("what", ["volume", "rootfs"])
def test_dir_swapped_for_a_symlink_during_start_never_gives_the_host_path(agentd, rootfs, what, racer):
    """Issue 11 item 2, the real attack: while containers start with
    -v VOL/d:/data (or --rootfs VOL/d), a tenant swaps VOL/d, its own
    directory, with a symlink to /etc (or /) as fast as it can: from the host
    as an unprivileged user, or from inside its own container. A win is a
    container that sees the host's /etc (or runs on the host's root)."""
    target, victim, agentd_refusal, launcher_refusal = RACES[what]
    c = Client(agentd.sock, timeout=60)
    vol = _race_dir(agentd.top, target, rootfs)
    py = _python_for_nobody()

    def victim_body(name):
        body = {"name": name, "argv": ["sh", "-c", victim], "env": ["PATH=/bin"]}
        if what == "volume":
            body.update(rootfs=rootfs, volumes=[f"{vol}/d:/data"])
        else:
            body.update(rootfs=f"{vol}/d")
        return body

    # without a racer the victim gets its own directory (exit 0)
    c.call("POST", "/v1/containers", body=victim_body("calm"))
    assert c.call("GET", "/v1/containers/calm/wait")["exit_code"] == 0
    c.call("DELETE", "/v1/containers/calm", {"force": "1"})
    proc = None
    racer_name = f"racer-{uuid.uuid4().hex[:6]}"
    if racer == "host-user":
        proc = subprocess.Popen([py, "-c", RACER, vol], user=NOBODY, group=NOBODY,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        c.call("POST", "/v1/containers", body={
            "name": racer_name, "argv": [py, "-c", RACER, vol],
            "user": f"{NOBODY}:{NOBODY}", "volumes": [f"{vol}:{vol}"]})
    outcomes = {"got its own dir": 0, "refused by agentd": 0, "refused by the launcher": 0,
                "other": 0, "WON": 0}
    try:
        _wait_racing(vol)
        for i in range(TRIES):
            name = f"victim-{uuid.uuid4().hex[:8]}"
            try:
                c.call("POST", "/v1/containers", body=victim_body(name))
            except ApiError as e:
                if e.status == 400 and str(e).startswith(agentd_refusal):
                    outcomes["refused by agentd"] += 1
                elif e.status == 400 and launcher_refusal in str(e):
                    outcomes["refused by the launcher"] += 1
                else:
                    outcomes["other"] += 1
                    print(f"try {i}: {e}")
                continue
            info = c.call("GET", f"/v1/containers/{name}/wait")
            code = info["exit_code"]
            outcomes["WON" if code == 42 else "got its own dir" if code == 0 else "other"] += 1
            c.call("DELETE", f"/v1/containers/{name}", {"force": "1"})
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        else:
            try:
                c.call("DELETE", f"/v1/containers/{racer_name}", {"force": "1"})
            except ApiError:
                pass
    errors = {n: open(os.path.join(vol, n)).read() for n in os.listdir(vol) if n.startswith("racer-error")}
    print(f"{what} swapped by a {racer} racer, {TRIES} tries: {outcomes}; racer errors: {errors}")
    assert outcomes["WON"] == 0, outcomes
    assert outcomes["other"] == 0, outcomes               # no 500, no odd failure
    # the race was on: the symlink was seen (the directory alone works, above)
    assert outcomes["refused by agentd"] + outcomes["refused by the launcher"] > 0, outcomes


def test_rootfs_that_exposes_the_agent_or_the_host_is_a_400_naming_the_field(agentd, tmp_path):
    """Issue 11 item 5 against a real agentd: --rootfs equal to or holding the
    state dir or the socket's dir, /proc/1/root (was a 500), / (was silently
    the host's root); one line, 400, nothing created; one rule with a
    bundle's root.path."""
    c = Client(agentd.sock)
    state = os.path.join(agentd.top, "state")
    before = names(agentd)
    cases = {state: "holds the agent's state dir", agentd.top: "holds the agent's state dir",
             os.path.join(state, "logs"): "is in the agent's state dir",
             os.path.join(agentd.top, "run"): "holds the agent's control socket",
             "/proc/1/root": "is /proc or below it", "/": "is the host's root; omit rootfs",
             "/etc": "is /etc or below it"}
    for path, why in cases.items():
        with pytest.raises(ApiError) as e:
            c.call("POST", "/v1/containers", body={"name": f"r-{uuid.uuid4().hex[:6]}", "argv": ["true"],
                                                   "rootfs": path})
        msg = str(e.value)
        assert e.value.status == 400 and "\n" not in msg, msg
        assert msg.startswith(f'400: rootfs: "{path}" {why}'), msg
        assert "use a directory holding the container's files" in msg     # what is accepted
    # a bundle whose root.path is the state dir: the same line, for its field
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["true"]}, "root": {"path": state}}))
    with pytest.raises(ApiError) as e:
        c.call("POST", "/v1/containers", body={"name": "b1", "bundle": str(bundle)})
    assert str(e.value).startswith(f'400: config.json root.path: "{state}" holds the agent\'s state dir'), str(e.value)
    # the same rules for a volume, on what the path IS (a bind mount of /etc
    # under another name), before anything is created
    alias = os.path.join(agentd.top, "etc-alias")
    os.mkdir(alias)
    subprocess.run(["mount", "--bind", "/etc", alias], check=True)
    try:
        with pytest.raises(ApiError) as e:
            c.call("POST", "/v1/containers", body={"name": "alias", "argv": ["true"], "volumes": [f"{alias}:/mnt"]})
        assert str(e.value) == (f'400: volumes[0] source: "{alias}" is /etc (another name for it); '
                                "refused unless security.allow_sensitive_binds")
    finally:
        subprocess.run(["umount", "-l", alias], check=False)
    # agentctl: one line, exit 1, with the hint for "/"
    r = ctl(agentd, "run", "-d", "--rootfs", "/", "--name", "slash", "--", "/bin/true")
    assert r.returncode != 0
    assert "is the host's root; omit rootfs (agentctl: no --rootfs)" in one_line(r)
    assert names(agentd) == before


def test_noexec_volume_reaches_nested_mounts(env, rootfs, nested):
    for d in (nested, nested / "sub"):
        shutil.copy(BUSYBOX, d / "bb")
        os.chmod(d / "bb", 0o755)
    r = run(env, ["sh", "-c", "/data/bb true; echo top=$?; /data/sub/bb true; echo sub=$?; /bin/busybox true; "
                  "echo bin=$?"], mounts=[{"src": str(nested), "dst": "/data", "noexec": True}],
            rootfs=rootfs, env={"PATH": "/bin"})
    assert r.out.split() == ["top=126", "sub=126", "bin=0"], (r.out, r.err)
