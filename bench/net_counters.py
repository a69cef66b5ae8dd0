"""Collection cost of containers' network counters, as ratios measured in one run.

    python3 bench/net_counters.py [--containers 100] [--rounds 5]

Makes N real "containers": a cgroup each, a sleeping process in a network
namespace of its own, and an eth0 (a veth pair whose other end is in one
namespace this bench makes; no traffic leaves it). Then, as CPU time of the
measuring thread (user + system: the kernel's work of generating the files
counts, time lost to other load does not), the best of --rounds rounds:

1. a collector pass over the N cgroups without network counters (the
   containers listed without a pid) against one with them (agent/netmeter.py:
   one pread of each kept-open /proc/<pid>/net/dev): the cost per container and
   the ratio;
2. three ways to read one namespace's interface counters, per namespace:
   kept-open /proc/<pid>/net/dev re-read with pread (what agent/netmeter.py
   does), open/read/close of it (cAdvisor's way), and a netlink RTM_GETLINK
   dump (IFLA_STATS64) on a socket kept open in the namespace;
3. cAdvisor's TCP/UDP socket-state families' source, /proc/<pid>/net/{tcp,tcp6,
   udp,udp6} read and counted by state, against the net/dev read.
"""
from __future__ import annotations

import argparse
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.collector import Collector          # noqa: E402
from agent.config import load_config           # noqa: E402
from agent.model import ContainerInfo          # noqa: E402
from runtime import namespaces, netstat        # noqa: E402
from runtime.cgroupfs import find_mount        # noqa: E402

RTM_GETLINK, NLM_F_REQUEST, NLM_F_DUMP, NLMSG_DONE = 18, 1, 0x300, 3
IFLA_IFNAME, IFLA_STATS64 = 3, 23


def cpu(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def netlink_socket_in(pid: int) -> socket.socket:
    """A NETLINK_ROUTE socket created inside pid's network namespace (from a throwaway thread)."""
    out = []

    def enter():
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            namespaces.setns(fd, namespaces.CLONE_NEWNET)
        finally:
            os.close(fd)
        out.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE))
    t = threading.Thread(target=enter)
    t.start()
    t.join()
    return out[0]


def netlink_dump(sock: socket.socket) -> dict:
    """name -> (rx_bytes, tx_bytes) of every link, from one RTM_GETLINK dump."""
    req = struct.pack("=IHHII", 32, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + \
        struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
    sock.send(req)
    out = {}
    while True:
        data = sock.recv(65536)
        off = 0
        while off < len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == NLMSG_DONE:
                return out
            a = off + 16 + 16
            name, st = None, None
            while a < off + length:
                alen, atype = struct.unpack_from("=HH", data, a)
                if atype == IFLA_IFNAME:
                    name = data[a + 4:a + alen - 1].decode()
                elif atype == IFLA_STATS64:
                    st = struct.unpack_from("=QQQQ", data, a + 4)   # rx_packets tx_packets rx_bytes tx_bytes
                a += (alen + 3) & ~3
            if name is not None and st is not None:
                out[name] = (st[2], st[3])
            off += (length + 3) & ~3


def socket_states(pid: int) -> int:
    n = 0
    for f in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/{pid}/net/{f}") as fh:
            for line in fh.read().splitlines()[1:]:
                n += int(line.split()[3], 16) >= 0
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    mount = find_mount()
    top = os.path.join(mount, f"cga-bench-{secrets.token_hex(4)}")
    os.mkdir(top)
    peer = f"cga-bench-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", peer], check=True)
    procs, infos, bare = [], [], []
    try:
        for i in range(args.containers):
            cg = os.path.join(top, f"c{i}")
            os.mkdir(cg)
            p = subprocess.Popen(["unshare", "--net", "--", "sleep", "3600"],
                                 preexec_fn=lambda cg=cg: open(os.path.join(cg, "cgroup.procs"), "w").write("0"))
            procs.append(p)
            while netstat.netns_inode(p.pid) == netstat.netns_inode("self"):
                time.sleep(0.001)
            a, b = f"cgbc{i}", f"cgbp{i}"
            subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns", peer], check=True)
            subprocess.run(["ip", "link", "set", a, "netns", str(p.pid)], check=True)
            subprocess.run(["nsenter", "-t", str(p.pid), "-n", "ip", "link", "set", a, "name", "eth0"], check=True)
            infos.append(ContainerInfo(id=f"b{i:011d}", name=f"b{i}", cgroup=cg, limits=None, state="running",
                                       pid=p.pid))
            bare.append(ContainerInfo(id=f"b{i:011d}", name=f"b{i}", cgroup=cg, limits=None, state="running"))
        conf = load_config(None, {"collector.interval": "1s", "collector.watch_roots": [],
                                  "agent.metrics_listen": "127.0.0.1:0"})
        n = args.containers
        with_net = Collector(conf, lambda: infos, slow_every=1, idle_every=1)
        without = Collector(conf, lambda: bare, slow_every=1, idle_every=1)
        try:
            for c in (with_net, without):
                c.collect_once()
            snap = with_net.collect_once()
            assert all(snap.samples[i.cgroup].network for i in infos), "eth0 not counted"
            t_with = cpu(with_net.collect_once, args.rounds)
            t_without = cpu(without.collect_once, args.rounds)
        finally:
            with_net.stop()
            without.stop()
        print(f"collector pass, {n} containers (every file every pass):")
        print(f"  without network counters  {t_without / n * 1e6:8.1f} us/container")
        print(f"  with network counters     {t_with / n * 1e6:8.1f} us/container")
        print(f"  ratio with/without        {t_with / t_without:8.2f}   "
              f"(network part {(t_with - t_without) / n * 1e6:.1f} us/container)")

        readers = [netstat.NetDevReader.open(p.pid) for p in procs]
        socks = [netlink_socket_in(p.pid) for p in procs]
        try:
            def kept():
                for r in readers:
                    r._raw = None       # parse every time, as when counters move
                    r.read()

            def reopen():
                for p in procs:
                    netstat.read_net_dev(p.pid)

            def netlink():
                for s in socks:
                    netlink_dump(s)

            def states():
                for p in procs:
                    socket_states(p.pid)
            assert netlink_dump(socks[0]).keys() == {"lo", "eth0"}
            t_kept, t_open, t_nl, t_st = (cpu(f, args.rounds) for f in (kept, reopen, netlink, states))
        finally:
            for r in readers:
                r.close()
            for s in socks:
                s.close()
        print("one namespace's counters (2 interfaces), per namespace:")
        print(f"  kept-open net/dev + pread  {t_kept / n * 1e6:8.1f} us   1.00")
        print(f"  open/read/close net/dev    {t_open / n * 1e6:8.1f} us   {t_open / t_kept:.2f}")
        print(f"  netlink RTM_GETLINK dump   {t_nl / n * 1e6:8.1f} us   {t_nl / t_kept:.2f}")
        print(f"TCP/UDP socket states (net/tcp,tcp6,udp,udp6; no sockets open): "
              f"{t_st / n * 1e6:.1f} us, {t_st / t_kept:.2f}x the counters")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", peer])
        for i in range(args.containers):
            try:
                os.rmdir(os.path.join(top, f"c{i}"))
            except OSError:
                pass
        os.rmdir(top)


if __name__ == "__main__":
    main()
