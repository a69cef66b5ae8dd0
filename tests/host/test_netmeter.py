"""Containers' network counters (agent/netmeter.py) against real namespaces.

A "container" here is a cgroup made by the test with a process in a network
namespace of its own (``unshare --net``), handed to the Collector through the
same ``containers`` callable the supervisor gives it. The test makes a second
namespace (``ip netns add``) and a veth pair, one end moved into the
container's namespace (named eth0, as a container's), the other into the
test's namespace with a TCP listener on it. Traffic goes only to 127.0.0.1
inside the container's namespace and to the address inside the test's
namespace.

Packet overhead, stated: the container's transmit counter counts Ethernet,
IPv4 and TCP headers too: at most 66 bytes per 1448-byte segment (4.6%; GSO
on veth makes it less), plus the handshake and FIN; so N MiB sent shows as
N MiB to N MiB * 1.05 + 64 KiB.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from agent import selfmetrics
from agent.config import load_config
from agent.model import ContainerInfo
from exporters.prometheus import render
from runtime import netstat

IP = shutil.which("ip") or "/usr/sbin/ip"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MiB = 1 << 20
N = 16 * MiB           # sent over eth0 to the test's namespace
LO = 48 * MiB          # sent over the container's own loopback: never counted

if not (os.path.exists(IP) and os.path.exists(NSENTER) and os.path.exists(UNSHARE)):
    pytest.skip("iproute2 / util-linux (ip, nsenter, unshare) not installed", allow_module_level=True)

# The container's program: on a line "ADDR PORT NBYTES LOBYTES" it sends LOBYTES
# in UDP datagrams to 127.0.0.1 (its own loopback), then NBYTES over TCP to
# ADDR:PORT, waits for the listener to close, prints "sent", and sleeps.
SENDER = r"""
import socket, sys, time
addr, port, n, lo = sys.stdin.readline().split()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
left = int(lo)
while left > 0:
    u.sendto(b"\0" * min(8192, left), ("127.0.0.1", 9))
    left -= 8192
