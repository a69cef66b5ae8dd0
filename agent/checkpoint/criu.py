"""The CRIU driver: `criu` driven through its command line (Debian's criu).

Every function here runs a CRIU process and therefore runs in the launcher
(the single-threaded forkserver), never in agentd. Dump and restore are
started (`start`) and left running: the launcher's loop goes on copying
logs and reaping exits meanwhile, reaps CRIU and answers then (`finish`).

Dump (`dump_argv`): the container's init tree by its host pid; CRIU freezes
the container's cgroup itself (`--freeze-cgroup`, cgroup.freeze on v2) and
kills the tree after the dump unless `--leave-running` (then it thaws it).
Mounts the container got from the host (the /dev nodes, the masked paths'
/dev/null) are bind mounts of host files: `--external mnt[]` records them as
external, and the restore finds them again with `--ext-mount-map auto`.
The container's PID 1 leads its own session (runtime/container_init.py calls
setsid: CRIU refuses a session leader outside the PID namespace) and its
stdin is its own /dev/null (a file of a mount it cannot see is not dumped).
The launcher's log pipes are outside the tree: the restore hands CRIU new
pipes in their place (`--inherit-fd fd[N]:pipe:[INODE]`, INODE being the
old pipe's, recorded at dump).

Restore (`restore_argv`): detached (`-d`), so the restored init is
reparented to the launcher (the child subreaper) when CRIU exits, into the
new cgroup (`--cgroup-root`), the rootfs given again with `--root`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

CRIU = "criu"
CHECK_TIMEOUT = 120.0
DUMP_TIMEOUT = 600.0
VERSION_RE = re.compile(r"Version:\s*(\d+)\.(\d+)(?:\.(\d+))?")


class CriuError(Exception):
    """CRIU failed or cannot run here; the message is one line."""


def find() -> str | None:
    return shutil.which(CRIU) or next((p for p in ("/usr/sbin/criu", "/sbin/criu") if os.access(p, os.X_OK)), None)


def parse_version(text: str) -> str | None:
    """'Version: 3.17.1' -> '3.17.1' (criu --version)."""
    m = VERSION_RE.search(text or "")
    if not m:
        return None
    return ".".join(x for x in m.groups() if x is not None)


def version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in v.split("."))


def first_error(text: str) -> str:
    """The first 'Error (...)' line of a CRIU log or output, shortened to one line."""
    for line in (text or "").splitlines():
        if "Error" in line:
            line = re.sub(r"^\(\d+\.\d+\)\s*", "", line.strip())
            return line[:300]
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return (lines[-1][:300] if lines else "no output")


def status() -> dict:
    """{"ok": bool, "version": str|None, "reason": one line or None}: whether
    CRIU is installed and `criu check` passes on this kernel."""
    exe = find()
    if exe is None:
        return {"ok": False, "version": None,
                "reason": "criu is not installed (install the Debian package criu); checkpoint needs it"}
    try:
        v = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=CHECK_TIMEOUT)
        version = parse_version(v.stdout + v.stderr)
        c = subprocess.run([exe, "check"], capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"ok": False, "version": None, "reason": f"criu could not be run: {e}"}
    if c.returncode != 0:
        return {"ok": False, "version": version,
                "reason": f"criu check fails on this kernel ({os.uname().release}, criu {version}): "
                          f"{first_error(c.stdout + c.stderr)}"}
    return {"ok": True, "version": version, "reason": None}


# Established TCP connections are dumped and restored in repair mode; the
# connections are locked meanwhile with nftables (the agent's own firewall
# tool; CRIU's default, iptables, needs iptables-restore).
TCP_ESTABLISHED = ["--tcp-established", "--network-lock", "nftables"]


# A network namespace its user namespace owns (the default container's) is
# dumped empty and restored empty, inside the user namespace CRIU restores;
# the restore's action script puts the container's eth0 in it
# (agent/checkpoint/nethook.py)
EMPTY_NETNS = ["--empty-ns", "net"]


def dump_argv(pid: int, images: str, cgroup: str, leave_running: bool, tcp_established: bool = False,
              empty_netns: bool = False) -> list[str]:
    argv = [find() or CRIU, "dump", "--tree", str(pid), "--images-dir", images,
            "--log-file", "dump.log", "-v4", "--external", "mnt[]", "--freeze-cgroup", cgroup,
            CPUINFO_AT_DUMP]
    if leave_running:
        argv.append("--leave-running")
    if tcp_established:
        argv += TCP_ESTABLISHED
    if empty_netns:
        argv += EMPTY_NETNS
    return argv


def restore_argv(images: str, rootfs: str, pidfile: str, cgroup_rel: str,
                 inherit: list[tuple[int, str]], tcp_established: bool = False,
                 net_script: str | None = None) -> list[str]:
    argv = [find() or CRIU, "restore", "--restore-detached", "--images-dir", images,
            "--log-file", "restore.log", "-v4", "--root", rootfs, "--ext-mount-map", "auto",
            "--pidfile", pidfile, "--manage-cgroups=soft", "--cgroup-root", cgroup_rel]
    if tcp_established:
        argv += TCP_ESTABLISHED
    if net_script:
        argv += EMPTY_NETNS + ["--action-script", net_script]
    for fd, key in inherit:
        argv += ["--inherit-fd", f"fd[{fd}]:{key}"]
    return argv


# The dump writes the CPU's features into the images (cpuinfo.img); an import
# checks them against this host's CPU before anything is made (`cpuinfo_check`:
# CRIU's default checks, FPU state and instruction set), so a checkpoint whose
# processes may use what this CPU lacks is refused with the reason.
CPUINFO_AT_DUMP = "--cpu-cap=fpu,ins"   # CRIU's defaults: any capability set writes the image
CPUINFO_IMAGE = "cpuinfo.img"


def cpuinfo_check(images: str) -> str | None:
    """None when this host's CPU has what the images' CPU had (or the images
    hold no cpuinfo: made before it was recorded); else CRIU's reason."""
    if not os.path.exists(os.path.join(images, CPUINFO_IMAGE)):
        return None
    log = os.path.join(images, "cpuinfo-check.log")
    try:
        run([find() or CRIU, "cpuinfo", "check", "--images-dir", images, "--log-file", "cpuinfo-check.log", "-v4"],
            log, timeout=CHECK_TIMEOUT)
    except CriuError as e:
        return str(e)
    return None


