"""Bridge networks for real: namespaces, veth pairs, a bridge and nftables
rules on this host, driven through agentctl and the API of a real agentd.

Traffic goes only to 127.0.0.1 and to addresses inside the namespaces and
bridges that the test or the agent made (the "outside" servers of the
egress test live in network namespaces this test makes)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid

import pytest

from agent.client import Client
from agent.network import names
from conftest import kill_tree
from test_agentctl import ctl, start_agentd, stop_agentd, wait_for

BUSYBOX = "/bin/busybox"
# busybox's wget looks "http" up through glibc's NSS, which a static binary
# cannot load in a bare rootfs: a plain request through nc instead
FETCH = 'fetch() { printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 "$1" "${2:-80}"; }; '
APPLETS = ("sh", "cat", "sleep", "ping", "wget", "httpd", "echo", "ip", "hostname", "nc")


def _need(cmd: str) -> None:
    if shutil.which(cmd) is None:
        print(f"SKIP: {cmd} is not installed (scripts/setup.sh installs it)")
        pytest.skip(f"{cmd} is not installed")


@pytest.fixture(scope="module")
def rootfs():
    top = tempfile.mkdtemp(prefix="cga-net-root-")
    os.chmod(top, 0o755)
    os.makedirs(os.path.join(top, "bin"))
    os.makedirs(os.path.join(top, "www"))
    os.makedirs(os.path.join(top, "etc"))
    shutil.copy(BUSYBOX, os.path.join(top, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(top, "bin", applet))
    with open(os.path.join(top, "www", "index.html"), "w") as f:
        f.write("hello from the container\n")
    yield top
    shutil.rmtree(top, ignore_errors=True)


def _start(extra_toml: str = ""):
    from runtime.cgroupfs import Cgroup, find_mount
    root = Cgroup(os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}"))
    os.mkdir(root.path)
    top = tempfile.mkdtemp(prefix="cga-net-")
    return start_agentd(root, top, extra_toml)


def _teardown(d) -> None:
    stop_agentd(d)
    kill_tree(d.root)
    # what the agent made and no container keeps (the containers are gone)
    sweep(d)
    shutil.rmtree(d.top, ignore_errors=True)


def tag_of(d) -> str:
    return names.tag(os.path.join(d.top, "state"))


def ours(d) -> dict:
    """What of this agent's is in the kernel: links (by alias), its nft
    table, bound namespaces."""
    t = tag_of(d)
    links = []
    out = subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True, check=True).stdout
    for link in json.loads(out):
        a = link.get("ifalias") or ""
        if a.startswith(f"cgroup-agent:{t}:"):
            links.append((link["ifname"], a))
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    nsdir = os.path.join(d.top, "state", "network", "ns")
    return {"veths": [n for n, a in links if ":veth:" in a], "bridges": [n for n, a in links if ":bridge:" in a],
            "table": names.table(t) in tables.split(),
            "netns": sorted(os.listdir(nsdir)) if os.path.isdir(nsdir) else []}


def sweep(d) -> None:
    """Test clean-up only: remove what a failed test may have left."""
    from runtime import netns
    t = tag_of(d)
    st = ours(d)
    for n in st["veths"] + st["bridges"]:
        subprocess.run(["ip", "link", "del", n], capture_output=True)
    subprocess.run(["nft", "delete", "table", "ip", names.table(t)], capture_output=True)
    nsdir = os.path.join(d.top, "state", "network", "ns")
    for f in st["netns"]:
        netns.remove(os.path.join(nsdir, f))
    shutil.rmtree(f"/run/cgroup-agent-net-{t}", ignore_errors=True)


@pytest.fixture
def agentd():
    d = _start()
    try:
        yield d
    finally:
        _teardown(d)


def run(d, rootfs, name, script, *flags, detach=True):
    r = ctl(d, "run", *(["-d"] if detach else []), "--name", name, "--rootfs", rootfs, "-e", "PATH=/bin",
            *flags, "--", "sh", "-c", script)
    return r


def inspect(d, name) -> dict:
    return Client(d.sock).call("GET", f"/v1/containers/{name}")


def output(d, name) -> str:
    info = wait_for(lambda: (lambda i: i if i["state"] == "exited" else None)(inspect(d, name)), 120,
                    f"{name} to exit")
    logs = os.path.join(d.top, "state", "logs", info["id"])
    with open(os.path.join(logs, "stdout.log")) as f, open(os.path.join(logs, "stderr.log")) as g:
        return f.read() + g.read()


def test_bridge_containers_reach_each_other_by_name_and_another_network_does_not(agentd, rootfs):
    d = agentd
    for n in ("alpha", "beta"):
        r = run(d, rootfs, n, "httpd -f -p 80 -h /www")
        assert r.returncode == 0, r.stderr
    a, b = inspect(d, "alpha"), inspect(d, "beta")
    assert a["network"]["name"] == "bridge" and a["network"]["ip"] and a["network"]["ip"] != b["network"]["ip"]
    assert a["network"]["mac"] == names.mac_of(a["network"]["ip"])
    # names resolve through the /etc/hosts agentd writes, never the host's resolver
    # (busybox's ping needs a raw socket: CAP_NET_RAW over the namespace,
    # which the host's ids have and a container's own user namespace has not)
    r = run(d, rootfs, "pinger", "cat /etc/hosts; ping -c 1 -W 5 beta && echo PING-BETA-OK;"
            " ping -c 1 -W 5 alpha && echo PING-ALPHA-OK", "--userns", "host", detach=False)
    out = output(d, "pinger")
    assert "PING-BETA-OK" in out and "PING-ALPHA-OK" in out, out
    assert f"{b['network']['ip']}\tbeta" in out
    # a container in its own user namespace (the default) reaches them by name too
    r = run(d, rootfs, "fetcher", FETCH + "fetch alpha && fetch beta", detach=False)
    out = output(d, "fetcher")
    assert out.count("hello from the container") == 2, out
    # another network: isolated in nftables, and its /etc/hosts does not list them
    r = ctl(d, "network", "create", "other")
    assert r.returncode == 0, r.stderr
    r = run(d, rootfs, "outsider", FETCH + f"fetch {a['network']['ip']} && echo REACHED; "
            "fetch alpha || echo NO-NAME; ip -4 addr show eth0", "--network", "other",
            detach=False)
    out = output(d, "outsider")
    assert "REACHED" not in out and "NO-NAME" in out, out
    other = inspect(d, "outsider")["network"]
    assert other["name"] == "other" and other["ip"] in out
    ls = json.loads(ctl(d, "network", "ls", "--json").stdout)
    assert {n["name"] for n in ls} >= {"bridge", "other"}
    # the same agent, the same containers: the isolation rule really is what blocks it
    assert any(n["name"] == "other" and n["containers"] == [{"name": "outsider", "ip": other["ip"]}] for n in ls)
