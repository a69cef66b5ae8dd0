"""OCI bundles through a real agentd, each honoured field checked from inside
the container: root.readonly, process.capabilities, process.rlimits,
process.noNewPrivileges, linux.maskedPaths/readonlyPaths, linux.sysctl.
(The refusals are unit tests: tests/unit/test_bundle_fields.py.)"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from helpers import Agentd, wait_for

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "echo", "grep", "touch", "ls", "head", "id", "mkdir")


@pytest.fixture
def agentd(cgroup, tmp_path):
    a = Agentd(cgroup, tmp_path)
    a.start()
    yield a
    a.stop()


def make_bundle(tmp_path, name: str, script: str, edit=None) -> str:
    """A bundle as `runc spec` writes it (busybox rootfs), running `script`."""
    bundle = tmp_path / name
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, bundle / "rootfs" / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", bundle / "rootfs" / "bin" / applet)
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["process"]["args"] = ["sh", "-c", script]
    cfg["process"]["terminal"] = False
    cfg["process"]["env"] = ["PATH=/bin"]
    if edit:
        edit(cfg)
    (bundle / "config.json").write_text(json.dumps(cfg))
    return str(bundle)


def run_bundle(agentd, name: str, bundle: str, **body) -> tuple[str, str]:
    c = agentd.client.call("POST", "/v1/containers", body={"name": name, "bundle": bundle, **body})
    wait_for(lambda: agentd.inspect(name)["state"] == "exited", timeout=60, what=f"{name} to exit")
    logdir = os.path.join(agentd.state, "logs", c["id"])
    with open(os.path.join(logdir, "stdout.log")) as f, open(os.path.join(logdir, "stderr.log")) as g:
        return f.read(), g.read()


@pytest.fixture(autouse=True)
def _need_runc():
    if not shutil.which("runc"):
        print("SKIP: runc is not installed (it writes the bundles' config.json)")
        pytest.skip("runc is not installed")


def test_root_readonly_rootfs_cannot_be_written_volumes_can(agentd, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    script = ("touch /new 2>&1; echo rootfs=$?; mkdir /rootfs-dir 2>&1; echo mkdir=$?; "
              "touch /data/ok; echo volume=$?; touch /dev/shm/ok; echo shm=$?")
    bundle = make_bundle(tmp_path, "ro", script)       # runc spec: "root": {"readonly": true}
    out, _ = run_bundle(agentd, "ro", bundle, volumes=[f"{data}:/data"])
    assert "rootfs=1" in out and "mkdir=1" in out and "Read-only file system" in out, out
    assert "volume=0" in out and "shm=0" in out, out
    assert not os.path.exists(os.path.join(bundle, "rootfs", "new"))
    assert os.path.exists(data / "ok")
    # the control: the same bundle with readonly false writes its rootfs
    writable = make_bundle(tmp_path, "rw", script, lambda c: c["root"].update(readonly=False))
    out, _ = run_bundle(agentd, "rw", writable, volumes=[f"{data}:/data"])
    assert "rootfs=0" in out, out
    assert os.path.exists(os.path.join(writable, "rootfs", "new"))


def test_rlimits(agentd, tmp_path):
    def edit(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456},
                                   {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]
    out, err = run_bundle(agentd, "limits", make_bundle(tmp_path, "limits", "ulimit -n; ulimit -Hn; ulimit -c", edit))
    assert out.split() == ["123", "456", "0"], out + err


def test_masked_and_readonly_paths_replace_the_default_lists(agentd, tmp_path):
    def edit(c):
        c["linux"]["maskedPaths"] = ["/etc/secret", "/hidden"]
        c["linux"]["readonlyPaths"] = ["/ro"]
    script = ("cat /etc/secret | wc -c 2>/dev/null; echo secret=$(cat /etc/secret); ls /hidden | wc -l; "
              "touch /ro/x 2>/dev/null; echo ro=$?; touch /rw/x; echo rw=$?; head -c 5 /proc/timer_list")
    bundle = make_bundle(tmp_path, "mask", script, edit)
    root = os.path.join(bundle, "rootfs")
    for d in ("etc", "hidden", "ro", "rw"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, "etc", "secret"), "w") as f:
        f.write("top secret\n")
    open(os.path.join(root, "hidden", "file"), "w").close()
    os.symlink("busybox", os.path.join(root, "bin", "wc"))
    with open(os.path.join(bundle, "config.json")) as f:
        cfg = json.load(f)
    cfg["root"]["readonly"] = False
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f)
    out, err = run_bundle(agentd, "mask", bundle)
    lines = out.splitlines()
    assert lines[1] == "secret=" and lines[2] == "0", out + err      # masked: empty file, empty dir
    assert "ro=1" in lines and "rw=0" in lines, out + err
    # /proc/timer_list is on the default masked list, not on this bundle's
    assert lines[-1].startswith("Timer"), out + err


def test_namespaced_sysctls_are_set_inside_only(agentd, tmp_path):
    with open("/proc/sys/kernel/shmmni") as f:
        host_shmmni = f.read().strip()
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        host_ports = f.read().strip()
    want_shmmni = "1234" if host_shmmni != "1234" else "1235"

    def edit(c):   # runc spec gives the container its own network namespace
        c["linux"]["sysctl"] = {"kernel.shmmni": want_shmmni, "fs.mqueue.msg_max": "20",
                                "net.ipv4.ip_unprivileged_port_start": "80"}
    script = ("cat /proc/sys/kernel/shmmni /proc/sys/fs/mqueue/msg_max "
              "/proc/sys/net/ipv4/ip_unprivileged_port_start")
    out, err = run_bundle(agentd, "sysctl", make_bundle(tmp_path, "sysctl", script, edit))
    assert out.split() == [want_shmmni, "20", "80"], out + err
    with open("/proc/sys/kernel/shmmni") as f:
        assert f.read().strip() == host_shmmni
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        assert f.read().strip() == host_ports


def status_fields(out: str) -> dict[str, str]:
    return dict(line.split(":\t") for line in out.splitlines() if ":\t" in line)


def test_capability_sets_and_no_new_privileges(agentd, tmp_path):
    script = "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status"

    def root_caps(c):
        sets = ["CAP_CHOWN", "CAP_KILL"]
        c["process"]["capabilities"] = {"bounding": sets, "effective": sets, "permitted": sets}
        c["process"]["noNewPrivileges"] = False
    st = status_fields(run_bundle(agentd, "caps-root", make_bundle(tmp_path, "caps-root", script, root_caps))[0])
    assert int(st["CapBnd"], 16) == int(st["CapEff"], 16) == int(st["CapPrm"], 16) == (1 << 0) | (1 << 5), st
    assert st["NoNewPrivs"] == "0"

    def user_ambient(c):     # a non-root user keeps NET_BIND_SERVICE through ambient
        nbs = ["CAP_NET_BIND_SERVICE"]
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
        c["process"]["capabilities"] = {"bounding": nbs + ["CAP_KILL"], "effective": nbs, "permitted": nbs,
                                        "inheritable": nbs, "ambient": nbs}
    st = status_fields(run_bundle(agentd, "caps-user", make_bundle(tmp_path, "caps-user", script, user_ambient))[0])
    assert int(st["CapBnd"], 16) == (1 << 10) | (1 << 5), st
    for field in ("CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert int(st[field], 16) == 1 << 10, (field, st)
    assert st["NoNewPrivs"] == "1"                    # runc spec's noNewPrivileges: true

    # as `runc spec` writes them (ambient without inheritable: nothing to raise, as under runc)
    st = status_fields(run_bundle(agentd, "caps-runc", make_bundle(tmp_path, "caps-runc", script))[0])
    runc_default = (1 << 29) | (1 << 5) | (1 << 10)   # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert int(st["CapBnd"], 16) == int(st["CapEff"], 16) == runc_default, st
    assert int(st["CapAmb"], 16) == 0


def test_root_readonly_covers_mounts_inside_the_rootfs(agentd, tmp_path):
    """A mount that sits inside the rootfs directory on the host comes along
    with the (recursive) rootfs bind: it is read-only too."""
    bundle = make_bundle(tmp_path, "nested", "touch /mnt/x 2>&1; echo nested=$?")
    inner = os.path.join(bundle, "rootfs", "mnt")
    os.mkdir(inner)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "cga-test", inner], check=True)
    try:
        out, _ = run_bundle(agentd, "nested", bundle)
        assert "nested=1" in out and "Read-only file system" in out, out
        assert not os.path.exists(os.path.join(inner, "x"))
    finally:
        subprocess.run(["umount", "-l", inner], check=False)
