"""User namespaces through a real agentd and launcher: on by default for a
rootfs container, `userns: host` keeps the host's ids, ranges disjoint and
kept across an agentd restart, idmapped volumes, capabilities that hold
only inside the namespace, the fallback where a filesystem cannot be
idmapped, and bundles that follow their config.json."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile

import pytest

from agent.cli.client import ApiError
from runtime import namespaces as ns
from runtime import userns
from helpers import Agentd, populated, wait_for

BUSYBOX = "/bin/busybox"
DEFAULT_START, DEFAULT_LEN = userns.parse_range(userns.DEFAULT_RANGE)
IDENTITY = [["0", "0", "4294967295"]]
# a rootfs container's default bridge network mounts these like volumes
NET_FILES = {"/etc/hosts": "idmapped", "/etc/resolv.conf": "idmapped", "/etc/hostname": "idmapped"}


@pytest.fixture
def rootfs():
    """A busybox rootfs in a directory every uid may enter."""
    top = tempfile.mkdtemp(prefix="cga-userns-root-")
    os.chmod(top, 0o755)
    os.makedirs(os.path.join(top, "bin"))
    shutil.copy(BUSYBOX, os.path.join(top, "bin", "busybox"))
    for applet in ("sh", "cat", "id", "touch", "mknod", "stat", "sleep", "ls", "echo", "head", "grep"):
        os.symlink("busybox", os.path.join(top, "bin", applet))
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def agentd(cgroup, tmp_path):
    a = Agentd(cgroup, tmp_path)
    a.start()
    yield a
    a.stop()


def run_to_end(a: Agentd, name: str, script: str, **kw) -> tuple[dict, str, str]:
    """Create and start; wait for the exit; (inspect, stdout, stderr)."""
    a.client.call("POST", "/v1/containers", body={"name": name, "argv": ["sh", "-c", script],
                                                   "env": {"PATH": "/bin"}, **kw})
    info = wait_for(lambda: (lambda i: i if i["state"] == "exited" else None)(a.inspect(name)),
                    what=f"{name} to exit")
    logs = os.path.join(a.state, "logs", info["id"])
    with open(os.path.join(logs, "stdout.log")) as f, open(os.path.join(logs, "stderr.log")) as g:
        return info, f.read(), g.read()


def keep_running(a: Agentd, name: str, rootfs: str, **kw) -> dict:
    a.client.call("POST", "/v1/containers", body={"name": name, "argv": ["sh", "-c", "sleep 1000"],
                                                   "env": {"PATH": "/bin"}, "rootfs": rootfs, **kw})
    return a.inspect(name)


def host_uid_of(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f)
    return int(st["Uid"].split()[0]), int(st["Gid"].split()[0])


# ------------------------------------------------------------------ the default

def test_a_default_rootfs_container_has_its_own_user_namespace(agentd, rootfs):
    info = keep_running(agentd, "box", rootfs)
    assert info["state"] == "running"
    m = info["userns"]
    (inside, host, count), = m["uid"]
    assert (inside, count) == (0, 65536) and DEFAULT_START <= host < DEFAULT_START + DEFAULT_LEN
    # the root, and the /etc files of its bridge network (mounted like volumes)
    assert m["gid"] == [[0, host, 65536]] and m["idmap"] == {"/": "idmapped", **NET_FILES}
    with open(f"/proc/{info['pid']}/uid_map") as f:
        assert [line.split() for line in f.read().splitlines()] == [["0", str(host), "65536"]]
    # the container's root is, for the host's kernel, an unprivileged uid
    assert host_uid_of(info["pid"]) == (host, host)
    agentd.client.call("DELETE", "/v1/containers/box", query={"force": "1"})


def test_uid_map_inside_is_not_the_identity_and_files_of_container_root_are_not_host_root(agentd, rootfs):
    script = ("cat /proc/self/uid_map; id -u; touch /made-by-root; echo x > /dev/shm/shm-file; "
              "stat -c '%u %g' /made-by-root /bin/busybox; sleep 1000")
    agentd.client.call("POST", "/v1/containers", body={"name": "w", "argv": ["sh", "-c", script],
                                                        "env": {"PATH": "/bin"}, "rootfs": rootfs})
    info = agentd.inspect("w")
    host = info["userns"]["uid"][0][1]
    out_path = os.path.join(agentd.state, "logs", info["id"], "stdout.log")
    lines = wait_for(lambda: (lambda t: t.splitlines() if t.count("\n") >= 4 else None)(open(out_path).read()),
                     what="the container's output")
    assert lines[0].split() == ["0", str(host), "65536"] and lines[0].split() != IDENTITY[0]
    assert lines[1] == "0"
    assert lines[2:4] == ["0 0", "0 0"]                 # inside: root's files, its own and the image's
    root = f"/proc/{info['pid']}/root"
    # from the host, through the container's own mounts: owned by its host uid
    assert os.stat(f"{root}/made-by-root").st_uid == host
    assert os.stat(f"{root}/dev/shm/shm-file").st_uid == host     # its tmpfs: stored as the host uid
    # the rootfs is an idmapped mount: on disk the file carries the id the
    # container used (0), exactly as without a user namespace
    assert os.stat(os.path.join(rootfs, "made-by-root")).st_uid == 0
    agentd.client.call("DELETE", "/v1/containers/w", query={"force": "1"})


def test_userns_host_keeps_the_identity_map(agentd, rootfs):
    info, out, err = run_to_end(agentd, "h", "cat /proc/self/uid_map; touch /made-hostns; stat -c %u /made-hostns",
                                rootfs=rootfs, userns="host")
    assert info["exit_code"] == 0, err
    lines = out.splitlines()
    assert [lines[0].split()] == IDENTITY and lines[1] == "0"
    assert info["userns"] == "host"


def test_a_host_root_container_keeps_the_host_user_namespace(agentd):
    info, out, _ = run_to_end(agentd, "hr", "cat /proc/self/uid_map")
    assert [out.split()] == IDENTITY and info["userns"] == "host"
    with pytest.raises(ApiError) as exc:
        agentd.client.call("POST", "/v1/containers", body={"name": "hr2", "argv": ["true"], "userns": "auto"})
    assert exc.value.status == 400 and "needs a rootfs" in str(exc.value)


def test_capabilities_hold_only_inside_the_namespace(agentd, rootfs):
    # Docker's set includes CAP_MKNOD; a device node needs it in the host's
    # user namespace, which the container's root does not have there
    script = "grep ^CapEff: /proc/self/status; mknod /dev/shm/null c 1 3; echo made=$?"
    info, out, err = run_to_end(agentd, "caps", script, rootfs=rootfs)
    cap_eff = int(out.split()[1], 16)
    # Docker's set (its own bridge network: NET_RAW kept), held in its namespace ...
    assert cap_eff == 0xA80425FB
    assert "made=1" in out and "Operation not permitted" in err   # ... but not over the host
    _, out, err = run_to_end(agentd, "caps-host", script, rootfs=rootfs, userns="host")
    assert "made=0" in out, err                         # the same request without a user namespace


# ------------------------------------------------------------------ allocation

def test_two_containers_get_disjoint_ranges_kept_across_an_agentd_restart(agentd, rootfs):
    a = keep_running(agentd, "a", rootfs)
    b = keep_running(agentd, "b", rootfs)
    ha, hb = a["userns"]["uid"][0][1], b["userns"]["uid"][0][1]
    assert abs(ha - hb) >= 65536
    agentd.signal(signal.SIGKILL)
    agentd.wait()
    agentd.start()
    again = agentd.inspect("a")
    assert again["userns"]["uid"] == a["userns"]["uid"]   # persisted with the container
    assert again["userns"]["idmap"] == {"/": "idmapped", **NET_FILES}   # and what its last start mounted
    c = keep_running(agentd, "c", rootfs)
    hc = c["userns"]["uid"][0][1]
    assert all(abs(hc - h) >= 65536 for h in (ha, hb))  # never a live container's range
    # removal frees a range: the next container may get it again
    agentd.client.call("DELETE", "/v1/containers/a", query={"force": "1"})
    d = keep_running(agentd, "d", rootfs)
    assert d["userns"]["uid"][0][1] == ha
    for name in ("b", "c", "d"):
        agentd.client.call("DELETE", f"/v1/containers/{name}", query={"force": "1"})
    starts = [e for e in agentd.events() if e.get("event") == "userns.pool"]
    assert len(starts) == 2 and "security.userns_range" in starts[0]["source"]   # announced once per start


def test_a_configured_range_is_used_and_exhaustion_is_one_line(cgroup, tmp_path, rootfs):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[security]\nuserns_range = "3000000000:131072"\n')
    a = Agentd(cgroup, tmp_path, str(cfg))
    a.start()
    try:
        x = keep_running(a, "x", rootfs)
        y = keep_running(a, "y", rootfs)
        assert sorted([x["userns"]["uid"][0][1], y["userns"]["uid"][0][1]]) == [3000000000, 3000065536]
        with pytest.raises(ApiError) as exc:
            keep_running(a, "z", rootfs)
        assert exc.value.status == 409 and "all 2 id ranges" in str(exc.value)
        with pytest.raises(ApiError):
            a.inspect("z")                               # nothing half-created
    finally:
        a.stop()


def test_two_agentds_on_one_default_pool_never_hand_out_the_same_ids(cgroup_factory, tmp_path, rootfs):
    """Host-wide blocks: a second agentd (its own state dir and cgroup root,
    the same default range) gets other ids than the first one's containers,
    also while the first agentd is down and its container still runs."""
    os.makedirs(tmp_path / "one", exist_ok=True)
    os.makedirs(tmp_path / "two", exist_ok=True)
    one = Agentd(cgroup_factory(), tmp_path / "one")
    two = Agentd(cgroup_factory(), tmp_path / "two")
    one.start()
    two.start()
    try:
        a = keep_running(one, "a", rootfs)
        b = keep_running(two, "b", rootfs)
        ha, hb = a["userns"]["uid"][0][1], b["userns"]["uid"][0][1]
        assert abs(ha - hb) >= 65536, (ha, hb)
        assert abs(a["userns"]["gid"][0][1] - b["userns"]["gid"][0][1]) >= 65536
        one.signal(signal.SIGKILL)                     # agentd one down, its container runs on
        one.wait()
        assert populated(a["cgroup"])
        c = keep_running(two, "c", rootfs)
        hc = c["userns"]["uid"][0][1]
        assert all(abs(hc - h) >= 65536 for h in (ha, hb)), (ha, hb, hc)
        two.client.call("DELETE", "/v1/containers/b", query={"force": "1"})
        one.start()                                    # back: its container keeps its ids
        assert one.inspect("a")["userns"]["uid"] == a["userns"]["uid"]
        one.client.call("DELETE", "/v1/containers/a", query={"force": "1"})
        d = keep_running(two, "d", rootfs)             # a's ids are free again for every agentd
        assert d["userns"]["uid"][0][1] == min(ha, hb)
    finally:
        for ag in (one, two):
            try:
                ag.stop()
            except Exception:
                pass


# ------------------------------------------------------------------ volumes

def test_a_volume_owned_by_a_host_user_is_writable_as_without_a_user_namespace(agentd, rootfs):
    vol = tempfile.mkdtemp(prefix="cga-userns-vol-")
    try:
        os.chown(vol, 1000, 1000)
        os.chmod(vol, 0o755)
        script = ("touch /data/by-root; echo root=$?; "
                  "stat -c '%u %g' /data; ")
        info, out, err = run_to_end(agentd, "v", script, rootfs=rootfs, volumes=[f"{vol}:/data"])
        assert "root=0" in out, err
        assert "1000 1000" in out                       # the owner shows as inside, unshifted
        assert info["userns"]["idmap"] == {"/": "idmapped", "/data": "idmapped", **NET_FILES}
        assert os.stat(os.path.join(vol, "by-root")).st_uid == 0      # as container root wrote it
        info, out, err = run_to_end(agentd, "v1000", "touch /data/by-1000; echo u=$?", rootfs=rootfs,
                                    volumes=[f"{vol}:/data"], user="1000:1000")
        assert "u=0" in out, err
        st = os.stat(os.path.join(vol, "by-1000"))
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        # and the same request without a user namespace gives the same files
        _, out, err = run_to_end(agentd, "vh", "touch /data/by-hostns; echo h=$?", rootfs=rootfs,
                                 volumes=[f"{vol}:/data"], user="1000:1000", userns="host")
        assert "h=0" in out and os.stat(os.path.join(vol, "by-hostns")).st_uid == 1000
    finally:
        shutil.rmtree(vol, ignore_errors=True)


def test_a_volume_that_cannot_be_idmapped_is_mounted_plain_with_the_reason(agentd, rootfs):
    ram = tempfile.mkdtemp(prefix="cga-userns-ram-")
    ns.mount("ramfs", ram, "ramfs", 0)
    try:
        with open(os.path.join(ram, "f"), "w") as f:
            f.write("x")
        info, out, err = run_to_end(agentd, "r", "stat -c %u /data/f; touch /data/g; echo w=$?",
                                    rootfs=rootfs, volumes=[f"{ram}:/data"])
        reason = info["userns"]["idmap"]["/data"]
        assert reason.startswith("ramfs (or a filesystem mounted below it) does not support idmapped mounts")
        assert "\n" not in reason
        lines = out.split()
        assert lines[0] == "65534"                       # outside its map: nobody, as documented
        assert "w=1" in out                              # and no write as the host's root
        assert any(e.get("event") == "container.not_idmapped"
                   for e in map(json.loads, open(os.path.join(agentd.state, "launcher.log"))))
        uid_map = agentd.inspect("r")["userns"]["uid"]
        assert uid_map[0][0] == 0 and uid_map[0][1] != 0  # the user namespace was kept
    finally:
        ns.umount2(ram, ns.MNT_DETACH)
        shutil.rmtree(ram, ignore_errors=True)


# ------------------------------------------------------------------ bundles

def _bundle(base, rootfs, **linux):
    b = os.path.join(base, "bundle")
    os.makedirs(b, exist_ok=True)
    doc = {"ociVersion": "1.0.2", "process": {"args": ["sh", "-c", "cat /proc/self/uid_map"], "cwd": "/",
                                              "env": ["PATH=/bin"]},
           "root": {"path": rootfs}, "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}], **linux}}
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(doc, f)
    return b, doc


def test_bundles_follow_their_config_json(agentd, rootfs, tmp_path):
    b, doc = _bundle(str(tmp_path), rootfs)
    info, out, _ = run_to_end(agentd, "b-none", "", bundle=b, argv=None)
    assert [out.split()] == IDENTITY                     # no user namespace asked for
    doc["linux"]["namespaces"].append({"type": "user"})
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(doc, f)
    info, out, _ = run_to_end(agentd, "b-auto", "", bundle=b, argv=None)
    assert out.split() == ["0", str(info["userns"]["uid"][0][1]), "65536"]   # allocated
    doc["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 2500000000, "size": 65536}]
    doc["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 2500000000, "size": 65536}]
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(doc, f)
    info, out, _ = run_to_end(agentd, "b-map", "", bundle=b, argv=None)
    assert out.split() == ["0", "2500000000", "65536"]  # honoured as given


def test_a_rootfs_that_cannot_be_idmapped_runs_in_its_user_namespace_with_the_reason(agentd):
    ram = tempfile.mkdtemp(prefix="cga-userns-ramroot-")
    ns.mount("ramfs", ram, "ramfs", 0, "mode=755")
    try:
        os.makedirs(os.path.join(ram, "bin"))
        shutil.copy(BUSYBOX, os.path.join(ram, "bin", "busybox"))
        for applet in ("sh", "cat", "stat", "touch"):
            os.symlink("busybox", os.path.join(ram, "bin", applet))
        info, out, err = run_to_end(agentd, "rr", "cat /proc/self/uid_map; stat -c %u /bin/busybox; "
                                                  "touch /new; echo w=$?", rootfs=ram)
        assert info["exit_code"] == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["0", str(info["userns"]["uid"][0][1]), "65536"]   # kept
        assert lines[1] == "65534" and "w=1" in out      # the host's files: nobody's, not its own
        assert info["userns"]["idmap"]["/"].startswith("ramfs (or a filesystem mounted below it) does not")
        assert not os.path.exists(os.path.join(ram, "new"))
    finally:
        ns.umount2(ram, ns.MNT_DETACH)
        shutil.rmtree(ram, ignore_errors=True)
