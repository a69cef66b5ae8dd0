"""Per-process views of one cgroup: the expensive families cAdvisor keeps
behind --enable_metrics (process, cpuLoad), here behind [collector] enable.

Cost: one read of cgroup.procs and of cgroup.threads, then per process a listdir of /proc/PID/fd
and a readlink per descriptor (sockets); with tasks_state, one read of
cgroup.threads and of /proc/TID/stat per thread. bench/collect states the
per-pass figures. Processes that exit during the walk are skipped.
"""
from __future__ import annotations

import os

from runtime.stats import ProcessStats

# /proc/PID/stat state letter -> index in ProcessStats.tasks_state
TASK_STATES = ("sleeping", "running", "stopped", "uninterruptible")
_STATE_INDEX = {"S": 0, "R": 1, "T": 2, "t": 2, "D": 3}


def parse_pids(text: str) -> list[int]:
    """cgroup.procs / cgroup.threads -> pids."""
    return [int(x) for x in text.split() if x.isdigit()]


def parse_stat_state(text: str) -> str:
    """The state letter of /proc/PID/stat (after the command in parentheses, which may hold spaces)."""
    rest = text[text.rindex(")") + 1:].split()
    if not rest:
        raise ValueError("/proc/PID/stat has no state")
    return rest[0]


def parse_nofile_soft(text: str) -> int | None:
    """Soft "Max open files" of /proc/PID/limits; -1 for unlimited (cAdvisor's convention)."""
    for line in text.splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files"):].split()[0]
            return -1 if soft == "unlimited" else int(soft)
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:    # gone (ESRCH/ENOENT) or not ours to read
        return None


def process_stats(cgroup_path: str, *, fds: bool = True, tasks: bool = False,
                  proc: str = "/proc") -> ProcessStats | None:
    """Walk the processes of a cgroup directory; None if it vanished."""
    text = _read(os.path.join(cgroup_path, "cgroup.procs"))
    if text is None:
        return None
    pids = parse_pids(text)
    nfd = nsock = nofile = None
    if fds:
        nfd = nsock = 0
        for pid in pids:
            d = f"{proc}/{pid}/fd"
            try:
                names = os.listdir(d)
            except OSError:
                continue
            nfd += len(names)
            for n in names:
                try:
                    if os.readlink(f"{d}/{n}").startswith("socket:"):
                        nsock += 1
                except OSError:
                    continue
        for pid in pids:     # the first process still there: the container's root process
            lim = _read(f"{proc}/{pid}/limits")
            if lim is not None:
                nofile = parse_nofile_soft(lim)
                break
    tids = parse_pids(_read(os.path.join(cgroup_path, "cgroup.threads")) or "")
    states = None
    if tasks:
        counts = [0, 0, 0, 0]
        for tid in tids:
            st = _read(f"{proc}/{tid}/stat")
            if st is None:
                continue
            try:
                i = _STATE_INDEX.get(parse_stat_state(st))
            except ValueError:
                continue
            if i is not None:
                counts[i] += 1
        states = tuple(counts)
    return ProcessStats(file_descriptors=nfd, sockets=nsock,
                        max_open_files=nofile, tasks_state=states, threads=len(tids))
