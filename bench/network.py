#!/usr/bin/env python3
"""Launch time of a bridge-network container against `--network none`,
measured in one run against one agentd, interleaved.

    python3 bench/network.py [-n 20]        (as root)

Each round creates a rootfs container running /bin/true through the API
(request -> response: agentd answers once the launcher saw execve succeed)
with "network": "bridge" (a bound network namespace, a veth pair on the
agent's bridge, an address, the nftables table rebuilt, /etc files written)
and with "network": "none" (a fresh namespace, loopback only), then removes
both (removal not timed). Prints p50 of each and bridge/none, the cost of a
bridge per launch.

The peer, in the same rounds: runc with a CNI-style network set up by a
shell script as the bridge plugin does it (`ip netns add`, a veth pair, one
end on a bridge of the script's own, an address and a default route in the
namespace), then `runc run` of a bundle of the same rootfs whose network
namespace is that one; timed from the script's start to runc's exit.
bridge/runc_cni is what our bridge launch costs against that.

Then throughput (iperf3, Debian's): from the host to a server in a bridged
container's network namespace (through the agent's bridge and veth), against
a server in a namespace this script makes with a bare veth pair (no bridge),
each `iperf3 -t 3` run alternately 3 times; bridge/veth of the medians.
Traffic goes only to addresses inside those namespaces.
Writes bench/out/network.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "bench"))   # launch_latency.make_bundle

from agent.cli.client import Client  # noqa: E402
from runtime.cgroupfs import find_mount  # noqa: E402


def _bare_veth() -> tuple[str, str, str, str]:
    """A namespace with a veth pair to the host, no bridge: (netns file, its address, name, host end)."""
    name = f"cgab-{uuid.uuid4().hex[:8]}"
    host, peer = f"hb{name[-8:]}", f"pb{name[-8:]}"
    for cmd in (["ip", "netns", "add", name], ["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
                ["ip", "link", "set", peer, "netns", name], ["ip", "addr", "add", "10.252.77.1/30", "dev", host],
                ["ip", "link", "set", host, "up"], ["ip", "-n", name, "addr", "add", "10.252.77.2/30", "dev", peer],
                ["ip", "-n", name, "link", "set", peer, "up"], ["ip", "-n", name, "link", "set", "lo", "up"]):
        subprocess.run(cmd, check=True)
    return f"/run/netns/{name}", "10.252.77.2", name, host


CNI_BRIDGE, CNI_NET = "cgabcni0", "10.252.78"
CNI_SCRIPT = """set -e
ip netns add "$NS"
ip link add "$HOST" type veth peer name "$PEER"
ip link set "$HOST" master {bridge} up
ip link set "$PEER" netns "$NS"
ip -n "$NS" link set "$PEER" name eth0
ip -n "$NS" addr add {net}.$N/24 dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set lo up
ip -n "$NS" route add default via {net}.1
""".format(bridge=CNI_BRIDGE, net=CNI_NET)


def _cni_bridge(up: bool) -> None:
    if up:
        subprocess.run(["ip", "link", "add", CNI_BRIDGE, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"{CNI_NET}.1/24", "dev", CNI_BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", CNI_BRIDGE, "up"], check=True)
    else:
        subprocess.run(["ip", "link", "del", CNI_BRIDGE], capture_output=True)


def _runc_cni(base: str, bundle: str, i: int) -> float:
    """Seconds for the CNI-style script plus `runc run` of /bin/true in that namespace."""
    ns = f"cgabcni{i}"
    env = dict(os.environ, NS=ns, HOST=f"hc{i}", PEER=f"pc{i}", N=str(10 + i % 200))
    with open(os.path.join(bundle, "config.json")) as f:
        doc = json.load(f)
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] != "network"]
    doc["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{ns}"})
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(doc, f)
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", CNI_SCRIPT], env=env, check=True)
    subprocess.run(["runc", "--root", os.path.join(base, "runc-root"), "run", "--bundle", bundle, f"cni-{i}"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)     # the veth goes with it
    return dt


def _iperf(nsfile: str, ip: str) -> float:
    """bits per second received by a one-shot iperf3 server in the namespace."""
    srv = subprocess.Popen(["nsenter", f"--net={nsfile}", "iperf3", "-s", "-1", "-B", ip],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            r = subprocess.run(["iperf3", "-c", ip, "-t", "3", "-J"], capture_output=True, text=True)
            doc = json.loads(r.stdout or "{}")
            if r.returncode == 0 and "sum_received" in doc.get("end", {}):
                return doc["end"]["sum_received"]["bits_per_second"]
            time.sleep(0.1)
        raise SystemExit(f"iperf3 to {ip} failed: {doc.get('error') or r.stderr[-500:]}")
    finally:
        srv.kill()
        srv.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="cga-bench-net-")
    root = os.path.join(find_mount(), f"cga-bench-{uuid.uuid4().hex[:8]}")
    os.mkdir(root)
    rootfs = os.path.join(top, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "true"))
    sock = os.path.join(top, "agent.sock")
    conf = os.path.join(top, "agentd.toml")
    with open(conf, "w") as f:
        f.write(f'[agent]\nstate_dir = "{top}/state"\ncgroup_root = "{root}"\nsocket = "{sock}"\n'
                f'metrics_listen = ""\nlog_level = "warning"\n')
    log = open(os.path.join(top, "agentd.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "agent.daemon", "--config", conf], stdout=log,
                            stderr=subprocess.STDOUT, cwd=REPO)
    times: dict[str, list[float]] = {"bridge": [], "none": [], "runc_cni": []}
    runc = shutil.which("runc")
    bundle = None
    if runc:
        from launch_latency import make_bundle
        bundle = make_bundle(top, {}, ["/bin/true"])
        _cni_bridge(True)
    else:
        print("runc not installed: the runc + CNI-style script peer is skipped")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                Client(sock, timeout=5).call("GET", "/v1/health")
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"agentd did not start: {open(log.name).read()[-2000:]}")
                time.sleep(0.1)
        c = Client(sock, timeout=120)
        for i in range(args.n + 1):          # round 0 warms up (the bridge is made there)
            for mode in (("bridge", "none") if i % 2 else ("none", "bridge")):
                name = f"{mode}-{i}"
                t0 = time.perf_counter()
                c.call("POST", "/v1/containers", body={"name": name, "argv": ["/bin/true"], "rootfs": rootfs,
                                                       "network": mode, "userns": "host"})
                dt = time.perf_counter() - t0
                if i:
                    times[mode].append(dt)
            for mode in ("bridge", "none"):
                c.call("DELETE", f"/v1/containers/{mode}-{i}", query={"force": "1"})
            if bundle:
                dt = _runc_cni(top, bundle, i)
                if i:
                    times["runc_cni"].append(dt)
        if shutil.which("iperf3"):
            info = c.call("POST", "/v1/containers", body={"name": "tput", "argv": ["/bin/true", "sleep"],
                                                          "rootfs": rootfs, "userns": "host", "start": False})
            nsfile = os.path.join(top, "state", "network", "ns", info["id"])
            bridged = (nsfile, info["network"]["ip"])
            bare = _bare_veth()
            try:
                tput = {"bridge": [], "veth": []}
                for _ in range(3):
                    tput["bridge"].append(_iperf(*bridged))
                    tput["veth"].append(_iperf(*bare[:2]))
            finally:
                c.call("DELETE", "/v1/containers/tput", query={"force": "1"})
                subprocess.run(["ip", "netns", "del", bare[2]], capture_output=True)
                subprocess.run(["ip", "link", "del", bare[3]], capture_output=True)
        else:
            print("iperf3 not installed: throughput skipped (scripts/setup.sh installs it)")
            tput = None
    finally:
        if bundle:
            _cni_bridge(False)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
        try:
            os.rmdir(root)
        except OSError:
            pass
        shutil.rmtree(top, ignore_errors=True)
    p50 = {k: statistics.median(v) for k, v in times.items() if v}
    out = {"n": args.n, "p50_seconds": p50, "bridge_over_none": p50["bridge"] / p50["none"]}
    print(f"launch p50: bridge {p50['bridge'] * 1000:.1f} ms, none {p50['none'] * 1000:.1f} ms, "
          f"bridge/none = {out['bridge_over_none']:.2f} (n={args.n})")
    if "runc_cni" in p50:
        out["bridge_over_runc_cni"] = p50["bridge"] / p50["runc_cni"]
        print(f"launch p50: runc + CNI-style script {p50['runc_cni'] * 1000:.1f} ms, "
              f"bridge/runc_cni = {out['bridge_over_runc_cni']:.2f}")
    if tput:
        med = {k: statistics.median(v) for k, v in tput.items()}
        out.update(throughput_bits_per_second=med, bridge_over_veth=med["bridge"] / med["veth"])
        print(f"throughput median: bridge {med['bridge'] / 1e9:.2f} Gbit/s, bare veth {med['veth'] / 1e9:.2f} Gbit/s, "
              f"bridge/veth = {out['bridge_over_veth']:.2f}")
    os.makedirs(os.path.join(REPO, "bench", "out"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "out", "network.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
