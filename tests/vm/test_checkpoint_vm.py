"""Checkpoint and restore with CRIU on kernel 6.1 (inside the VM, where
`criu check` passes; on the host's 6.18 it fails and tests/host/
test_checkpoint.py checks the refusal).

A busybox rootfs container counts in memory (a shell variable) and writes
its count to /count in its rootfs and to its stdout. It is checkpointed,
removed, agentd is "restarted" (a new supervisor over the same state dir
and launcher) and it is restored: it goes on from its count, not from
zero, in a new cgroup whose limits the kernel reads as before; its output
goes on in its log; its exit is still seen. Billing: the old instance is
billed once (its final reading), the restored one from zero on its new
cgroup, so the billed CPU of both equals the two cgroups' usage_usec.
Then the same across two agentds (another state dir and cgroup root):
export, import under a new name.

State dirs and the rootfs are on a tmpfs mounted here: CRIU cannot dump
files of the VM's 9p root.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.checkpoint import criu, layout
from agent.checkpoint.service import CheckpointService
from agent.config import load_config
from agent.launcher import LauncherClient
from agent.collector import Collector
from agent.images.service import ImageService
from agent.ledger import Ledger
from agent.network.service import NetworkService
from agent.spec import from_json
from agent.store import Store
from agent.supervisor import Supervisor, layout_cgroups
from runtime.cgroupfs import Cgroup
from runtime.inotify import Watcher
from runtime.stats import parse_cpu_stat

from conftest import destroy_cgroup
from exporters.metrics_server import MetricsServer

COUNTER = "i=0; while :; do i=$((i+1)); echo $i > /count; echo tick $i; sleep 0.2; done"
LIMITS = {"memory": "64M", "pids": 32, "cpus": "0.5"}
LIMIT_FILES = ("memory.max", "pids.max", "cpu.max")


def test_criu_is_here_and_its_check_passes():
    """A VM without a working CRIU fails loudly here instead of skipping."""
    st = criu.status()
    assert st["ok"], f"CRIU unusable in the VM: {st['reason']} (scripts/setup.sh installs criu)"
    print(f"criu in the VM: {st['version']}")


def wait_for(pred, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def tmpfs():
    top = f"/tmp/cga-ckpt-{secrets.token_hex(4)}"
    os.makedirs(top)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", top], check=True)
    rootfs = os.path.join(top, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for applet in ("sh", "sleep", "echo"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    yield SimpleNamespace(top=top, rootfs=rootfs)
    subprocess.run(["umount", "-l", top])


class Agent:
    """What agentd wires together, for one state dir and cgroup root."""

    def __init__(self, parent, top, tag):
        self.root = parent.child(f"agent-{tag}-{secrets.token_hex(3)}")
        os.mkdir(self.root.path)
        self.state = os.path.join(top, f"state-{tag}")
        os.makedirs(self.state, exist_ok=True)
        self.config = load_config(None, {"agent.state_dir": self.state, "agent.cgroup_root": self.root.path,
                                         "agent.socket": os.path.join(self.state, "agent.sock"),
                                         "agent.stop_timeout": "5s", "billing.period": "60s",
                                         "agent.host": tag})
        self.layout = layout_cgroups(self.root.path, move_self=False)
        self.launcher = LauncherClient.connect_or_start(self.state, self.layout.launcher.path, timeout=120)
        self.ledger = Ledger(self.config, os.path.join(self.state, "ledger.db"))
        self.boot()

    def boot(self):
        """agentd's start: store, supervisor (adopting what runs), services."""
        self.store = Store(os.path.join(self.state, "state.db"))
        self.watcher = Watcher()
        self.sup = Supervisor(self.config, self.store, self.launcher, self.watcher, self.layout)
        self.sup.net = NetworkService(self.config)      # as agentd wires it: bridge networks
        self.sup.images = ImageService(self.state)      # and images
        self.sup.before_remove.append(self.ledger.final)
        self.sup.boot()
        self.ckpt = CheckpointService(self.config, self.sup)

    def shutdown_agentd(self):
        """agentd's exit without stopping containers (the launcher stays)."""
        self.sup.close()
        self.watcher.close()
        self.store.close()

    def close(self):
        self.shutdown_agentd()
        try:
            self.launcher.shutdown()
        except Exception:
            pass
        self.launcher.close()
        self.ledger.close()
        destroy_cgroup(self.root.path)

    def billed_cpu(self):
        self.ledger.flush()
        db = sqlite3.connect(self.ledger.db_path)
        try:
            return db.execute("SELECT container_id, labels, SUM(cpu_usec) FROM records GROUP BY container_id, labels"
                              ).fetchall()
        finally:
            db.close()


@pytest.fixture(scope="module")
def agents(vm_test_parent, tmpfs):
    a = Agent(vm_test_parent, tmpfs.top, "a")
    b = Agent(vm_test_parent, tmpfs.top, "b")
    yield a, b
    a.close()
    b.close()


@pytest.fixture(scope="module")
def scrape(agents):
    """GET /metrics of agentd's metrics server on 127.0.0.1 (its collector before a first pass,
    as agentd serves it then): {sample name + sorted labels: value}."""
    a, _ = agents
    cfg = SimpleNamespace(agent=SimpleNamespace(metrics_listen="127.0.0.1:0"),
                          collector=SimpleNamespace(label_allowlist=()))
    srv = MetricsServer(cfg, Collector(a.config, a.sup.containers))
    srv.start()

    def get():
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=60) as r:
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    yield get
    srv.stop()


def on_disk(d):
    """Bytes of the files under d, read from the file system here (not through layout.size_of)."""
    return sum(os.lstat(os.path.join(top, f)).st_size for top, _d, files in os.walk(d) for f in files)


