#!/usr/bin/env python3
"""Cost of container_fs_usage_bytes: the bounded walk of an image
container's upper dir (runtime/fsusage.py) against `du -s` of the same tree,
measured in one run.

    python3 bench/fs_usage.py [--files 20000] [--dirs 200] [--budget 4096] [--rounds 5]

Builds a tree of FILES small files in DIRS directories under /var/tmp (a
real disk, as the state dir), then, interleaved over ROUNDS rounds and
taking each contender's fastest round (CPU time of the measuring process or
of du, so other load on the machine does not count):
  du        `du -s -B1 TREE` (GNU coreutils, C): the peer, a full walk
  full      one complete walk by runtime.fsusage.Walks (budget unbounded)
  pass      one collector pass of the default budget (agent.collector.FS_BUDGET
            entries): what a collection pass pays, whatever the tree's size
Prints the ratios full/du and pass/full, the passes a figure takes to be
complete (its staleness, in collection intervals), and checks the figure
equals du's. Writes bench/out/fs_usage.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from agent.collector import FS_BUDGET  # noqa: E402
from runtime.fsusage import Walks  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def build(top: str, files: int, dirs: int) -> None:
    for d in range(dirs):
        os.makedirs(os.path.join(top, f"d{d // 20}", f"s{d}"), exist_ok=True)
    for i in range(files):
        with open(os.path.join(top, f"d{(i % dirs) // 20}", f"s{i % dirs}", f"f{i}"), "wb") as f:
            f.write(b"x" * (100 + i % 5000))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--dirs", type=int, default=200)
    ap.add_argument("--budget", type=int, default=FS_BUDGET)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    top = tempfile.mkdtemp(prefix="cga-fsbench-", dir="/var/tmp")
    try:
        build(top, a.files, a.dirs)
        best = {"du": float("inf"), "full": float("inf"), "pass": float("inf")}
        du_bytes = figure = passes = None
        for _ in range(a.rounds):
            c0 = children_cpu()
            out = subprocess.run(["du", "-s", "-B1", top], capture_output=True, text=True, check=True).stdout
            best["du"] = min(best["du"], children_cpu() - c0)
            du_bytes = int(out.split()[0])

            w = Walks()
            c0 = cpu()
            w.advance({"c": top}, 1 << 62)
            best["full"] = min(best["full"], cpu() - c0)
            figure = w.figures()["c"][0]

            w = Walks()
            n = 0
            while "c" not in w.figures():
                c0 = cpu()
                w.advance({"c": top}, a.budget)
                if n == 0:
                    best["pass"] = min(best["pass"], cpu() - c0)
                n += 1
            passes = n
        entries = a.files + a.dirs + a.dirs // 20 + 1
        result = {
            "files": a.files, "dirs": a.dirs, "entries": entries, "budget": a.budget,
            "cpu_ms": {k: round(v * 1000, 2) for k, v in best.items()},
            "ratio_full_to_du": round(best["full"] / best["du"], 2) if best["du"] else None,
            "ratio_pass_to_full": round(best["pass"] / best["full"], 3),
            "us_per_entry_full": round(best["full"] / entries * 1e6, 2),
            "passes_to_a_figure": passes,
            "figure_equals_du": figure == du_bytes, "bytes": figure,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        print(json.dumps(result, indent=2))
        os.makedirs(os.path.join(REPO, "bench", "out"), exist_ok=True)
        with open(os.path.join(REPO, "bench", "out", "fs_usage.json"), "w") as f:
            json.dump(result, f, indent=2)
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
