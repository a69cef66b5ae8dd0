"""Two public cAdvisor dashboards against a real Prometheus scraping agentd
on full cgroup v2 (issue 16).

agentd runs here with every optional metric set; its containers burn CPU
(under a cpu.max quota), hold memory (under memory.max), write to disk and
send UDP. Each container has a network namespace of its own (network
"none"); the test gives each an eth0, the end of a veth pair whose other end
is on a bridge in a namespace the test made (10.215.77.0/24, nothing routed
anywhere else), and the host one such link too (cgadash0), so that the
container_network_* families have series for the containers and for id="/"
(loopback is never counted). A real Prometheus (the Debian package, loopback only,
1 s scrapes) scrapes it, and every PromQL target of the dashboards' container
panels (tests/vm/dashboard_exprs.py, with their source) is evaluated: each
must return data. The one target that needs Prometheus's own
process_cpu_seconds_total is reported as skipped. The scrape is
also checked by `promtool check metrics`, and the root (id="/") and
machine_* series are present.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from conftest import destroy_cgroup
from dashboard_exprs import NOT_OURS, PANELS, promql
from helpers import free_port, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

if not (os.path.exists(PROMETHEUS) and os.path.exists(PROMTOOL)):
    pytest.skip("Debian package prometheus not installed (scripts/setup.sh installs it)",
                allow_module_level=True)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


WORKLOADS = {
    # name: (argv, limits)
    "burner": (["sh", "-c", "while :; do :; done"], {"cpus": "0.2", "memory": "128M"}),
    "holder": ([sys.executable, "-c", "import time\nb = bytearray(48 << 20)\nb[::4096] = b'x' * (len(b) // 4096)\n"
                "time.sleep(3600)\n"], {"memory": "256M"}),
    "writer": (["sh", "-c", "while :; do dd if=/dev/zero of=/tmp/cga-dash-$$ bs=1M count=8 conv=fsync "
                "2>/dev/null; rm -f /tmp/cga-dash-$$; sleep 1; done"], {}),
    "talker": ([sys.executable, "-c", "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "while True:\n    try:\n        s.sendto(b'x' * 1000, ('10.215.77.1', 9))\n"
                "    except OSError:\n        pass\n    time.sleep(0.05)\n"], {}),
}
NETNS = "cga-dash"   # the test's namespace: a bridge holding 10.215.77.1, every link's far end


def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


def link_containers(pids: dict):
    """eth0 in each container's namespace and cgadash0 in the host's, all on br0 in NETNS."""
    sh("ip", "netns", "add", NETNS)
    sh("ip", "-n", NETNS, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", NETNS, "addr", "add", "10.215.77.1/24", "dev", "br0")
    sh("ip", "-n", NETNS, "link", "set", "br0", "up")
    for i, (name, pid) in enumerate(sorted(pids.items())):
        a, b = f"cgdc{i}", f"cgdp{i}"
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", b, "netns", NETNS)
        sh("ip", "-n", NETNS, "link", "set", b, "master", "br0", "up")
        if pid is None:       # the host's end
            sh("ip", "link", "set", a, "name", "cgadash0")
            sh("ip", "link", "set", "cgadash0", "up")
            continue
        sh("ip", "link", "set", a, "netns", str(pid))
        ns = ("nsenter", "-t", str(pid), "-n", "ip")
        sh(*ns, "link", "set", a, "name", "eth0")
        sh(*ns, "addr", "add", f"10.215.77.{10 + i}/24", "dev", "eth0")
        sh(*ns, "link", "set", "eth0", "up")


@pytest.fixture(scope="module")
def stack(vm_test_parent, tmp_path_factory):
    from agent.cli.client import Client
    tmp = str(tmp_path_factory.mktemp("dashboards"))
    root = vm_test_parent.child(f"dash-{secrets.token_hex(3)}")
    os.mkdir(root.path)
    mport, pport = free_port(), free_port()
    conf = os.path.join(tmp, "agent.toml")
    with open(conf, "w") as f:
        f.write('[collector]\ninterval = "1s"\nenable = ["process", "cpuLoad", "hugetlb"]\n')
    sock = os.path.join(tmp, "agent.sock")
    log = open(os.path.join(tmp, "agentd.log"), "wb")
    agentd = subprocess.Popen(
        [sys.executable, "-m", "agent.daemon", "--config", conf, "--state-dir", os.path.join(tmp, "state"),
         "--cgroup-root", root.path, "--socket", sock, "--metrics-listen", f"127.0.0.1:{mport}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    prom = None
    try:
        client = Client(sock, timeout=60)

        def up():
            assert agentd.poll() is None, open(os.path.join(tmp, "agentd.log")).read()[-3000:]
            try:
                client.call("GET", "/v1/health")
                return True
            except Exception:
                return False
        wait_for(up, what="agentd to serve")
        for name, (argv, limits) in WORKLOADS.items():
            client.call("POST", "/v1/containers", body={"name": name, "argv": argv, "limits": limits,
                                                        "network": "none"})
        pids = {name: client.call("GET", f"/v1/containers/{name}")["pid"] for name in WORKLOADS}
        link_containers({**pids, "~host": None})
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                    f"  - job_name: cgroup-agent\n    static_configs:\n      - targets: [\"127.0.0.1:{mport}\"]\n")
        plog = open(os.path.join(tmp, "prometheus.log"), "wb")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
                                stdout=plog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{pport}"

        def ready():
            assert prom.poll() is None, f"prometheus exited {prom.returncode}"
            try:
                return get(url + "/-/ready")
            except OSError:
                return False
        wait_for(ready, what="prometheus to be ready")
        yield {"url": url, "metrics": f"http://127.0.0.1:{mport}/metrics"}
    finally:
        if prom is not None:
            prom.kill()
            prom.wait(30)
        agentd.kill()
        agentd.wait(30)
        log.close()
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, timeout=120)
        subprocess.run(["ip", "link", "del", "cgadash0"], capture_output=True, timeout=120)
        destroy_cgroup(root.path)


def query(stack, expr: str):
    body = json.loads(get(stack["url"] + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


TARGETS = [(board, title, expr) for board, title, exprs in PANELS for expr in exprs]


@pytest.mark.parametrize("board, title, expr", TARGETS, ids=[f"{b}:{t}:{i}" for i, (b, t, _e) in enumerate(TARGETS)])
def test_every_container_panel_target_returns_data(stack, board, title, expr):
    if any(n in expr for n in NOT_OURS):
        pytest.skip(f"{board} '{title}': needs Prometheus's own process_cpu_seconds_total, not a series of ours")
    res = wait_for(lambda: query(stack, promql(expr)), what=f"{board} '{title}': {expr}")
    assert res
    # a per-container panel shows our containers by name
    if "by (name)" in expr:
        assert set(WORKLOADS) <= {r["metric"].get("name") for r in res}, res


def test_scrape_is_promtool_clean_with_root_and_machine_series(stack):
    wait_for(lambda: query(stack, 'container_tasks_state{name="burner"}'), what="optional sets scraped")
    body = get(stack["metrics"])
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=300)
    assert p.returncode == 0 and not p.stdout and not p.stderr, (p.stdout, p.stderr)
    text = body.decode()
    for needle in ('container_cpu_usage_seconds_total{id="/",image="",name="",cpu="total"}',
                   'container_memory_working_set_bytes{id="/",image="",name=""}', "machine_cpu_cores{",
                   "machine_memory_bytes{", 'container_spec_memory_limit_bytes{', 'container_memory_failcnt{',
                   'container_file_descriptors{', 'container_memory_kernel_usage{'):
        assert needle in text, needle
    assert not query(stack, 'container_cpu_usage_seconds_total{image="",id=~".*/containers/.*"}')
    r = query(stack, 'container_spec_memory_limit_bytes{name="holder"}')
    assert r and int(float(r[0]["value"][1])) == 256 << 20
    r = query(stack, 'container_spec_memory_limit_bytes{name="writer"}')   # unlimited: cAdvisor's 0
    assert r and r[0]["value"][1] == "0"