def count(rootfs):
    try:
        with open(os.path.join(rootfs, "count")) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def keep_logs_on_failure(agent, name, fn):
    """CRIU's restore log goes to tests/vm/out/ when the restore fails (the tmpfs goes with the VM)."""
    try:
        return fn()
    except Exception:
        from agent.checkpoint import layout
        src = os.path.join(layout.path(agent.state, name), "images")
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", f"ckpt-{name}-{secrets.token_hex(3)}")
        if os.path.isdir(src):
            shutil.copytree(src, out, ignore=shutil.ignore_patterns("*.img"), dirs_exist_ok=True)
        failed = layout.failed_log(layout.root(agent.state), name)      # a failed dump's log
        if os.path.exists(failed):
            os.makedirs(out, exist_ok=True)
            shutil.copy(failed, out)
        print(f"CRIU logs copied to {out}")
        raise


def limits_in_kernel(cg_path):
    return {f: Cgroup(cg_path).read(f).strip() for f in LIMIT_FILES}


def usage_usec(cg_path):
    return parse_cpu_stat(Cgroup(cg_path).read("cpu.stat")).usage_usec


def run_counter(agent, name, rootfs):
    return agent.sup.create(from_json({"name": name, "argv": ["sh", "-c", COUNTER], "rootfs": rootfs,
                                       "network": "none", "userns": "host", "limits": LIMITS}, agent.config))


def stdout_counts(agent, info):
    with open(os.path.join(agent.sup.logs_dir, info.id, "stdout.log")) as f:
        return [int(line.split()[1]) for line in f if line.startswith("tick ")]


def test_checkpoint_remove_restart_restore_resumes_and_bills_once(agents, tmpfs, scrape, record_property):
    from agent import selfmetrics
    a, _ = agents
    ok_before = (selfmetrics.get("checkpoints_total", result="ok"), selfmetrics.get("restores_total", result="ok"))
    m0 = scrape()
    os.unlink(os.path.join(tmpfs.rootfs, "count")) if os.path.exists(os.path.join(tmpfs.rootfs, "count")) else None
    old = run_counter(a, "calc", tmpfs.rootfs)
    wait_for(lambda: count(tmpfs.rootfs) >= 5, what="the counter to reach 5")
    limits_before = limits_in_kernel(old.cgroup)
    assert limits_before == {"memory.max": str(64 << 20), "pids.max": "32", "cpu.max": "50000 100000"}

    out = a.ckpt.checkpoint("calc")
    assert out["image_bytes"] > 0
    # /metrics: one more checkpoint in the duration histogram, its size that of the images on disk
    m1 = scrape()
    images = on_disk(os.path.join(layout.path(a.state, "calc"), layout.IMAGES))
    assert images > 0 and out["image_bytes"] == images

    def delta(name):
        return m1[(name, ())] - m0[(name, ())]
    assert delta("cgroup_agent_checkpoint_duration_seconds_count") == 1
    assert delta("cgroup_agent_checkpoint_duration_seconds_sum") > 0
    assert m1[("cgroup_agent_checkpoint_duration_seconds_bucket", (("le", "+Inf"),))] \
        == m1[("cgroup_agent_checkpoint_duration_seconds_count", ())]
    assert delta("cgroup_agent_checkpoint_image_bytes_count") == 1
    assert delta("cgroup_agent_checkpoint_image_bytes_sum") == images
    assert m1[("cgroup_agent_checkpoint_last_image_bytes", ())] == images
    assert m1[("cgroup_agent_checkpoints_total", (("result", "ok"),))] == ok_before[0] + 1
    record_property("checkpoint_image_bytes", out["image_bytes"])
    record_property("checkpoint_seconds", round(delta("cgroup_agent_checkpoint_duration_seconds_sum"), 2))
    assert a.sup.get("calc").state == "checkpointed"
    at = count(tmpfs.rootfs)
    time.sleep(1.0)
    assert count(tmpfs.rootfs) == at, "the dumped container was not stopped"
    old_usage = usage_usec(old.cgroup)
    assert [c["name"] for c in a.ckpt.list()] == ["calc"]

    a.sup.remove("calc")                  # the checkpoint outlives its container
    a.shutdown_agentd()                   # and an agentd restart
    a.boot()

    new = keep_logs_on_failure(a, "calc", lambda: a.ckpt.restore("calc"))
    info = a.sup.get("calc")
    assert info.state == "running" and info.id == new["id"] != old.id
    assert new["restored_from"] == old.id and info.labels["restored_from"] == old.id
    assert info.cgroup != old.cgroup
    assert limits_in_kernel(info.cgroup) == limits_before
    assert info.pid in [int(p) for p in Cgroup(info.cgroup).read("cgroup.procs").split()]
    # its cgroup namespace is rooted at its new cgroup: it sees itself at "/"
    inside = subprocess.run(["nsenter", "-t", str(info.pid), "-C", "cat", f"/proc/{info.pid}/cgroup"],
                            capture_output=True, text=True)
    assert inside.stdout.strip() == "0::/", inside.stdout + inside.stderr
    m2 = scrape()
    assert m2[("cgroup_agent_restore_duration_seconds_count", ())] \
        - m1[("cgroup_agent_restore_duration_seconds_count", ())] == 1
    restore_s = (m2[("cgroup_agent_restore_duration_seconds_sum", ())]
                 - m1[("cgroup_agent_restore_duration_seconds_sum", ())])
    assert restore_s > 0
    record_property("restore_seconds", round(restore_s, 2))
    assert (selfmetrics.get("checkpoints_total", result="ok"), selfmetrics.get("restores_total", result="ok")) \
        == (ok_before[0] + 1, ok_before[1] + 1)
    # it goes on from its count, kept in its memory: not from zero
    wait_for(lambda: count(tmpfs.rootfs) >= at + 3, what="the restored counter to go on")
    # its stdout goes on through the new launcher pipe, from where it was
    # (the tick of the count it had just written may come first)
    ticks = stdout_counts(a, info)
    assert ticks and ticks[0] in (at, at + 1) and ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks[:10]
    # the launcher (the subreaper) adopted it: its exit is seen
    ppid = int(open(f"/proc/{info.pid}/stat").read().rsplit(")", 1)[1].split()[1])
    assert ppid == a.launcher.ping()["pid"]
    a.sup.kill("calc", "KILL")
    done = a.sup.wait("calc", timeout=120)
    assert done.state == "exited" and done.exit_signal == 9
    new_usage = usage_usec(info.cgroup)
    a.sup.remove("calc")

    billed = a.billed_cpu()
    by_id = {cid: (labels, cpu) for cid, labels, cpu in billed}
    assert set(by_id) == {old.id, info.id}
    assert '"restored_from":"%s"' % old.id in by_id[info.id][0]
    assert by_id[old.id][1] == old_usage
    assert by_id[info.id][1] == new_usage
    assert sum(cpu for _l, cpu in by_id.values()) == old_usage + new_usage
    a.ckpt.remove("calc")
    assert a.ckpt.list() == []


