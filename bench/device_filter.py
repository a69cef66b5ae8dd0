#!/usr/bin/env python3
"""Per-launch cost of the device allow-list, measured in one run.

    python3 bench/device_filter.py [-n 200] [--launches 30]      (as root)

Measures with time.perf_counter, interleaved so drift hits both sides alike:
  compile   runtime.devfilter.compile_rules(DEFAULT_RULES + one --device rule)
  install   load + attach on a fresh cgroup (BPF_PROG_QUERY, BPF_PROG_LOAD,
            BPF_PROG_ATTACH, BPF_OBJ_GET_INFO_BY_FD), i.e. what agentd adds to
            a container's first start
  present   install() on a cgroup that has it already: what a restart adds
  mkdir     creating the cgroup itself, the peer every launch pays anyway
  launch    a launcher spawn of /bin/true in a fresh cgroup, to exit, without
            and with the program (mkdir + [install] + spawn + reap)
Prints medians in microseconds and the ratios install/mkdir, install/launch
and launch-with/launch-without. Writes bench/out/device_filter.json.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from agent.launcher import LauncherClient  # noqa: E402
from runtime import devfilter  # noqa: E402
from runtime.cgroupfs import find_mount  # noqa: E402

RULES = devfilter.DEFAULT_RULES + (devfilter.Rule("b", 7, 0, "rw"),)


def us(values):
    return round(statistics.median(values) * 1e6, 1)


def rm_tree(path: str) -> None:
    for name in os.listdir(path):
        sub = os.path.join(path, name)
        if os.path.isdir(sub):
            rm_tree(sub)
    os.rmdir(path)


def launch(client: LauncherClient, base: str, state: str, with_filter: bool) -> float:
    cid = "b" + uuid.uuid4().hex[:11]
    cg = os.path.join(base, "containers", cid)
    spec = {"argv": ["/bin/true"], "cgroup": cg, "env": {"PATH": "/bin"},
            "stdout": os.path.join(state, "out"), "stderr": os.path.join(state, "err")}
    t0 = time.perf_counter()
    os.mkdir(cg)
    if with_filter:
        devfilter.install(cg, RULES)
    pid = client.spawn(cid, spec)
    while True:
        if any(r.id == cid and r.pid == pid for r in client.exits()):
            break
        select.select([client.fileno()], [], [], 0.05)
        client.read_events()
    took = time.perf_counter() - t0
    client.ack(cid, pid)
    os.rmdir(cg)
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200, help="program loads measured")
    ap.add_argument("--launches", type=int, default=30, help="launches per side")
    args = ap.parse_args()
    base = os.path.join(find_mount(), f"cga-bench-{uuid.uuid4().hex[:10]}")
    os.makedirs(os.path.join(base, "containers"))
    state = tempfile.mkdtemp(prefix="cga-bench-devfilter-")
    res: dict = {"compile": [], "install": [], "present": [], "mkdir": [],
                 "launch_without": [], "launch_with": []}
    client = None
    try:
        for _ in range(args.n):
            t0 = time.perf_counter()
            devfilter.compile_rules(RULES)
            res["compile"].append(time.perf_counter() - t0)
            cg = os.path.join(base, "containers", uuid.uuid4().hex[:12])
            t0 = time.perf_counter()
            os.mkdir(cg)
            res["mkdir"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            devfilter.install(cg, RULES)
            res["install"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            devfilter.install(cg, RULES)
            res["present"].append(time.perf_counter() - t0)
            os.rmdir(cg)
        client = LauncherClient.connect_or_start(state, os.path.join(base, "launcher"))
        for i in range(args.launches):
            for with_filter in ((False, True) if i % 2 else (True, False)):
                key = "launch_with" if with_filter else "launch_without"
                res[key].append(launch(client, base, state, with_filter))
    finally:
        if client is not None:
            try:
                client.shutdown()
            except Exception:
                pass
            client.close()
            time.sleep(0.5)
        try:
            rm_tree(base)
        except OSError as e:
            print(f"note: could not remove {base}: {e}", file=sys.stderr)
        shutil.rmtree(state, ignore_errors=True)

    out = {k: us(v) for k, v in res.items()}
    out["ratio_install_mkdir"] = round(out["install"] / out["mkdir"], 2)
    out["ratio_launch_with_without"] = round(out["launch_with"] / out["launch_without"], 3)
    out["ratio_install_launch"] = round(out["install"] / out["launch_without"], 4)
    out["program_insns"] = len(devfilter.compile_rules(RULES)) // 8
    print(f"device filter: {len(RULES)} rules, {out['program_insns']} instructions; medians in microseconds")
    for k in ("compile", "install", "present", "mkdir", "launch_without", "launch_with"):
        print(f"  {k:<15} {out[k]:10.1f}")
    print(f"  ratio install/mkdir: {out['ratio_install_mkdir']:.2f}")
    print(f"  ratio install/launch (the filter's share of a first start): {out['ratio_install_launch']:.4f}")
    print(f"  ratio launch with/without the filter: {out['ratio_launch_with_without']:.3f}"
          " (end to end; launch-to-launch noise on a shared host is larger than the difference)")
    os.makedirs(os.path.join(REPO, "bench", "out"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "out", "device_filter.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