STDERR = "criu.stderr"      # beside its log: what CRIU says before its log is open (its options)


def start(argv: list[str], pass_fds=()) -> subprocess.Popen:
    """Start one CRIU command and return at once (the launcher reaps it; then `finish`)."""
    images = argv[argv.index("--images-dir") + 1]
    try:
        with open(os.path.join(images, STDERR), "wb") as err:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, pass_fds=pass_fds, close_fds=True)
    except OSError as e:
        raise CriuError(f"criu {argv[1]} could not be run: {e}") from None


def finish(argv: list[str], returncode: int, log_path: str) -> None:
    """CriuError with the log's first error line when a started CRIU command failed
    (what it wrote on stderr when it stopped before opening its log)."""
    if returncode != 0:
        text = ""
        for path in (log_path, os.path.join(os.path.dirname(log_path), STDERR)):
            try:
                with open(path, errors="replace") as f:
                    text = f.read()
            except OSError:
                continue
            if text.strip():
                break
        raise CriuError(f"criu {argv[1]} failed: {first_error(text or f'exit status {returncode}, no log')} "
                        f"(log: {log_path})")


def run(argv: list[str], log_path: str, timeout: float = DUMP_TIMEOUT, pass_fds=()) -> None:
    """Run one CRIU command; CriuError with the log's first error line on failure."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, pass_fds=pass_fds,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CriuError(f"criu {argv[1]} did not finish within {timeout:.0f}s (log: {log_path})") from None
    except OSError as e:
        raise CriuError(f"criu {argv[1]} could not be run: {e}") from None
    if p.returncode != 0:
        try:
            with open(log_path, errors="replace") as f:
                text = f.read()
        except OSError:
            text = p.stdout + p.stderr
        raise CriuError(f"criu {argv[1]} failed: {first_error(text)} (log: {log_path})")