def test_export_and_import_onto_a_second_agentd(agents, tmpfs):
    a, b = agents
    os.unlink(os.path.join(tmpfs.rootfs, "count")) if os.path.exists(os.path.join(tmpfs.rootfs, "count")) else None
    old = run_counter(a, "mover", tmpfs.rootfs)
    wait_for(lambda: count(tmpfs.rootfs) >= 5, what="the counter to reach 5")
    limits_before = limits_in_kernel(old.cgroup)
    export = os.path.join(tmpfs.top, "mover.tar")
    out = a.ckpt.checkpoint("mover", export=export)
    assert out["export"]["bytes"] > 0
    at = count(tmpfs.rootfs)
    new = keep_logs_on_failure(b, "moved", lambda: b.ckpt.import_(export, "moved"))
    info = b.sup.get("moved")
    assert info.state == "running" and info.labels["restored_from"] == old.id
    assert info.cgroup.startswith(b.root.path + "/")
    assert limits_in_kernel(info.cgroup) == limits_before
    wait_for(lambda: count(tmpfs.rootfs) >= at + 3, what="the imported counter to go on")
    assert stdout_counts(b, info)[0] in (at, at + 1)
    b.sup.remove("moved", force=True)
    a.sup.remove("mover")
    # an import made by a newer CRIU is refused in one line
    from agent.checkpoint import layout
    rec = layout.read_record(layout.path(a.state, "mover"))
    from agent.checkpoint.service import compatibility_refusal
    why = compatibility_refusal(dict(rec, criu_version="99.0"), criu.status())
    assert why.startswith("checkpoint made by CRIU 99.0, this host has CRIU ") and "\n" not in why

    # made on a CPU with features this one lacks (every feature bit set in its cpuinfo
    # image, which CRIU's own crit rewrites): the import is refused before anything is
    # made, in one line naming CRIU's reason
    ck = layout.path(a.state, "mover")
    cpuinfo = os.path.join(ck, layout.IMAGES, criu.CPUINFO_IMAGE)
    assert os.path.exists(cpuinfo)                        # the dump recorded this CPU
    doc = json.loads(subprocess.run(["crit", "decode", "-i", cpuinfo], check=True, capture_output=True,
                                    text=True).stdout)
    entry = doc["entries"][0]["x86_entry"][0]
    entry["capability"] = [0xFFFFFFFF] * len(entry["capability"])
    subprocess.run(["crit", "encode", "-o", cpuinfo], input=json.dumps(doc), text=True, check=True)
    from agent.checkpoint import archive
    from agent.checkpoint.service import Refused
    alien = os.path.join(tmpfs.top, "alien.tar")
    archive.export(ck, alien)
    with pytest.raises(Refused) as e:
        b.ckpt.import_(alien, "alien")
    line = str(e.value)
    assert line.startswith(f"import {alien}: this host's CPU lacks features of the CPU the checkpoint was made "
                           "on") and "\n" not in line, line
    assert "alien" not in [c["name"] for c in b.ckpt.list()]
    with pytest.raises(Exception):
        b.sup.get("alien")
    a.ckpt.remove("mover")


def test_leave_running_keeps_it_going_and_the_save_point_restores(agents, tmpfs):
    a, _ = agents
    if os.path.exists(os.path.join(tmpfs.rootfs, "count")):
        os.unlink(os.path.join(tmpfs.rootfs, "count"))
    old = run_counter(a, "keeper", tmpfs.rootfs)
    wait_for(lambda: count(tmpfs.rootfs) >= 5, what="the counter to reach 5")
    a.ckpt.checkpoint("keeper", leave_running=True)
    at = count(tmpfs.rootfs)
    info = a.sup.get("keeper")
    assert (info.state, info.pid) == ("running", old.pid)          # thawed, not ended
    wait_for(lambda: count(tmpfs.rootfs) >= at + 5, what="the counter to go on after the dump")
    a.sup.kill("keeper", "KILL")
    assert a.sup.wait("keeper", timeout=120).state == "exited"      # no restart held back
    live = count(tmpfs.rootfs)
    keep_logs_on_failure(a, "keeper", lambda: a.ckpt.restore("keeper"))
    restored = a.sup.get("keeper")
    wait_for(lambda: stdout_counts(a, restored), what="the restored counter's output")
    first = stdout_counts(a, restored)[0]
    # from the save point (its memory at the dump), not from where it was killed, nor from zero
    assert 5 <= first <= at + 1 < live, (first, at, live)
    a.sup.remove("keeper", force=True)
    a.ckpt.remove("keeper")


