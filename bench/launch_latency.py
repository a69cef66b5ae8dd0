#!/usr/bin/env python3
"""Launch latency of cgroup-agent against runc and crun, measured in one run.

    python3 bench/launch_latency.py [-n 20]        (as root; fully in the VM tier)

Measures, interleaved so that drift hits every contender alike:
  api    POST /v1/containers {argv: [/bin/true], rootfs, limits} on the control
         socket: request -> response, which agentd sends once the launcher saw
         execve succeed (the close-on-exec error pipe closed): request to exec.
         With a rootfs this is a user namespace (agentd's default: allocated
         ids, idmapped rootfs).
  api_hostns  the same request with "userns": "host" (no user namespace):
         api/api_hostns is what the user namespace costs per launch.
  api_prev  the same request to a second agentd running the code of the
         commit before the isolation work (PREV_REV: agent/, runtime/ and
         exporters/ extracted with `git archive` into a temporary dir): no
         user namespace, no device filter, no cgroup namespace, no mounts
         from descriptors. api/api_prev is what all of that costs per launch.
  cli    `agentctl run --rm --rootfs R [limits] -- /bin/true`, whole command
         (its modules byte-compiled first, as pip does on install: this
         environment sets PYTHONDONTWRITEBYTECODE, which would otherwise make
         every agentctl start compile its sources).
  pyfloor  the same interpreter importing what agentctl needs and nothing
         else (`python3 -c "import argparse, json, socket"`): the floor of
         any Python CLI here, for reading the cli figure.
  runc   `runc run` of an OCI bundle with the same rootfs, command and limits.
  runc_userns  the same with the features agentd's default has: `runc spec`'s
         config plus a "user" namespace with linux.uidMappings/gidMappings
         (container 0..65535 -> host RUNC_HOST_IDS..) on a copy of the rootfs
         chowned to that range (once, outside the timing), and a "cgroup"
         namespace; runc's own device rules are in its default spec. /sys
         is bound from the host (read-only) instead of a fresh sysfs, which a
         user namespace without its own network namespace may not mount
         (agentd does the same). api/runc_userns compares like with like.
  crun   `crun run` of the same bundle (crun refuses hybrid hosts: skipped there).
  freeze/thaw of a container with 100 processes: agentd's API vs `runc pause`/
         `runc resume` of a runc container with 100 processes.
Prints p50/p90 per contender and the ratios the issue asks for (goals: API p50
<= crun p50, CLI p50 <= runc p50). Writes bench/out/launch_latency.json.
Limits: memory 64M, cpus 0.5, pids 64 where this host's cgroup2 offers the
controllers; none otherwise (said so in the output).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from agent.cli.client import Client  # noqa: E402
from runtime.cgroupfs import Cgroup, find_mount  # noqa: E402

PREV_REV = "906d5f9"          # the parent of the isolation work (user namespaces, device filter, cgroupns)
RUNC_HOST_IDS = 0x60000000    # runc_userns's host ids: below agentd's default userns_range and 2**31
LIMITS = {"memory": "64M", "cpus": "0.5", "pids": "64"}
CLI_FLAGS = {"memory": "--memory", "cpus": "--cpus", "pids": "--pids"}
CONTROLLER = {"memory": "memory", "cpus": "cpu", "pids": "pids"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def kill_tree(path: str) -> None:
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            kill_tree(entry.path)
    cg = Cgroup(path)
    for _ in range(200):
        try:
            cg.write("cgroup.freeze", "0")
        except Exception:
            pass
        try:
            cg.write("cgroup.kill", "1")
        except Exception:
            for pid in cg.procs():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


def make_bundle(base: str, limits: dict, args: list[str], userns: bool = False) -> str:
    """A busybox rootfs and a config.json as `runc spec` writes it, adjusted;
    `userns`: with a user and a cgroup namespace, on a rootfs copy owned by
    the mapped range."""
    bundle = os.path.join(base, "bundle-" + secrets.token_hex(3))
    rootfs = os.path.join(base, "rootfs")
    if not os.path.isdir(rootfs):
        os.makedirs(os.path.join(rootfs, "bin"))
        busybox = shutil.which("busybox") or "/bin/busybox"
        shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
        for applet in ("true", "sh", "sleep"):
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        for d in ("proc", "dev", "sys", "tmp"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    if userns:
        mapped = os.path.join(base, "rootfs-userns")
        if not os.path.isdir(mapped):
            shutil.copytree(rootfs, mapped, symlinks=True)
            for top, dirs, files in os.walk(mapped):
                for n in [top, *(os.path.join(top, x) for x in dirs + files)]:
                    st = os.lstat(n)
                    os.lchown(n, RUNC_HOST_IDS + st.st_uid, RUNC_HOST_IDS + st.st_gid)
        rootfs = mapped
        os.chmod(base, 0o755)       # runc's init, the mapped root, walks to the rootfs
    os.makedirs(bundle)
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    with open(os.path.join(bundle, "config.json")) as f:
        doc = json.load(f)
    doc["process"]["args"] = args
    doc["process"]["terminal"] = False
    doc["root"] = {"path": rootfs, "readonly": False}
    # agentd's default is the host network: leave the network namespace out for both
    doc["linux"]["namespaces"] = [n for n in doc["linux"]["namespaces"] if n["type"] != "network"]
    if userns:
        doc["linux"]["namespaces"] += [{"type": t} for t in ("user", "cgroup")
                                       if t not in {n["type"] for n in doc["linux"]["namespaces"]}]
        for side in ("uidMappings", "gidMappings"):
            doc["linux"][side] = [{"containerID": 0, "hostID": RUNC_HOST_IDS, "size": 65536}]
        doc["mounts"] = [m if m["destination"] != "/sys" else
                         {"destination": "/sys", "type": "none", "source": "/sys",
                          "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]} for m in doc["mounts"]]
    res = doc["linux"].setdefault("resources", {})
    if "memory" in limits:
        res["memory"] = {"limit": 64 << 20}
    if "cpus" in limits:
        res["cpu"] = {"quota": 50000, "period": 100000}
    if "pids" in limits:
        res["pids"] = {"limit": 64}
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(doc, f)
    return bundle


def checkout(rev: str, into: str) -> str:
    """agent/, runtime/ and exporters/ of commit `rev` in a new dir under `into`."""
    code = os.path.join(into, "code-" + rev)
    os.makedirs(code)
    tar = subprocess.run(["git", "-C", REPO, "archive", rev, "agent", "runtime", "exporters"],
                         check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", code], input=tar, check=True)
    return code


class Agentd:
    def __init__(self, base: str, root: str, code: str = REPO):
        os.makedirs(base, exist_ok=True)
        self.state = os.path.join(base, "state")
        self.sock = os.path.join(base, "agent.sock")
        self.root = root
        self.log = open(os.path.join(base, "agentd.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.daemon", "--state-dir", self.state, "--cgroup-root", root,
             "--socket", self.sock, "--metrics-listen", f"127.0.0.1:{free_port()}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=code,
            env=dict(os.environ, PYTHONPATH=code + os.pathsep + os.environ.get("PYTHONPATH", "")))
        self.client = Client(self.sock, timeout=120)
        deadline = time.monotonic() + 600  # Python under TCG in a loaded VM is slow to start
        while True:
            try:
                self.client.call("GET", "/v1/health")
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    with open(self.log.name, errors="replace") as f:
                        tail = f.read()[-3000:]
                    kill_tree(root)
                    raise SystemExit(f"agentd did not start (exit {self.proc.poll()}); its log:\n{tail}")
                time.sleep(0.05)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        kill_tree(self.root)


def timed(argv, **kw) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace').strip()[:300]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="launches per contender")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")

    mount = find_mount()
    root = os.path.join(mount, f"cga-bench-{secrets.token_hex(3)}")
    base = tempfile.mkdtemp(prefix="cga-bench-")
    agent = Agentd(base, root)
    prev = None
    results: dict[str, list[float]] = {"api": [], "api_hostns": [], "api_prev": [], "cli": [], "pyfloor": [],
                                       "runc": [], "runc_userns": [], "crun": []}
    notes = []
    try:
        try:
            prev = Agentd(os.path.join(base, "prev"), root + "-prev", checkout(PREV_REV, base))
        except (subprocess.CalledProcessError, SystemExit) as e:
            notes.append(f"api_prev: the code of {PREV_REV} did not start ({str(e).splitlines()[0]})")
        enabled = Cgroup(os.path.join(root, "containers")).subtree_control()
        limits = {k: v for k, v in LIMITS.items() if CONTROLLER[k] in enabled}
        skipped = sorted(set(LIMITS) - set(limits))
        if skipped:
            notes.append(f"limits not enforceable here, left out for every contender: {', '.join(skipped)}")
        bundle = make_bundle(base, limits, ["/bin/true"])
        bundle_userns = make_bundle(base, limits, ["/bin/true"], userns=True)
        rootfs = os.path.join(base, "rootfs")
        cli_limits = [x for k, v in limits.items() for x in (CLI_FLAGS[k], v)]
        contenders = {
            "runc": shutil.which("runc"),
            "crun": shutil.which("crun"),
        }
        for name, path in list(contenders.items()):
            if not path:
                notes.append(f"{name}: not installed")
                contenders[name] = None
                continue
            try:
                timed([path, "--root", os.path.join(base, f"{name}-root"), "run", "--bundle", bundle, f"probe-{name}"])
            except RuntimeError as e:
                notes.append(f"{name}: cannot run here ({str(e).splitlines()[0]})")
                contenders[name] = None
        runc_userns = contenders["runc"]
        if runc_userns:
            try:
                timed([runc_userns, "--root", os.path.join(base, "runc-root"), "run", "--bundle", bundle_userns,
                       "probe-runc-userns"])
            except RuntimeError as e:
                notes.append(f"runc_userns: cannot run here ({str(e).splitlines()[0]})")
                runc_userns = None
        env = dict(os.environ, AGENT_SOCKET=agent.sock)
        subprocess.run([sys.executable, "-m", "compileall", "-q", *(os.path.join(REPO, p) for p in
                                                                     ("agent", "runtime", "exporters"))],
                       check=True, env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
        agentctl = [sys.executable, "-m", "agent.cli"] if not shutil.which("agentctl") else [shutil.which("agentctl")]
        # warm-up (page cache, first spawn)
        agent.client.call("POST", "/v1/containers", body={"name": "warm", "argv": ["/bin/true"], "rootfs": rootfs})
        agent.client.call("DELETE", "/v1/containers/warm", query={"force": "1"})
        if prev:
            prev.client.call("POST", "/v1/containers", body={"name": "warm", "argv": ["/bin/true"], "rootfs": rootfs})
            prev.client.call("DELETE", "/v1/containers/warm", query={"force": "1"})

        for i in range(args.n):
            name = f"api-{i}"
            body = {"name": name, "argv": ["/bin/true"], "rootfs": rootfs, "limits": limits or None}
            t0 = time.perf_counter()
            agent.client.call("POST", "/v1/containers", body=body)
            results["api"].append(time.perf_counter() - t0)
            agent.client.call("DELETE", f"/v1/containers/{name}", query={"force": "1"})
            t0 = time.perf_counter()
            agent.client.call("POST", "/v1/containers", body={**body, "userns": "host"})
            results["api_hostns"].append(time.perf_counter() - t0)
            agent.client.call("DELETE", f"/v1/containers/{name}", query={"force": "1"})
            if prev:
                t0 = time.perf_counter()
                prev.client.call("POST", "/v1/containers", body=body)
                results["api_prev"].append(time.perf_counter() - t0)
                prev.client.call("DELETE", f"/v1/containers/{name}", query={"force": "1"})
            if runc_userns:
                results["runc_userns"].append(timed([runc_userns, "--root", os.path.join(base, "runc-root"),
                                                     "run", "--bundle", bundle_userns, f"runc-userns-{i}"]))

            results["cli"].append(timed(agentctl + ["run", "--rm", "--rootfs", rootfs, *cli_limits, "--", "/bin/true"],
                                        env=env))
            results["pyfloor"].append(timed([sys.executable, "-c", "import argparse, json, socket"]))
            for peer in ("runc", "crun"):
                if contenders[peer]:
                    results[peer].append(timed([contenders[peer], "--root", os.path.join(base, f"{peer}-root"),
                                                "run", "--bundle", bundle, f"{peer}-{i}"]))

        freeze = bench_freeze(agent, base, contenders["runc"], limits)
    finally:
        agent.close()
        if prev:
            prev.close()
        shutil.rmtree(base, ignore_errors=True)

    print(f"launch latency of /bin/true, {args.n} runs each (seconds)")
    print(f"{'contender':<10} {'p50':>9} {'p90':>9}")
    summary = {}
    for k, v in results.items():
        if v:
            summary[k] = {"p50": pct(v, 0.5), "p90": pct(v, 0.9), "n": len(v)}
            print(f"{k:<10} {summary[k]['p50']:9.4f} {summary[k]['p90']:9.4f}")
    ratios = {}
    for a, b in (("api", "crun"), ("api", "runc"), ("cli", "runc"), ("cli", "crun"), ("pyfloor", "runc"),
                 ("cli", "pyfloor"), ("api", "api_hostns"), ("api", "api_prev"), ("api_hostns", "api_prev"),
                 ("api", "runc_userns"), ("runc_userns", "runc")):
        if a in summary and b in summary:
            ratios[f"{a}/{b}"] = summary[a]["p50"] / summary[b]["p50"]
            print(f"ratio p50 {a}/{b}: {ratios[f'{a}/{b}']:.2f}")
    for k, v in freeze.items():
        if isinstance(v, float):
            print(f"{k}: {v:.4f}")
    if "agent_freeze" in freeze and "runc_pause" in freeze:
        ratios["freeze/runc_pause"] = freeze["agent_freeze"] / freeze["runc_pause"]
        ratios["thaw/runc_resume"] = freeze["agent_thaw"] / freeze["runc_resume"]
        print(f"ratio freeze/runc pause: {ratios['freeze/runc_pause']:.2f}, "
              f"thaw/runc resume: {ratios['thaw/runc_resume']:.2f}")
    for n in notes + freeze.get("notes", []):
        print("note:", n)
    out = os.path.join(REPO, "bench", "out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "launch_latency.json"), "w") as f:
        json.dump({"summary": summary, "ratios": ratios, "freeze": freeze, "notes": notes,
                   "limits": list(LIMITS), "host": os.uname().release}, f, indent=2)
    return 0


def bench_freeze(agent: Agentd, base: str, runc: str | None, limits: dict, rounds: int = 5) -> dict:
    """Freeze/thaw of a container running 100 sleeping processes (median of rounds)."""
    script = "i=0; while [ $i -lt 99 ]; do sleep 1000 & i=$((i+1)); done; wait"
    res: dict = {"notes": []}
    rootfs = os.path.join(base, "rootfs")
    agent.client.call("POST", "/v1/containers", body={"name": "hundred", "argv": ["/bin/sh", "-c", script],
                                                       "rootfs": rootfs})
    info = agent.client.call("GET", "/v1/containers/hundred")
    cg = Cgroup(info["cgroup"])
    deadline = time.monotonic() + 60
    while len(cg.procs()) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    fr, th = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        agent.client.call("POST", "/v1/containers/hundred/freeze")
        fr.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        agent.client.call("POST", "/v1/containers/hundred/thaw")
        th.append(time.perf_counter() - t0)
    res["agent_freeze"], res["agent_thaw"] = statistics.median(fr), statistics.median(th)
    agent.client.call("DELETE", "/v1/containers/hundred", query={"force": "1"})
    if not runc:
        res["notes"].append("runc pause/resume: runc not usable here")
        return res
    bundle = make_bundle(base, {}, ["/bin/sh", "-c", script])  # 100 processes: no pids limit, as for agentd
    rroot = os.path.join(base, "runc-root")
    cid = "hundred-" + secrets.token_hex(2)
    try:
        subprocess.run([runc, "--root", rroot, "run", "-d", "--bundle", bundle, cid], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        fr, th = [], []
        for _ in range(rounds):
            fr.append(timed([runc, "--root", rroot, "pause", cid]))
            th.append(timed([runc, "--root", rroot, "resume", cid]))
        res["runc_pause"], res["runc_resume"] = statistics.median(fr), statistics.median(th)
    except (subprocess.CalledProcessError, RuntimeError) as e:
        res["notes"].append(f"runc pause/resume: {str(e).splitlines()[0]}")
    finally:
        subprocess.run([runc, "--root", rroot, "delete", "-f", cid], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return res


if __name__ == "__main__":
    sys.exit(main())
