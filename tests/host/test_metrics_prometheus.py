"""/metrics end to end: a real Prometheus scrapes a real agentd.

One agentd (own state dir, socket, cgroup root, free metrics port) runs a
container that burns a little CPU and then sleeps, so its counters are
stable; a real Prometheus (/usr/bin/prometheus, loopback, temp config and
storage, 1 s scrape and rule evaluation, deploy/alerts.yml loaded) scrapes
it. Checked: the target is up; PromQL returns the container's series with the
kernel's values; every Grafana panel query and every alert rule evaluates
without error; promtool accepts the scrape, the rules and the rule tests.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from agent.cli.client import Client
from runtime import stats
from runtime.cgroupfs import Cgroup, find_mount
from helpers import kill_tree
from helpers import free_port, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = pytest.mark.skipif(not os.path.exists(PROMETHEUS) or not os.path.exists(PROMTOOL),
                                reason="Debian package prometheus not installed (scripts/setup.sh installs it)")


def get(url: str, headers=None) -> tuple[str, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers.get("Content-Type", ""), r.read()


class Prom:
    def __init__(self, tmp, target: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {os.path.join(DEPLOY, "alerts.yml")}
scrape_configs:
  - job_name: cgroup-agent
    static_configs:
      - targets: ["{target}"]
""")
        self.log = open(os.path.join(tmp, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited {self.proc.returncode}")
            try:
                return get(self.url + "/-/ready")[1]
            except OSError:
                return False
        wait_for(ready, what="prometheus to be ready")

    def api(self, path: str, **params):
        _, body = get(self.url + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else ""))
        out = json.loads(body)
        assert out["status"] == "success", out
        return out["data"]

    def query(self, expr: str):
        return self.api("/api/v1/query", query=expr)["result"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("metrics"))
    root = os.path.join(find_mount(), f"cga-test-{uuid.uuid4().hex[:10]}")
    os.mkdir(root)
    mport = free_port()
    conf = os.path.join(tmp, "agent.toml")
    with open(conf, "w") as f:
        f.write('[collector]\ninterval = "200ms"\nlabel_allowlist = ["team"]\n'
                'enable = ["process", "cpuLoad", "hugetlb"]\n')
    sock = os.path.join(tmp, "agent.sock")
    log = open(os.path.join(tmp, "agentd.log"), "wb")
    agentd = subprocess.Popen(
        [sys.executable, "-m", "agent.daemon", "--config", conf, "--state-dir", os.path.join(tmp, "state"),
         "--cgroup-root", root, "--socket", sock, "--metrics-listen", f"127.0.0.1:{mport}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    prom = None
    try:
        client = Client(sock, timeout=30)

        def up():
            if agentd.poll() is not None:
                raise AssertionError(f"agentd exited {agentd.returncode}: "
                                     + open(os.path.join(tmp, "agentd.log")).read()[-3000:])
            try:
                client.call("GET", "/v1/health")
                return True
            except Exception:
                return False
        wait_for(up, what="agentd to serve")
        # burn ~0.2 s of CPU, then sleep: the counters stay still while we compare
        info = client.call("POST", "/v1/containers", body={
            "name": "web", "labels": {"team": "pay", "other": "x"},
            "argv": ["sh", "-c", "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; exec sleep 600"]})
        cid = info["id"]
        cg = Cgroup(os.path.join(root, "containers", cid))
        wait_for(lambda: cg.exists() and b"sleep" in _comms(cg), what="container to reach its sleep")
        prom = Prom(tmp, f"127.0.0.1:{mport}")
        yield {"prom": prom, "metrics": f"http://127.0.0.1:{mport}/metrics", "cg": cg, "id": cid,
               "mount": find_mount(), "client": client}
    finally:
        if prom is not None:
            prom.stop()
        agentd.send_signal(signal.SIGKILL)
        agentd.wait(10)
        log.close()
        kill_tree(root)


def _comms(cg: Cgroup) -> bytes:
    out = b""
    for pid in cg.procs():
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                out += f.read()
        except OSError:
            pass
    return out


def test_target_is_up(stack):
    prom = stack["prom"]
    res = wait_for(lambda: prom.query('up{job="cgroup-agent"} == 1'), what="target up")
    assert res[0]["value"][1] == "1"
    targets = prom.api("/api/v1/targets")["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
    assert targets[0]["lastError"] == ""


def test_promql_returns_the_kernels_counters(stack):
    prom, cg = stack["prom"], stack["cg"]
    rel = cg.path[len(stack["mount"]):]
    kernel_usage = stats.parse_cpu_stat(cg.read("cpu.stat")).usage_usec
    sel = f'id="{rel}",name="web",container_label_team="pay"'

    def cpu():
        r = prom.query(f'container_cpu_usage_seconds_total{{{sel},cpu="total"}}')
        return r if r and float(r[0]["value"][1]) * 1e6 == pytest.approx(kernel_usage, abs=0.5) else None
    r = wait_for(cpu, what="the scraped cpu usage to equal the kernel's")
    assert r[0]["metric"]["image"] == "host"                      # agent.model.image_ref: never empty
    assert "container_label_other" not in r[0]["metric"]          # not in the allow-list
    assert kernel_usage > 0

    kernel_user = stats.parse_cpu_stat(cg.read("cpu.stat")).user_usec
    r = prom.query(f"container_cpu_user_seconds_total{{{sel}}}")
    assert float(r[0]["value"][1]) * 1e6 == pytest.approx(kernel_user, abs=0.5)

    r = prom.query(f'cgroup_agent_container_state{{{sel},state="running"}}')
    assert r and r[0]["value"][1] == "1"
    r = prom.query(f"cgroup_agent_container_frozen{{{sel}}}")
    assert r and r[0]["value"][1] == "0"

    # pressure: the kernel's "some" total, in seconds (the container sleeps: it stays put)
    pressure = stats.parse_pressure(cg.read("cpu.pressure")).some.total_usec
    r = wait_for(lambda: prom.query(f"container_pressure_cpu_waiting_seconds_total{{{sel}}}"),
                 what="pressure series")
    assert float(r[0]["value"][1]) * 1e6 == pytest.approx(pressure, abs=0.5)

    # families the hybrid host's kernel does not offer here are absent, not 0
    if cg.read("memory.current") is None:
        assert prom.query(f"container_memory_usage_bytes{{{sel}}}") == []
    r = prom.query('cgroup_agent_build_info{version!=""}')
    assert r and r[0]["value"][1] == "1"
    r = prom.query("cgroup_agent_collection_duration_seconds_count > 0")
    assert r


def test_root_machine_and_optional_series(stack):
    """The host's own series (id="/", image=""), cAdvisor's machine_* families,
    image!="" selecting containers only, and the [collector] enable sets read from
    the container's real processes."""
    prom, cg = stack["prom"], stack["cg"]
    r = wait_for(lambda: prom.query('container_cpu_usage_seconds_total{id="/",cpu="total"}'), what="root series")
    assert "image" not in r[0]["metric"] and "name" not in r[0]["metric"]     # "" labels: dropped
    with open("/proc/stat") as f:
        ticks = sum(int(x) for x in f.readline().split()[1:4])
    assert float(r[0]["value"][1]) > 0 and float(r[0]["value"][1]) <= ticks / os.sysconf("SC_CLK_TCK") * 1.5
    r = prom.query('container_memory_usage_bytes{id="/"}')                     # from /proc/meminfo
    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    assert r and 0 < float(r[0]["value"][1]) < total
    r = prom.query("machine_cpu_cores")
    assert r and int(r[0]["value"][1]) == os.cpu_count()
    assert {"boot_id", "machine_id"} <= set(r[0]["metric"])
    r = prom.query("machine_memory_bytes")
    assert r and int(r[0]["value"][1]) == total
    ids = {x["metric"]["id"] for x in prom.query('container_cpu_usage_seconds_total{image!=""}')}
    assert ids and "/" not in ids and all("/containers/" in i for i in ids)
    # the same image value in inspect (and so ps) as on /metrics
    assert stack["client"].call("GET", "/v1/containers/web")["image"] == "host"
    # the dashboard's host panel (root cgroup against machine_*) has data
    _dash, exprs = _dashboard_exprs()
    host = [e for t, e in exprs if t.startswith("Host:")]
    assert len(host) == 2
    for e in host:
        r = wait_for(lambda: prom.query(_grafana_vars(e)), what=e)
        assert 0 < float(r[0]["value"][1]) <= 1.0, (e, r)
    # process set: the container's descriptors and threads, as /proc shows them
    pids = cg.procs()
    fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids)
    r = wait_for(lambda: prom.query(f'container_file_descriptors{{name="web"}} == {fds}'), what="fd count")
    assert prom.query('container_threads{name="web"}')[0]["value"][1] == str(len(cg.threads()))
    assert prom.query('container_threads_max{name="web"}')[0]["value"][1] == "0"       # no pids.max
    r = prom.query('container_ulimits_soft{name="web",ulimit="max_open_files"}')
    with open(f"/proc/{pids[0]}/limits") as f:
        soft = [ln.split()[3] for ln in f if ln.startswith("Max open files")][0]
    assert r and r[0]["value"][1] == soft
    r = wait_for(lambda: prom.query('container_tasks_state{name="web",state="sleeping"} == 1'), what="task states")
    assert prom.query('container_tasks_state{name="web",state="running"}')[0]["value"][1] == "0"


def test_frozen_container_shows_frozen(stack):
    prom, client = stack["prom"], stack["client"]
    client.call("POST", "/v1/containers/web/freeze")
    try:
        wait_for(lambda: prom.query('cgroup_agent_container_frozen{name="web"} == 1'), what="frozen = 1")
    finally:
        client.call("POST", "/v1/containers/web/thaw")


def _dashboard_exprs():
    with open(os.path.join(DEPLOY, "grafana-dashboard.json")) as f:
        dash = json.load(f)
    exprs = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            exprs.append((panel["title"], t["expr"]))
    return dash, exprs


def _grafana_vars(expr: str) -> str:
    for k, v in (("$__rate_interval", "1m"), ("$__range", "5m"), ("$instance", ".*"), ("$name", ".*")):
        expr = expr.replace(k, v)
    return expr


def test_every_dashboard_query_evaluates(stack):
    prom = stack["prom"]
    dash, exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    wait_for(lambda: prom.query('container_cpu_usage_seconds_total{name="web"}'), what="series")
    with_data = 0
    for title, expr in exprs:
        res = prom.query(_grafana_vars(expr))        # raises on a PromQL error
        with_data += bool(res)
    assert with_data >= 5
    # the template variables find this host and this container
    names = prom.api("/api/v1/label/name/values", **{"match[]": "cgroup_agent_container_state"})
    assert "web" in names
    inst = prom.api("/api/v1/label/instance/values", **{"match[]": "cgroup_agent_build_info"})
    assert len(inst) == 1


def test_every_alert_rule_evaluates_without_error(stack):
    prom = stack["prom"]

    def all_evaluated():
        groups = prom.api("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None
    rules = wait_for(all_evaluated, what="every rule evaluated once")
    with open(os.path.join(DEPLOY, "alerts.yml")) as f:
        declared = sum(1 for line in f if line.strip().startswith("- alert:"))
    assert len(rules) == declared >= 9
    for r in rules:
        assert r["health"] == "ok", (r["name"], r.get("lastError"))
        assert not r.get("lastError")


def test_promtool_check_metrics_reports_nothing_on_a_real_scrape(stack):
    ctype, body = get(stack["metrics"])
    assert ctype.startswith("text/plain; version=0.0.4")
    assert b'name="web"' in body
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == b"" and p.stderr == b"", (p.stdout, p.stderr)


def test_openmetrics_by_content_negotiation(stack):
    ctype, body = get(stack["metrics"], {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
    assert ctype.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    fams = {f.name: f for f in om_parse(body.decode())}
    assert "container_cpu_usage_seconds" in fams and fams["container_cpu_usage_seconds"].type == "counter"


def test_not_found_is_404(stack):
    with pytest.raises(urllib.error.HTTPError) as e:
        get(stack["metrics"].replace("/metrics", "/nope"))
    assert e.value.code == 404


@pytest.mark.parametrize("args", [
    ["check", "rules", os.path.join(DEPLOY, "alerts.yml")],
    ["test", "rules", os.path.join(DEPLOY, "alerts_test.yml")],
    ["check", "config", os.path.join(DEPLOY, "prometheus.yml")],
])
def test_promtool_accepts_the_deploy_files(args):
    p = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=DEPLOY)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_promtool_check_metrics_on_every_family():
    """Families this host's kernel cannot show (memory, io, cfs), rendered from
    files captured on a full cgroup v2 kernel (tests/unit/fixtures/kernel-6.1)."""
    from types import MappingProxyType

    from agent import selfmetrics
    from agent.collector import Snapshot
    from agent.model import ContainerInfo
    from exporters import prometheus
    from runtime.limits import Limits

    fx = os.path.join(REPO, "tests", "unit", "fixtures", "kernel-6.1")
    if not os.path.isdir(fx):
        pytest.skip("no kernel-6.1 fixture captured")
    values = {}
    for fld, (file, parser) in stats.SAMPLE_FILES.items():
        path = os.path.join(fx, file)
        values[fld] = parser(open(path).read()) if os.path.isfile(path) else None
    sample = stats.CgroupSample(inode=1, **values)._replace(      # and the optional sets
        hugetlb={"2MB": stats.HugetlbStat(2 << 20, 1)},
        processes=stats.ProcessStats(file_descriptors=4, sockets=1, max_open_files=1024, tasks_state=(1, 0, 0, 0),
                                     threads=1))
    infos = [ContainerInfo(id=f"{i:012x}", name=f"c{i}", cgroup=f"/sys/fs/cgroup/a/containers/{i:012x}",
                           labels={"team": "t"}, image="/srv/rootfs", state="running", started_at=1.0,
                           limits=Limits(memory_max=1 << 30, memory_low=1 << 20, memory_swap_max=0,
                                         cpu_quota_us=50000, cpu_period_us=100000, cpu_weight=100))
             for i in range(3)]
    from runtime.machine import fill_root, read_machine
    snap = Snapshot(2.0, 1.0, 0.0, MappingProxyType({i.cgroup: sample for i in infos}),
                    MappingProxyType({i.id: i for i in infos}), mount="/sys/fs/cgroup",
                    machine=read_machine(), root=fill_root(stats.CgroupSample()))
    selfmetrics.inc("launches_total", result="ok")
    selfmetrics.observe_collection(0.01)
    body = prometheus.render(snap, ("team",))
    names = {line.split("{")[0].split(" ")[0] for line in body.decode().splitlines() if not line.startswith("#")}
    for fam in ("container_memory_working_set_bytes", "container_fs_writes_bytes_total",
                "container_cpu_cfs_throttled_periods_total", "container_blkio_device_usage_total",
                "container_oom_events_total", "container_spec_cpu_shares", "cgroup_agent_launches_total",
                "container_memory_failcnt", "container_hugetlb_failcnt", "container_cpu_cfs_burst_seconds_total",
                "container_memory_workingset_refault_file_total", "container_tasks_state",
                "container_ulimits_soft", "machine_cpu_cores", "machine_memory_bytes"):
        assert fam in names, fam
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == b"" and p.stderr == b"", (p.stdout, p.stderr)


def test_launches_are_counted_by_result(stack):
    def launches(result):
        _, body = get(stack["metrics"])
        for line in body.decode().splitlines():
            if line.startswith(f'cgroup_agent_launches_total{{result="{result}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0
    ok_before, failed_before = launches("ok"), launches("failed")
    assert ok_before >= 1  # the fixture's container
    client = stack["client"]
    client.call("POST", "/v1/containers", body={"name": "once", "argv": ["true"]})
    with pytest.raises(Exception):
        client.call("POST", "/v1/containers", body={"name": "nope", "argv": ["/nonexistent/binary"]})
    # the exporter renders once per collector pass: wait for the next one
    wait_for(lambda: launches("ok") == ok_before + 1 and launches("failed") == failed_before + 1,
             what="launches counted by result")