HOLD = """#!/bin/sh
# CRIU's action script (CRIU_CONFIG_FILE of this test's launcher): hold the dump after it is written
[ "$CRTOOLS_SCRIPT_ACTION" = post-dump ] || exit 0
touch {dir}/held
while [ ! -e {dir}/release ]; do sleep 0.1; done
exit 0
"""


def test_the_launcher_serves_other_containers_while_criu_dumps(vm_test_parent, tmpfs):
    """CRIU runs beside the launcher's loop: while a dump is held in CRIU (its post-dump action
    script waits for a file), another container's output is copied to its log, its exit is reaped
    and reported to agentd (whose ack is answered while the checkpoint call waits), and another
    client's request is answered. A launcher blocked in CRIU does none of it until the dump ends
    (the wait for the exit below then times out)."""
    import threading
    hold = os.path.join(tmpfs.top, "hold")
    os.makedirs(hold)
    script = os.path.join(hold, "hold.sh")
    with open(script, "w") as f:
        f.write(HOLD.format(dir=hold))
    os.chmod(script, 0o755)
    conf = os.path.join(hold, "criu.conf")
    with open(conf, "w") as f:
        f.write(f"action-script {script}\n")
    os.environ["CRIU_CONFIG_FILE"] = conf      # the launcher started now (and its CRIU) inherit it
    try:
        c = Agent(vm_test_parent, tmpfs.top, "c")
    finally:
        del os.environ["CRIU_CONFIG_FILE"]
    go = os.path.join(tmpfs.rootfs, "go")
    t = None
    try:
        other = c.sup.create(from_json({"name": "other", "argv": ["sh", "-c",
                                        "while [ ! -e /go ]; do sleep 0.1; done; echo other-done; exit 7"],
                                        "rootfs": tmpfs.rootfs, "network": "none", "userns": "host"}, c.config))
        if os.path.exists(os.path.join(tmpfs.rootfs, "count")):
            os.unlink(os.path.join(tmpfs.rootfs, "count"))
        run_counter(c, "held", tmpfs.rootfs)
        wait_for(lambda: count(tmpfs.rootfs) >= 3, what="the counter to reach 3")
        launcher_pid = c.launcher.ping()["pid"]
        result = {}
        t = threading.Thread(target=lambda: result.update(out=c.ckpt.checkpoint("held")), daemon=True)
        t.start()
        wait_for(lambda: os.path.exists(os.path.join(hold, "held")), what="CRIU to reach its post-dump script")
        # CRIU is in the middle of the dump: the other container finishes now
        with open(go, "w"):
            pass
        done = c.sup.wait("other", timeout=120)
        assert (done.state, done.exit_code) == ("exited", 7)
        with open(os.path.join(c.sup.logs_dir, other.id, "stdout.log")) as f:
            assert "other-done" in f.read()
        second = LauncherClient.connect(c.state)
        try:
            assert second.ping()["pid"] == launcher_pid
        finally:
            second.close()
        assert t.is_alive() and not os.path.exists(os.path.join(hold, "release")), "the dump was not held"
        with open(os.path.join(hold, "release"), "w"):
            pass
        t.join(300)
        assert not t.is_alive() and result["out"]["image_bytes"] > 0
        assert c.sup.get("held").state == "checkpointed"
    finally:
        with open(os.path.join(hold, "release"), "w"):
            pass
        if t is not None:
            t.join(300)         # the checkpoint ends before its agent is closed
        if os.path.exists(go):
            os.unlink(go)
        c.close()


# The default container: `agentctl run --rootfs` gives it the bridge network and a user namespace.
# A counter in the background, and a listener on port 7000 answering the current count.
SERVED = ("echo 0 > /count; i=0; (while :; do i=$((i+1)); echo $i > /count; echo tick $i; sleep 0.2; done) & "
          "while :; do nc -l -p 7000 < /count; sleep 0.1; done")
PORT = 7000


