"""runtime.netstat's parser and interface rule, and the container_network_* rendering.

The net/dev text is in the kernel's format (net/core/net-procfs.c: two header
lines, then "name: 8 receive and 8 transmit counters"), as read on this host.
"""
from __future__ import annotations

from types import MappingProxyType

import pytest
from prometheus_client.parser import text_string_to_metric_families as text_parse

from agent.collector import Snapshot
from agent.model import ContainerInfo
from exporters import prometheus
from runtime import netstat, stats

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 2077855587  431375    0    0    0     0          0         0 2077855587  431375    0    0    0     0       0          0
  eth0: 260703152    6340    3    4    0     0          0         0   456897    3610    5    6    0     0       0          0
vethab12:     100       1    0    0    0     0          0         0      200       2    0    0    0     0       0          0
docker0:      10       1    0    0    0     0          0         0       20       1    0    0    0     0       0          0
nerdctl0:     10       1    0    0    0     0          0         0       20       1    0    0    0     0       0          0
  br-x1:      11       1    0    0    0     0          0         0       22       1    0    0    0     0       0          0
"""


def test_parse_takes_receive_and_transmit_bytes_packets_errors_dropped():
    by = {i.name: i for i in netstat.parse_net_dev(NET_DEV)}
    assert by["eth0"] == netstat.IfStats("eth0", 260703152, 6340, 3, 4, 456897, 3610, 5, 6)
    assert len(by) == 6


def test_counted_interfaces_follow_cadvisors_ignored_prefixes():
    # cAdvisor's ignoredDevicePrefixes: lo, veth, docker, nerdctl, compared lower-cased
    assert [i.name for i in netstat.counted(netstat.parse_net_dev(NET_DEV))] == ["br-x1", "eth0"]
    for name in ("lo", "LO", "lo0", "veth1", "VETHx", "docker0", "nerdctl1"):
        assert netstat.is_ignored(name), name
    for name in ("eth0", "wlan0", "br0", "ens3", "cgadash0"):
        assert not netstat.is_ignored(name), name
    assert netstat.totals(netstat.counted(netstat.parse_net_dev(NET_DEV))) == (260703163, 456919)


@pytest.mark.parametrize("text", [
    "h1\nh2\n  eth0 1 2 3\n",                           # no colon
    "h1\nh2\n  eth0: 1 2 3 4 5 6 7 8\n",                # 8 fields, 16 expected
    "h1\nh2\n  eth0: " + " ".join(["x"] * 16) + "\n",   # not numbers
    b"h1\nh2\n",                                         # not text
])
def test_malformed_text_raises_value_error_only(text):
    with pytest.raises(ValueError):
        netstat.parse_net_dev(text)


def _snapshot(samples, infos):
    return Snapshot(taken_at=1000.0, monotonic=1.0, duration=0.01, samples=MappingProxyType(samples),
                    containers=MappingProxyType({i.id: i for i in infos}), mount="/sys/fs/cgroup")


def test_render_exports_the_eight_families_per_interface_and_nothing_for_none():
    ifaces = netstat.counted(netstat.parse_net_dev(NET_DEV))
    rx, tx = netstat.totals(ifaces)
    own = stats.CgroupSample(inode=1, net_rx_bytes=rx, net_tx_bytes=tx, network=ifaces)
    host = stats.CgroupSample(inode=2)                       # the host's network: None
    only_lo = stats.CgroupSample(inode=3, net_rx_bytes=0, net_tx_bytes=0, network=())
    infos = [ContainerInfo(id=f"c{i}", name=n, cgroup=f"/sys/fs/cgroup/a/{n}", limits=None)
             for i, n in enumerate(("own", "host", "lo"))]
    snap = _snapshot({"/sys/fs/cgroup/a/own": own, "/sys/fs/cgroup/a/host": host,
                      "/sys/fs/cgroup/a/lo": only_lo}, infos)
    text = prometheus.render(snap).decode()
    fams = {f.name: f for f in text_parse(text) if f.name.startswith("container_network_")}
    want = {
        "container_network_receive_bytes": "Cumulative count of bytes received",
        "container_network_receive_packets": "Cumulative count of packets received",
        "container_network_receive_packets_dropped": "Cumulative count of packets dropped while receiving",
        "container_network_receive_errors": "Cumulative count of errors encountered while receiving",
        "container_network_transmit_bytes": "Cumulative count of bytes transmitted",
        "container_network_transmit_packets": "Cumulative count of packets transmitted",
        "container_network_transmit_packets_dropped": "Cumulative count of packets dropped while transmitting",
        "container_network_transmit_errors": "Cumulative count of errors encountered while transmitting",
    }
    assert {n: (f.type, f.documentation) for n, f in fams.items()} == {n: ("counter", h) for n, h in want.items()}
    got = {(s.name, s.labels["name"], s.labels["interface"]): s.value for f in fams.values() for s in f.samples}
    assert {(n, i) for _f, n, i in got} == {("own", "eth0"), ("own", "br-x1")}   # none for host, none for lo-only
    assert got[("container_network_transmit_bytes_total", "own", "eth0")] == 456897
    assert got[("container_network_receive_packets_dropped_total", "own", "eth0")] == 4
    assert got[("container_network_receive_errors_total", "own", "eth0")] == 3
    assert got[("container_network_transmit_packets_dropped_total", "own", "eth0")] == 6
    assert got[("container_network_transmit_errors_total", "own", "eth0")] == 5