s = socket.create_connection((addr, int(port)))
s.sendall(b"\0" * int(n))
s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
print("sent", flush=True)
time.sleep(3600)
"""

LISTENER = r"""
import socket, sys
srv = socket.socket()
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
print("ready", flush=True)
c, _ = srv.accept()
got = 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    got += len(b)
c.close()
print(got, flush=True)
"""


def run(*argv):
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def config(mount):
    return load_config(None, {"collector.interval": "100ms", "collector.watch_roots": [],
                              "agent.metrics_listen": "127.0.0.1:0"})


def info_for(cg, pid, cid, name) -> ContainerInfo:
    return ContainerInfo(id=cid, name=name, cgroup=cg.path, limits=None, state="running", pid=pid)


@pytest.fixture(autouse=True)
def _fresh_selfmetrics():
    selfmetrics.reset()


@pytest.fixture
def peer_netns():
    """A network namespace made by the test (the far end of the container's link)."""
    name = f"cga-nm-{secrets.token_hex(4)}"
    run(IP, "netns", "add", name)
    yield name
    subprocess.run([IP, "netns", "del", name], capture_output=True, timeout=60)


def own_netns_container(spawn, cgroup, argv):
    """A process in ``cgroup`` in a network namespace of its own, loopback up."""
    p = spawn([UNSHARE, "--net", "--", *argv], cgroup=cgroup, stdin=subprocess.PIPE,
              stdout=subprocess.PIPE)
    # unshare execs argv in place: wait until the pid is in its own namespace
    host = netstat.netns_inode("self")
    deadline = time.monotonic() + 60
    while netstat.netns_inode(p.pid) == host and time.monotonic() < deadline:
        time.sleep(0.01)
    assert netstat.netns_inode(p.pid) != host
    run(NSENTER, "-t", str(p.pid), "-n", IP, "link", "set", "lo", "up")
    return p


def link(pid: int, peer: str, subnet: str):
    """A veth pair: eth0 in the container's namespace (.2), the other end in ``peer`` (.1)."""
    a, b = f"cgna{secrets.token_hex(3)}", f"cgnb{secrets.token_hex(3)}"
    run(IP, "link", "add", a, "type", "veth", "peer", "name", b)
    run(IP, "link", "set", a, "netns", str(pid))
    run(IP, "link", "set", b, "netns", peer)
    ns = (NSENTER, "-t", str(pid), "-n", IP)
    # no IPv6 on the link: no router solicitations or DAD adding bytes at their own times
    for cmd in ((NSENTER, "-t", str(pid), "-n"), (IP, "netns", "exec", peer)):
        run(*cmd, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
    run(*ns, "link", "set", a, "name", "eth0")
    run(*ns, "addr", "add", f"{subnet}.2/30", "dev", "eth0")
    run(*ns, "link", "set", "eth0", "up")
    run(IP, "-n", peer, "addr", "add", f"{subnet}.1/30", "dev", b)
    run(IP, "-n", peer, "link", "set", b, "up")


def lo_tx(pid: int) -> int:
    with open(f"/proc/{pid}/net/dev") as f:
        return next(i.tx_bytes for i in netstat.parse_net_dev(f.read()) if i.name == "lo")


def series(text: str, family: str, cid_path: str) -> dict:
    """interface -> value of ``family``'s series for the cgroup id ``cid_path``."""
    out = {}
    for line in text.splitlines():
        if line.startswith(family + "{") and f'id="{cid_path}"' in line:
            iface = line.split('interface="', 1)[1].split('"', 1)[0]
            out[iface] = int(line.rsplit(" ", 1)[1])
    return out


def test_transmit_counter_rises_by_what_the_container_sent_not_counting_loopback(
        cgroup_factory, cgroup_mount, spawn, collectors, peer_netns):
    cg, host_cg = cgroup_factory(), cgroup_factory()
    p = own_netns_container(spawn, cg, [sys.executable, "-c", SENDER])
    subnet = f"10.213.{secrets.randbelow(250) + 1}"
    link(p.pid, peer_netns, subnet)
    port = 18000 + secrets.randbelow(2000)
    lst = subprocess.Popen([IP, "netns", "exec", peer_netns, sys.executable, "-c", LISTENER, f"{subnet}.1",
                            str(port)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert lst.stdout.readline().strip() == b"ready"
        hostp = spawn(["sleep", "3600"], cgroup=host_cg)     # the host's network namespace
        infos = [info_for(cg, p.pid, "ae0000000001", "sender"),
                 info_for(host_cg, hostp.pid, "ae0000000002", "onhost")]
        col = collectors(config(cgroup_mount), lambda: infos)
        s0 = col.collect_once().samples[cg.path]
        assert [i.name for i in s0.network] == ["eth0"]        # lo is not among the counted
        lo0 = lo_tx(p.pid)
        p.stdin.write(f"{subnet}.1 {port} {N} {LO}\n".encode())
        p.stdin.flush()
        assert p.stdout.readline().strip() == b"sent"
        assert int(lst.stdout.readline()) == N                  # the listener got every byte
        snap = col.collect_once()
    finally:
        lst.kill()
        lst.wait(30)
    s1 = snap.samples[cg.path]
    assert lo_tx(p.pid) - lo0 >= LO          # the loopback traffic did happen ...
    d_tx = s1.net_tx_bytes - s0.net_tx_bytes
    assert N <= d_tx <= N * 1.05 + 64 * 1024, d_tx     # ... and is not in the figure
    assert s1.net_rx_bytes > s0.net_rx_bytes         # the listener's ACKs came in
    assert (s1.net_rx_bytes, s1.net_tx_bytes) == (s1.network[0].rx_bytes, s1.network[0].tx_bytes)
    assert s1.network[0].tx_packets > s0.network[0].tx_packets + N // 65536
    # the host-network container: no figures of its own, None and no series (never 0)
    sh = snap.samples[host_cg.path]
    assert sh.net_rx_bytes is None and sh.net_tx_bytes is None and sh.network is None
    text = render(snap).decode()
    cid, hid = snap.rel_id(cg.path), snap.rel_id(host_cg.path)
    assert series(text, "container_network_transmit_bytes_total", cid) == {"eth0": s1.net_tx_bytes}
    assert series(text, "container_network_receive_bytes_total", cid) == {"eth0": s1.net_rx_bytes}
    for fam in ("receive_packets", "receive_packets_dropped", "receive_errors", "transmit_packets",
                "transmit_packets_dropped", "transmit_errors"):
        assert set(series(text, f"container_network_{fam}_total", cid)) == {"eth0"}, fam
    assert f'id="{hid}"' in text and not any(
        line.startswith("container_network_") and f'id="{hid}"' in line for line in text.splitlines())
    assert 'interface="lo"' not in text
    # the root cgroup (id "/"): the host's interfaces, as cAdvisor, loopback left out
    host_ifaces = {i.name for i in netstat.read_net_dev("self")}
    assert {i.name for i in snap.root.network} == host_ifaces
    assert set(series(text, "container_network_receive_bytes_total", "/")) == host_ifaces
    if os.path.exists(PROMTOOL):
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                           timeout=300)
        assert r.returncode == 0 and not r.stdout and not r.stderr, (r.stdout, r.stderr)
    else:
        print("promtool not installed: exposition not linted")


def test_a_vanished_or_foreign_process_is_counted_once_and_the_pass_goes_on(
        cgroup_factory, cgroup_mount, spawn, collectors):
    good_cg, dead_cg, foreign_cg = cgroup_factory(), cgroup_factory(), cgroup_factory()
    good = own_netns_container(spawn, good_cg, ["sleep", "3600"])
    dead = own_netns_container(spawn, dead_cg, ["sleep", "3600"])
    dead.kill()
    dead.wait(30)                              # gone: its cgroup stays, empty
    other = own_netns_container(spawn, foreign_cg, ["sleep", "3600"])
    # the foreign entry names the good container's pid: a process of another cgroup
    # (what a reused pid looks like) must not be read for it
    infos = [info_for(good_cg, good.pid, "ae0000000011", "good"),
             info_for(dead_cg, dead.pid, "ae0000000012", "dead"),
             info_for(foreign_cg, good.pid, "ae0000000013", "foreign")]
    assert other.poll() is None
    col = collectors(config(cgroup_mount), lambda: infos)
    snap = col.collect_once()
    assert snap.samples[good_cg.path].net_tx_bytes == 0     # own namespace, only lo: a measured 0
    assert snap.samples[good_cg.path].network == ()
    for cg in (dead_cg, foreign_cg):
        assert snap.samples[cg.path].net_tx_bytes is None
    errors = selfmetrics.get("collection_errors_total", reason="network")
    assert errors == 2
    first = snap.samples[good_cg.path]
    snap = col.collect_once()                  # counted once per pid, not once per pass
    assert selfmetrics.get("collection_errors_total", reason="network") == 2
    assert snap.samples[good_cg.path].net_tx_bytes == 0
    # nothing moved in that idle container: the very same sample object (the renderer's cache keys on it)
    assert snap.samples[good_cg.path] is first


def test_the_final_reading_of_a_container_no_pass_saw_counts_no_error(
        cgroup_factory, cgroup_mount, spawn, collectors):
    """The supervisor's final reading (sample_now) of a container created and
    removed between two passes: its process is gone, no namespace was ever
    opened for it. It gets no network figures and is not a collection error
    (it was counted as one, and logged, at every such removal: 6020 times in
    a churn of 6000 containers)."""
    seen_cg, unseen_cg = cgroup_factory(), cgroup_factory()
    seen = own_netns_container(spawn, seen_cg, ["sleep", "3600"])
    infos = [info_for(seen_cg, seen.pid, "ae0000000031", "seen")]
    col = collectors(config(cgroup_mount), lambda: infos)
    assert col.collect_once().samples[seen_cg.path].net_tx_bytes == 0
    unseen = own_netns_container(spawn, unseen_cg, ["sleep", "3600"])
    unseen.kill()
    unseen.wait(30)
    final = col.sample_now(info_for(unseen_cg, unseen.pid, "ae0000000032", "unseen"))
    assert final is not None and final.net_tx_bytes is None
    assert selfmetrics.get("collection_errors_total", reason="network") == 0
    # the one a pass saw still gets its figures at its final reading, after its exit
    seen.kill()
    seen.wait(30)
    final = col.sample_now(ContainerInfo(id="ae0000000031", name="seen", cgroup=seen_cg.path, limits=None,
                                         state="exited", pid=None))
    assert final.net_tx_bytes == 0 and final.network == ()
    assert selfmetrics.get("collection_errors_total", reason="network") == 0


FINAL = r"""
import socket, sys
addr = sys.stdin.readline().strip()
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"y" * 5000, (addr, 9))
print("sent", flush=True)
sys.stdin.readline()
"""


def _eth0_tx(netns_file: str) -> int:
    out = subprocess.run([NSENTER, f"--net={netns_file}", "cat", "/proc/net/dev"], check=True,
                         capture_output=True, timeout=60).stdout.decode()
    return next(i.tx_bytes for i in netstat.parse_net_dev(out) if i.name == "eth0")


def _released(peer_netns) -> bool:
    for _ in range(600):
        if b"cgnb" not in subprocess.run([IP, "-n", peer_netns, "link"], capture_output=True).stdout:
            return True
        time.sleep(0.1)
    return False


def test_traffic_after_the_process_exited_is_still_counted_until_the_container_is_unlisted(
        cgroup, cgroup_mount, spawn, collectors, peer_netns):
    """The kernel goes on sending what an exited process left in its sockets'
    send queues (a bridge container's last write, retransmits): that traffic
    is the container's. Stand-in for the draining queue, made deterministic:
    the test keeps its own handle on the container's namespace and sends a
    datagram there after the process is gone. The pass after that counts it
    (the meter used to close the namespace at the first pass after the exit,
    and the bill then missed up to a send queue per socket: 453 KiB of a
    50 MiB transfer once). Unlisting the container frees the namespace."""
    p = own_netns_container(spawn, cgroup, [sys.executable, "-c", FINAL])
    subnet = f"10.214.{secrets.randbelow(250) + 1}"
    link(p.pid, peer_netns, subnet)
    # a fixed neighbour: the datagram leaves at once (no ARP wait), to a MAC nobody has
    run(NSENTER, "-t", str(p.pid), "-n", IP, "neigh", "replace", f"{subnet}.1", "lladdr",
        "02:00:00:00:00:01", "dev", "eth0", "nud", "permanent")
    held = os.open(f"/proc/{p.pid}/ns/net", os.O_RDONLY)
    netns_file = f"/proc/{os.getpid()}/fd/{held}"
    try:
        infos = [info_for(cgroup, p.pid, "ae0000000021", "final")]
        col = collectors(config(cgroup_mount), lambda: infos)
        before = col.collect_once().samples[cgroup.path].net_tx_bytes
        # traffic after the last pass, then the process exits
        p.stdin.write(f"{subnet}.1\n".encode())
        p.stdin.flush()
        assert p.stdout.readline().strip() == b"sent"
        want = _eth0_tx(netns_file)
        assert want >= before + 5000
        p.stdin.close()
        p.wait(30)
        infos[0] = ContainerInfo(id="ae0000000021", name="final", cgroup=cgroup.path, limits=None,
                                 state="exited", pid=None)
        assert col.collect_once().samples[cgroup.path].net_tx_bytes == want   # the figure at exit
        # the namespace sends more with its process gone
        run(NSENTER, f"--net={netns_file}", sys.executable, "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            f".sendto(b'z' * 7000, ('{subnet}.1', 9))")
        after = _eth0_tx(netns_file)
        assert after >= want + 7000
        assert col.collect_once().samples[cgroup.path].net_tx_bytes == after
        assert col.collect_once().samples[cgroup.path].net_tx_bytes == after   # steady while listed
    finally:
        os.close(held)
    # the meter's descriptor alone holds the namespace now: the link stays while the container is listed
    assert b"cgnb" in subprocess.run([IP, "-n", peer_netns, "link"], capture_output=True).stdout
    infos.clear()
    col.collect_once()
    assert _released(peer_netns), "the container's namespace outlived its listing: a descriptor leaked"


def test_an_exited_containers_loopback_only_namespace_is_freed_at_the_next_pass(
        cgroup, cgroup_mount, spawn, collectors):
    """Nothing billable can move in a namespace with only a loopback
    (``--network none``): it is not kept for an exited container."""
    p = own_netns_container(spawn, cgroup, [sys.executable, "-c", "import sys; sys.stdin.readline()"])
    infos = [info_for(cgroup, p.pid, "ae0000000022", "none")]
    col = collectors(config(cgroup_mount), lambda: infos)
    assert col.collect_once().samples[cgroup.path].net_tx_bytes == 0
    p.stdin.close()
    p.wait(30)
    infos[0] = ContainerInfo(id="ae0000000022", name="none", cgroup=cgroup.path, limits=None,
                             state="exited", pid=None)
    assert col.collect_once().samples[cgroup.path].net_tx_bytes == 0
    # the meter's descriptor on that namespace is closed (it was the last holder)
    assert col._net._entries[cgroup.path].reader is None


def test_agentd_exports_a_network_none_containers_link_and_nothing_for_a_host_network_one(
        cgroup, tmp_path, peer_netns):
    """End to end: agentd's own container pid, its namespace, /metrics."""
    import urllib.request
    from helpers import Agentd, wait_for
    a = Agentd(cgroup, tmp_path)
    a.start()
    try:
        port = a.args[a.args.index("--metrics-listen") + 1]
        a.client.call("POST", "/v1/containers", body={"name": "isolated", "argv": ["sleep", "3600"],
                                                      "network": "none"})
        a.client.call("POST", "/v1/containers", body={"name": "onhost", "argv": ["sleep", "3600"]})
        pid = wait_for(lambda: a.inspect("isolated").get("pid"), what="the isolated container's pid")
        assert netstat.netns_inode(pid) != netstat.netns_inode("self")
        subnet = f"10.216.{secrets.randbelow(250) + 1}"
        link(pid, peer_netns, subnet)
        # a fixed neighbour with a MAC nobody has: the datagrams leave eth0 and go nowhere
        run(NSENTER, "-t", str(pid), "-n", IP, "neigh", "replace", f"{subnet}.1", "lladdr",
            "02:00:00:00:00:01", "dev", "eth0", "nud", "permanent")
        run(NSENTER, "-t", str(pid), "-n", sys.executable, "-c",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range(100): s.sendto(b'z' * 1000, ('{subnet}.1', 9))\n")

        def scraped():
            with urllib.request.urlopen(f"http://{port}/metrics", timeout=30) as r:
                text = r.read().decode()
            lines = [ln for ln in text.splitlines() if ln.startswith("container_network_transmit_bytes_total{")]
            mine = [ln for ln in lines if 'name="isolated"' in ln]
            if mine and int(mine[0].rsplit(" ", 1)[1]) >= 100 * 1000:
                return text, lines, mine
            return None
        text, lines, mine = wait_for(scraped, timeout=60, what="the isolated container's eth0 on /metrics")
        assert len(mine) == 1 and 'interface="eth0"' in mine[0]
        assert not any('name="onhost"' in ln for ln in text.splitlines() if ln.startswith("container_network_"))
        assert 'container_cpu_usage_seconds_total{id="' in text and 'name="onhost"' in text
    finally:
        a.stop()