@pytest.fixture(scope="module")
def userns_rootfs(tmpfs):
    """A busybox root the container's root (a host uid of its block) may write its count in."""
    rootfs = os.path.join(tmpfs.top, "rootfs-u")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    for applet in ("sh", "sleep", "echo", "nc", "cat"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    os.chmod(rootfs, 0o777)
    return rootfs


def fresh_count(rootfs):
    """No /count left by an earlier test (of another owner than this test's container root)."""
    if os.path.exists(os.path.join(rootfs, "count")):
        os.unlink(os.path.join(rootfs, "count"))


def ask_count(ip):
    """The count the container's listener answers on ip:7000 (an address on the agent's bridge)."""
    import socket
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection((ip, PORT), timeout=30) as s:
                line = s.makefile("rb").readline().strip()
            if line:
                return int(line)
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered on {ip}:{PORT}")
        time.sleep(0.5)


def uid_map(pid):
    with open(f"/proc/{pid}/uid_map") as f:
        return " ".join(f.read().split())


@pytest.mark.parametrize("userns", ["host", "default"])
def test_bridge_container_keeps_its_address_in_place_and_gets_one_on_another_agentd(agents, userns_rootfs, userns):
    """A container on the bridge network (the default for a rootfs) checkpointed, removed,
    agentd restarted, restored in place: the same address, and the listener that was dumped
    answers there, from the network namespace agentd attached, with a count that went on;
    billed once per instance. Then checkpointed again and imported onto the second agentd,
    whose network has another subnet: a new address there (the result says so), the listener
    answers on it.
    With --userns host the network namespace is agentd's, left external by the dump and
    joined by the restored tree. The default container (a user namespace of its own) owns its
    network namespace: dumped empty, made again by CRIU inside the user namespace it restores,
    eth0 moved into it from the one agentd attached, which is then bound in its place."""
    a, b = agents
    rootfs = userns_rootfs
    fresh_count(rootfs)
    old = a.sup.create(from_json({"name": "br", "argv": ["sh", "-c", SERVED], "rootfs": rootfs, "limits": LIMITS,
                                  **({"userns": "host"} if userns == "host" else {})}, a.config))
    spec = a.sup.spec_of("br")
    assert spec.network == "bridge", spec.network
    own = isinstance(spec.userns, dict)
    assert own == (userns == "default"), spec.userns
    if own:         # its user namespace owns its network namespace (as CRIU needs to dump it)
        assert a.sup.net.owns_netns(old.id)
        assert os.readlink(f"/proc/{old.pid}/ns/user") == f"user:[{os.stat(a.sup.net.userns_path(old.id)).st_ino}]"
    ip = spec.net["ip"]
    wait_for(lambda: count(rootfs) >= 5, what="the counter to reach 5")
    assert ask_count(ip) >= 5
    limits_before = limits_in_kernel(old.cgroup)

    keep_logs_on_failure(a, "br", lambda: a.ckpt.checkpoint("br"))
    rec = layout.read_record(layout.path(a.state, "br"))
    assert (rec["netns_external"], rec["netns_empty"]) == (not own, own), rec
    assert sorted(rec["externals"]) == ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
    at = count(rootfs)
    old_usage = usage_usec(old.cgroup)
    a.sup.remove("br")
    a.shutdown_agentd()
    a.boot()

    new = keep_logs_on_failure(a, "br", lambda: a.ckpt.restore("br"))
    assert new["network"] == {"ip": ip, "checkpoint_ip": ip, "same_ip": True}, new
    info = a.sup.get("br")
    assert info.state == "running" and info.id != old.id and a.sup.spec_of("br").net["ip"] == ip
    assert limits_in_kernel(info.cgroup) == limits_before
    # the restored tree is in the network namespace agentd holds for the new container
    assert os.readlink(f"/proc/{info.pid}/ns/net") == f"net:[{os.stat(a.sup.net.netns_path(info.id)).st_ino}]"
    if own:
        assert uid_map(info.pid) == f"0 {spec.userns['uid'][0][1]} 65536"   # CRIU restored the mapping
        assert a.sup.net.owns_netns(info.id)
        assert os.readlink(f"/proc/{info.pid}/ns/user") == f"user:[{os.stat(a.sup.net.userns_path(info.id)).st_ino}]"
        assert not os.listdir(layout.path(a.state, "br")).count("nethook.sh")   # the hook is gone
    assert ask_count(ip) >= at                            # the dumped listener answers on the same address
    ticks = wait_for(lambda: stdout_counts(a, info), what="the restored counter's output")
    assert ticks[0] in (at, at + 1), (ticks[:5], at)
    wait_for(lambda: count(rootfs) >= at + 3, what="the restored counter to go on")
    with open(f"/proc/{info.pid}/root/etc/hostname") as f:   # its /etc files: the new container's
        assert f.read().strip() == "br"
    if own:     # stopped and started again: in the namespaces bound for it (CRIU's), still served
        a.sup.stop("br", timeout=10)
        info = a.sup.start("br")
        assert os.readlink(f"/proc/{info.pid}/ns/user") == f"user:[{os.stat(a.sup.net.userns_path(info.id)).st_ino}]"
        assert os.readlink(f"/proc/{info.pid}/ns/net") == f"net:[{os.stat(a.sup.net.netns_path(info.id)).st_ino}]"
        assert ask_count(ip) >= 0

    a.ckpt.remove("br")
    export = os.path.join(os.path.dirname(rootfs), "br.tar")
    keep_logs_on_failure(a, "br", lambda: a.ckpt.checkpoint("br", export=export))
    mid_usage = usage_usec(info.cgroup)
    at2 = count(rootfs)
    a.sup.remove("br")
    moved = keep_logs_on_failure(b, "br2", lambda: b.ckpt.import_(export, "br2"))
    minfo = b.sup.get("br2")
    new_ip = b.sup.spec_of("br2").net["ip"]
    assert moved["network"] == {"ip": new_ip, "checkpoint_ip": ip, "same_ip": False}, moved
    assert ipaddress.ip_address(new_ip) in ipaddress.ip_network(b.sup.net.registry.get("bridge").subnet)
    assert limits_in_kernel(minfo.cgroup) == limits_before
    assert ask_count(new_ip) >= at2
    wait_for(lambda: count(rootfs) >= at2 + 3, what="the imported counter to go on")
    assert stdout_counts(b, minfo)[0] in (at2, at2 + 1)
    b.sup.kill("br2", "KILL")
    b.sup.wait("br2", timeout=120)
    moved_usage = usage_usec(minfo.cgroup)
    b.sup.remove("br2")
    b.ckpt.remove("br2")
    a.ckpt.remove("br")

    by_id = {cid: cpu for cid, _l, cpu in a.billed_cpu()}
    assert by_id[old.id] == old_usage and by_id[info.id] == mid_usage
    assert {cid: cpu for cid, _l, cpu in b.billed_cpu()}[minfo.id] == moved_usage


def test_userns_container_keeps_its_ids_in_place_and_claims_them_on_another_agentd(agents, userns_rootfs):
    """A container in a user namespace of its own block (--network none) checkpointed,
    removed, agentd restarted, restored in place: the same host ids (CRIU restores the
    mapping; the block is claimed again), the count goes on. Imported onto the second agentd:
    refused in one line while the first agentd's container still holds the block, nothing
    created; restored there with the same ids once the first has let them go."""
    a, b = agents
    rootfs = userns_rootfs
    fresh_count(rootfs)
    old = a.sup.create(from_json({"name": "un", "argv": ["sh", "-c", COUNTER], "rootfs": rootfs,
                                  "network": "none", "limits": LIMITS}, a.config))
    spec = a.sup.spec_of("un")
    assert isinstance(spec.userns, dict), spec.userns
    ids = uid_map(old.pid)
    block = spec.userns["uid"][0][1]
    assert ids == f"0 {block} 65536", ids
    wait_for(lambda: count(rootfs) >= 5, what="the counter to reach 5")
    keep_logs_on_failure(a, "un", lambda: a.ckpt.checkpoint("un"))
    at = count(rootfs)
    a.sup.remove("un")
    a.shutdown_agentd()
    a.boot()
    keep_logs_on_failure(a, "un", lambda: a.ckpt.restore("un"))
    info = a.sup.get("un")
    assert info.state == "running" and info.id != old.id
    assert uid_map(info.pid) == ids and a.sup.spec_of("un").userns == spec.userns
    wait_for(lambda: count(rootfs) >= at + 3, what="the restored counter to go on")
    ticks = stdout_counts(a, info)
    assert ticks[0] in (at, at + 1), (ticks[:5], at)

    a.ckpt.remove("un")
    export = os.path.join(os.path.dirname(rootfs), "un.tar")
    a.ckpt.checkpoint("un", export=export)
    at2 = count(rootfs)
    from agent.checkpoint.service import Refused
    with pytest.raises(Refused) as e:                     # the first agentd's container holds the block
        b.ckpt.import_(export, "un2")
    line = str(e.value)
    assert line.startswith(f"restore un2: its user namespace maps host uids {block}-{block + 65535}, "
                           "which are not free here (") and "\n" not in line, line
    assert "file ownership is not remapped" in line
    with pytest.raises(Exception):
        b.sup.get("un2")                                  # nothing created
    b.ckpt.remove("un2")
    a.sup.remove("un")                                    # lets the block go
    keep_logs_on_failure(b, "un2", lambda: b.ckpt.import_(export, "un2"))
    minfo = b.sup.get("un2")
    assert uid_map(minfo.pid) == ids
    wait_for(lambda: count(rootfs) >= at2 + 3, what="the imported counter to go on")
    assert stdout_counts(b, minfo)[0] in (at2, at2 + 1)
    b.sup.remove("un2", force=True)
    b.ckpt.remove("un2")
    a.ckpt.remove("un")


ECHO_PORT = 7001


def test_an_open_tcp_connection_is_refused_then_taken_along_with_tcp_established(agents, userns_rootfs):
    """A client here (the VM's host side of the bridge) holds a TCP connection to an echo
    server in a bridged container. Checkpoint refuses it in one line naming the peer and
    --tcp-established, the container runs on; with --tcp-established CRIU dumps the
    connection, the container is restored in place (new network namespace, same address),
    and the same client socket, untouched meanwhile, gets its next line echoed by the
    restored server: the connection was carried across, not reopened."""
    import socket
    a, _ = agents
    old = a.sup.create(from_json({"name": "echo", "argv": ["nc", "-l", "-p", str(ECHO_PORT), "-e", "cat"],
                                  "rootfs": userns_rootfs, "userns": "host", "limits": LIMITS}, a.config))
    ip = a.sup.spec_of("echo").net["ip"]

    def connect():
        try:
            return socket.create_connection((ip, ECHO_PORT), timeout=5)
        except OSError:
            return None

    client = wait_for(connect, what=f"the echo server on {ip}:{ECHO_PORT}")
    client.settimeout(120)
    lines = client.makefile("rb")
    try:
        client.sendall(b"before\n")
        assert lines.readline() == b"before\n"
        from agent.checkpoint.service import Refused
        with pytest.raises(Refused) as e:
            a.ckpt.checkpoint("echo")
        why = str(e.value)
        assert "\n" not in why and why.startswith(f"checkpoint echo: process {old.pid} holds an established TCP "), why
        me = client.getsockname()          # the peer the refusal names: this client
        assert f") to {me[0]}:{me[1]}; pass --tcp-established to take it along" in why, why
        assert a.sup.get("echo").state == "running" and "echo" not in [c["name"] for c in a.ckpt.list()]

        out = keep_logs_on_failure(a, "echo", lambda: a.ckpt.checkpoint("echo", tcp_established=True))
        assert out["tcp_established"] is True
        assert layout.read_record(layout.path(a.state, "echo"))["tcp_established"] is True
        assert a.sup.get("echo").state == "checkpointed"
        new = keep_logs_on_failure(a, "echo", lambda: a.ckpt.restore("echo"))
        assert new["network"]["same_ip"] is True, new
        info = a.sup.get("echo")
        assert info.state == "running" and info.id != old.id
        client.sendall(b"after\n")          # the socket opened before the checkpoint
        assert lines.readline() == b"after\n"
    finally:
        lines.close()
        client.close()
        a.sup.remove("echo", force=True)
        if "echo" in [c["name"] for c in a.ckpt.list()]:
            a.ckpt.remove("echo")

# A volume (a host dir bind-mounted) and a --tmpfs: the count goes to the volume, a note kept in the tmpfs.
VOLUMED = ("echo kept-in-tmpfs > /scratch/note; i=0; "
           "while :; do i=$((i+1)); echo $i > /data/count; echo tick $i; sleep 0.2; done")


def test_volume_and_tmpfs_container_restores_and_its_volume_is_checked_again(agents, tmpfs):
    """Checkpointed, removed, restored: the counter goes on in its volume (an external bind
    mount CRIU is handed again, from the source checked as at create) and its tmpfs comes
    back with its file (CRIU dumps tmpfs contents). A source swapped for a symlink to /etc
    after the checkpoint is refused at restore in one line, and nothing is created."""
    a, _ = agents
    vol = os.path.join(tmpfs.top, "vol")
    os.makedirs(vol, exist_ok=True)
    old = a.sup.create(from_json({"name": "vols", "argv": ["sh", "-c", VOLUMED], "rootfs": tmpfs.rootfs,
                                  "network": "none", "userns": "host", "volumes": [f"{vol}:/data"],
                                  "tmpfs": ["/scratch:size=1m"], "limits": LIMITS}, a.config))
    counted = lambda: count(vol)  # noqa: E731
    wait_for(lambda: counted() >= 5, what="the counter to reach 5 in its volume")
    keep_logs_on_failure(a, "vols", lambda: a.ckpt.checkpoint("vols"))
    rec = layout.read_record(layout.path(a.state, "vols"))
    assert rec["externals"] == {"/data": "v0"}
    at = counted()
    a.sup.remove("vols")

    # the source swapped for a symlink to /etc: refused at restore, as create refuses it
    os.rename(vol, vol + ".real")
    os.symlink("/etc", vol)
    try:
        with pytest.raises(Exception) as e:
            a.ckpt.restore("vols")
        line = str(e.value)
        assert line.startswith("restore vols: ") and "\n" not in line, line
        assert "refused: /etc is /etc or below it" in line, line
        with pytest.raises(Exception):
            a.sup.get("vols")
        assert not os.path.exists(os.path.join(layout.path(a.state, "vols"), "stage"))
    finally:
        os.unlink(vol)
        os.rename(vol + ".real", vol)

    keep_logs_on_failure(a, "vols", lambda: a.ckpt.restore("vols"))
    info = a.sup.get("vols")
    assert info.state == "running" and info.id != old.id
    wait_for(lambda: counted() >= at + 3, what="the restored counter to go on in its volume")
    ticks = stdout_counts(a, info)
    assert ticks[0] in (at, at + 1), (ticks[:5], at)
    with open(f"/proc/{info.pid}/root/scratch/note") as f:
        assert f.read().strip() == "kept-in-tmpfs"
    with open(f"/proc/{info.pid}/mountinfo") as f:
        mi = [line.split() for line in f]
    scratch = [m for m in mi if m[4] == "/scratch"]
    assert scratch and "tmpfs" in scratch[0], scratch
    assert not os.path.exists(os.path.join(layout.path(a.state, "vols"), "stage"))   # unstaged
    a.sup.remove("vols", force=True)
    a.ckpt.remove("vols")



# An image container: its root an overlay of the image's layer and its own writable layer.
IMAGE_COUNTER = ("rm -f /bin/tr; echo written-before > /marker; i=0; "
                 "while :; do i=$((i+1)); echo $i > /count; echo tick $i; sleep 0.2; done")
IMAGE_REF = "ckpt/busybox:1"


def busybox_image_tar(path):
    """A docker-archive of a one-layer busybox image (`docker save`'s format, loaded as agentctl load does)."""
    import hashlib
    import io
    import json
    import tarfile

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        t.add("/bin/busybox", arcname="bin/busybox")
        for applet in ("sh", "sleep", "echo", "rm", "tr", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(link)
    data = layer.getvalue()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(data).hexdigest()]}
                         }).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [IMAGE_REF], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, body in (("layer.tar", data), ("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            t.addfile(info, io.BytesIO(body))
    return path


def in_root(pid, name):
    try:
        with open(f"/proc/{pid}/root/{name}") as f:
            return f.read().strip()
    except OSError:
        return ""


def root_count(pid):
    text = in_root(pid, "count")
    return int(text) if text.isdigit() else 0


def test_an_image_container_comes_back_with_what_it_wrote_in_place_and_on_another_agentd(agents, tmpfs):
    """An image container writes to its root (a file made, an image file deleted: a whiteout)
    and counts. --leave-running is refused in one line (its writable layer is saved once its
    processes stopped). Checkpointed with --export, removed (its writable layer deleted with
    it), restored in place: the count goes on from the file in its root, the file it made is
    there, the file it deleted is still gone. The export imported on a second agentd that lacks
    the image: refused in one line naming the image to pull; once the image is loaded there,
    restored: the count goes on there too."""
    from agent.checkpoint.service import Refused
    a, b = agents
    image_tar = busybox_image_tar(os.path.join(tmpfs.top, "busybox-image.tar"))
    a.sup.images.load(image_tar)
    old = a.sup.create(from_json({"name": "img", "image": IMAGE_REF, "argv": ["sh", "-c", IMAGE_COUNTER],
                                  "network": "none", "userns": "host", "limits": LIMITS},
                                 a.config, images=a.sup.images))
    wait_for(lambda: root_count(old.pid) >= 5, what="the image container's counter to reach 5")
    with pytest.raises(Refused) as e:
        a.ckpt.checkpoint("img", leave_running=True)
    assert "\n" not in str(e.value) and "checkpoint it without --leave-running" in str(e.value), e.value
    assert a.sup.get("img").state == "running"

    export = os.path.join(tmpfs.top, "img.tar")
    keep_logs_on_failure(a, "img", lambda: a.ckpt.checkpoint("img", export=export))
    assert layout.read_record(layout.path(a.state, "img"))["upper"] is True
    at = count(os.path.join(layout.path(a.state, "img"), layout.UPPER))
    assert at >= 5
    a.sup.remove("img")
    assert not os.path.exists(os.path.join(a.sup.rootfs_dir, old.id))     # its writable layer went with it

    keep_logs_on_failure(a, "img", lambda: a.ckpt.restore("img"))
    info = a.sup.get("img")
    assert info.state == "running" and info.id != old.id
    wait_for(lambda: root_count(info.pid) >= at + 3, what="the restored image container to count on")
    assert stdout_counts(a, info)[0] in (at, at + 1)
    assert in_root(info.pid, "marker") == "written-before"
    assert not os.path.lexists(f"/proc/{info.pid}/root/bin/tr")          # deleted before: the whiteout came back
    assert os.path.lexists(f"/proc/{info.pid}/root/bin/cat")
    a.sup.remove("img", force=True)

    with pytest.raises(Refused) as e:
        b.ckpt.import_(export, "img2")
    assert "\n" not in str(e.value) and f"its image docker.io/{IMAGE_REF} (" in str(e.value), e.value
    assert f"`agentctl pull docker.io/{IMAGE_REF}`" in str(e.value)
    assert "img2" not in [c.name for c in b.sup.containers()]
    b.sup.images.load(image_tar)
    keep_logs_on_failure(b, "img2", lambda: b.ckpt.restore("img2"))
    moved = b.sup.get("img2")
    wait_for(lambda: root_count(moved.pid) >= at + 3, what="the imported image container to count on")
    assert in_root(moved.pid, "marker") == "written-before"
    assert not os.path.lexists(f"/proc/{moved.pid}/root/bin/tr")
    b.sup.remove("img2", force=True)
    b.ckpt.remove("img2")
    a.ckpt.remove("img")


def test_an_idmapped_root_is_idmapped_again_at_the_restore(agents, loop_block_device, tmpfs):
    """A user-namespace container whose root the kernel idmapped (ext4 here; tmpfs too from
    6.3): its files are stored with the container's own ids (0 on disk for its root). CRIU keeps
    no idmap, so the restore idmaps the root again itself, with the container's mapping: the
    restored counter goes on writing its file, still stored as 0 on disk (without the idmap
    it would write as the host uid of its block, and could not write a file owned by 0). The
    same for a volume on that file system.
    Imported onto the second agentd while its block is held: a new block there (the images'
    mapping and tmpfs owners moved), the root and volume idmapped with it, the count goes on."""
    a, b = agents
    mnt = os.path.join(tmpfs.top, "ext4")
    os.makedirs(mnt)
    subprocess.run(["mkfs.ext4", "-q", "-F", loop_block_device.path], check=True, capture_output=True)
    subprocess.run(["mount", loop_block_device.path, mnt], check=True)
    try:
        rootfs = os.path.join(mnt, "rootfs")
        os.makedirs(os.path.join(rootfs, "bin"))
        shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
        for applet in ("sh", "sleep", "echo"):
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        vol = os.path.join(mnt, "vol")
        os.makedirs(vol)
        both = COUNTER.replace("echo $i > /count;", "echo $i > /count; echo $i > /data/count;")
        old = a.sup.create(from_json({"name": "idm", "argv": ["sh", "-c", both], "rootfs": rootfs,
                                      "volumes": [f"{vol}:/data"], "network": "none", "limits": LIMITS}, a.config))
        idmapped = {"/": "idmapped", "/data": "idmapped"}
        assert (a.sup.get("idm").userns or {}).get("idmap") == idmapped, a.sup.get("idm").userns
        wait_for(lambda: count(rootfs) >= 5, what="the counter to reach 5")
        for d in (rootfs, vol):
            assert os.stat(os.path.join(d, "count")).st_uid == 0      # stored through the idmap
        keep_logs_on_failure(a, "idm", lambda: a.ckpt.checkpoint("idm"))
        assert layout.read_record(layout.path(a.state, "idm"))["idmapped"] == ["/", "/data"]
        at = count(rootfs)
        a.sup.remove("idm")
        keep_logs_on_failure(a, "idm", lambda: a.ckpt.restore("idm"))
        info = a.sup.get("idm")
        assert info.state == "running" and info.id != old.id
        assert (info.userns or {}).get("idmap") == idmapped
        with open(f"/proc/{info.pid}/mountinfo") as f:
            points = {line.split()[4]: line.split()[5].split(",") for line in f}
        assert "idmapped" in points["/"] and "idmapped" in points["/data"], points
        wait_for(lambda: count(rootfs) >= at + 3 and count(vol) >= at + 3, what="the restored counter to go on")
        for d in (rootfs, vol):
            assert os.stat(os.path.join(d, "count")).st_uid == 0
        assert stdout_counts(a, info)[0] in (at, at + 1)
        assert not [p for p in os.listdir("/run") if p.startswith("cga-restore-root-")]

        # onto the second agentd while the first's checkpointed container still holds its
        # block: moved to a free block there (images remapped), its files still its own
        block = a.sup.spec_of("idm").userns["uid"][0][1]
        a.ckpt.remove("idm")
        export = os.path.join(tmpfs.top, "idm.tar")
        keep_logs_on_failure(a, "idm", lambda: a.ckpt.checkpoint("idm", export=export))
        at2 = count(rootfs)
        moved = keep_logs_on_failure(b, "idm2", lambda: b.ckpt.import_(export, "idm2"))
        minfo = b.sup.get("idm2")
        new_block = b.sup.spec_of("idm2").userns["uid"][0][1]
        assert new_block != block
        assert moved["userns"] == {"uid_base": new_block, "checkpoint_uid_base": block, "remapped": True}, moved
        # the checkpoint's record says the block its images now hold (a later restore claims that one)
        assert layout.read_record(layout.path(b.state, "idm2"))["spec"]["userns"] == b.sup.spec_of("idm2").userns
        assert uid_map(minfo.pid) == f"0 {new_block} 65536"
        assert (minfo.userns or {}).get("idmap") == idmapped
        wait_for(lambda: count(rootfs) >= at2 + 3 and count(vol) >= at2 + 3, what="the remapped counter to go on")
        for d in (rootfs, vol):
            assert os.stat(os.path.join(d, "count")).st_uid == 0
        assert stdout_counts(b, minfo)[0] in (at2, at2 + 1)
        b.sup.remove("idm2", force=True)
        b.ckpt.remove("idm2")
        a.sup.remove("idm", force=True)
        a.ckpt.remove("idm")
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)
