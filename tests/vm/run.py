#!/usr/bin/env python3
"""Run the VM test tier: boot this machine's filesystem under qemu (virtme-ng,
TCG) with full cgroup v2 and run ``pytest tests/vm`` inside.

On the host (what ./test.sh does):

    python3 tests/vm/run.py [pytest args]          # every tests/vm/test_*.py
    python3 tests/vm/run.py tests/vm/test_x.py -k y
    python3 tests/vm/run.py --capture              # refresh tests/unit/fixtures/kernel-6.1
    python3 tests/vm/run.py --bench bench/checkpoint.py [-n 5]   # a bench script, not pytest

Results come back through the repository, which the VM mounts read-write
(the serial console is not reliable): tests/vm/out/<run>/ holds pytest.out
(full pytest output), junit.xml, exit_code, vmfacts.txt and console.log.

Exits non-zero when qemu, vng or a kernel is missing, the VM did not boot or
did not finish in time, the inner run failed, or no test ran.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_ROOT = os.path.join(REPO, "tests", "vm", "out")
IN_VM_ENV = "CGROUP_AGENT_IN_VM"
DEFAULT_TIMEOUT = 30 * 60
HANG_DUMP_SECONDS = 300
FIXTURE_DIR = os.path.join(REPO, "tests", "unit", "fixtures", "kernel-6.1")


class RunFailed(Exception):
    """The VM tier could not run; the message is one line for the summary."""


# -- host side -------------------------------------------------------------

def _version_key(path: str):
    ver = os.path.basename(path)[len("vmlinuz-"):]
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+]", ver)]


def newest_kernel() -> str:
    kernels = [k for k in glob.glob("/boot/vmlinuz-*") if os.access(k, os.R_OK)]
    if not kernels:
        raise RunFailed("no kernel: /boot/vmlinuz-* is missing or unreadable "
                        "(install linux-image-amd64)")
    return max(kernels, key=_version_key)


def find_tool(name: str, hint: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not found:
        raise RunFailed(f"{name} not found on PATH ({hint})")
    return found


def vng_command(kernel: str, inner: str, memory: str, cpus: int) -> list[str]:
    return [find_tool("vng", "pip install virtme-ng"),
            "--disable-kvm",             # /dev/kvm exists here but hangs: TCG only
            "--run", kernel,
            "--memory", memory, "--cpus", str(cpus),
            "--rwdir", REPO,
            "--verbose",                 # kernel messages (lockups, hung tasks) in console.log
            "--exec", inner]


def inner_command(outdir: str, capture: bool, pytest_args: list[str], bench: str | None = None) -> str:
    """The shell line vng runs inside the VM (as root, / read-only over 9p)."""
    argv = [sys.executable, os.path.join(REPO, "tests", "vm", "run.py"),
            "--inner", outdir]
    if capture:
        argv.append("--capture")
    if bench:
        argv += ["--bench", bench]
    argv += ["--"] + pytest_args
    return f"cd {shlex.quote(REPO)} && " + " ".join(shlex.quote(a) for a in argv)


def boot(cmd: list[str], console_path: str, timeout: float) -> int:
    """Run vng; kill its whole process group (qemu included) on timeout."""
    with open(console_path, "wb") as console:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=REPO)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RunFailed(f"the VM did not finish within {timeout:.0f} s; qemu killed "
                            f"(console: {console_path})") from None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise



def read_text(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


def junit_counts(path: str) -> dict[str, float] | None:
    try:
        root = ET.parse(path).getroot()
    except (FileNotFoundError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for s in suites:
        for key in total:
            total[key] += float(s.get(key, 0) or 0)
    return total


def junit_properties(path: str) -> list[str]:
    """"test: name=value" for every record_property of every test case."""
    try:
        root = ET.parse(path).getroot()
    except (FileNotFoundError, ET.ParseError):
        return []
    out = []
    for case in root.iter("testcase"):
        props = [f"{p.get('name')}={p.get('value')}" for p in case.iter("property")]
        if props:
            out.append(f"{case.get('name')}: {' '.join(props)}")
    return out


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _terminated(signum, frame):
    raise SystemExit(128 + signum)   # unwinds through boot(), which kills qemu


def host_main(args, pytest_args: list[str]) -> int:
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGHUP, _terminated)
    runid = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    outdir = os.path.join(OUT_ROOT, runid)
    console = os.path.join(outdir, "console.log")
    label = "vm capture" if args.capture else f"vm bench {args.bench}" if args.bench else "vm tier"
    try:
        find_tool("qemu-system-x86_64", "apt-get install qemu-system-x86")
        kernel = args.kernel or newest_kernel()
        if not os.access(kernel, os.R_OK):
            raise RunFailed(f"kernel {kernel} is missing or unreadable")
        os.makedirs(outdir)
        cmd = vng_command(kernel, inner_command(outdir, args.capture, pytest_args, args.bench),
                          args.memory, args.cpus)
        with open(os.path.join(outdir, "command.txt"), "w") as f:
            f.write(shlex.join(cmd) + "\n")
        print(f"{label}: booting {kernel} under qemu TCG (vng), output in {outdir}",
              flush=True)
        rc_vng = boot(cmd, console, args.timeout)
        wall = time.monotonic() - started

        facts = read_text(os.path.join(outdir, "vmfacts.txt"))
        exit_text = read_text(os.path.join(outdir, "exit_code"))
        output = read_text(os.path.join(outdir, "pytest.out"))
        if facts is None:
            raise RunFailed(f"the VM did not boot or did not start the inner runner "
                            f"(vng exit {rc_vng}); console tail:\n"
                            + tail(read_text(console) or "(empty console)"))
        if output:
            print(output, end="" if output.endswith("\n") else "\n")
        if exit_text is None:
            raise RunFailed(f"the inner run did not finish (no exit_code; vng exit {rc_vng});"
                            " console tail:\n" + tail(read_text(console) or ""))
        inner_rc = int(exit_text.strip() or "1")
        timing = dict(re.findall(r"^(\w+)=(\S+)$", facts, re.M))
        boot_s = timing.get("guest_uptime_at_start", "?")
        inner_s = timing.get("inner_seconds") or "?"
        summary = (f"{label}: wall {wall:.1f} s (guest uptime at inner start {boot_s} s, "
                   f"inner run {inner_s} s)")
        if args.capture:
            if inner_rc != 0:
                raise RunFailed(f"capture failed (exit {inner_rc}); see above")
            print(f"{summary}; fixtures written to {FIXTURE_DIR}")
            return 0
        if args.bench:
            if inner_rc != 0:
                raise RunFailed(f"{args.bench} exited {inner_rc}; see above")
            print(f"{summary}; {args.bench} done")
            return 0
        counts = junit_counts(os.path.join(outdir, "junit.xml"))
        if counts is None:
            raise RunFailed(f"inner pytest exited {inner_rc} and wrote no junit.xml")
        for line in junit_properties(os.path.join(outdir, "junit.xml")):
            print(f"{label}: measured: {line}")
        ran = int(counts["tests"] - counts["skipped"])
        print(f"{summary}; tests {int(counts['tests'])}, ran {ran}, "
              f"failed {int(counts['failures'])}, errors {int(counts['errors'])}, "
              f"skipped {int(counts['skipped'])}, pytest {counts['time']:.1f} s")
        if inner_rc != 0:
            raise RunFailed(f"inner pytest exited {inner_rc}")
        if ran == 0:
            raise RunFailed("zero tests ran inside the VM")
        print(f"{label}: PASSED")
        return 0
    except RunFailed as exc:
        print(f"{label}: FAILED: {exc}", flush=True)
        return 1


# -- VM side ---------------------------------------------------------------

def vm_facts() -> str:
    """A short description of the guest, written before anything runs."""
    def first(path):
        return (read_text(path) or "").strip()

    lines = [f"guest_uptime_at_start={first('/proc/uptime').split()[0]}",
             f"kernel={os.uname().release}",
             f"cpus={os.cpu_count()}",
             f"mem_total_kib={first('/proc/meminfo').split()[1]}",
             f"cgroup_controllers={first('/sys/fs/cgroup/cgroup.controllers')!r}",
             f"cgroup_subtree_control={first('/sys/fs/cgroup/cgroup.subtree_control')!r}",
             f"python={sys.executable}",
             f"criu={_criu_fact()}"]
    return "\n".join(lines) + "\n"


def _criu_fact() -> str:
    """'3.17.1 check ok', or why not: test_checkpoint_vm.py fails on it (never skips)."""
    exe = shutil.which("criu") or ("/usr/sbin/criu" if os.access("/usr/sbin/criu", os.X_OK) else None)
    if exe is None:
        return "missing"
    try:
        ver = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
        ok = subprocess.run([exe, "check"], capture_output=True, text=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unusable ({e})"
    return f"{' '.join(ver.split()[1:2]) or '?'} check {'ok' if ok else 'failed'}"


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def vm_main(args, pytest_args: list[str]) -> int:
    outdir = args.inner
    start = time.monotonic()
    write(os.path.join(outdir, "vmfacts.txt"), vm_facts())
    env = dict(os.environ)
    env[IN_VM_ENV] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"   # the repo is shared with the host
    # hypothesis and pytest-benchmark alone take ~20% of pytest's start-up over
    # 9p under TCG, and no VM test uses them; `-p NAME` loads one back.
    env.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    env["PATH"] = os.path.dirname(sys.executable) + ":" + env.get("PATH", "/usr/bin:/bin")
    if args.capture:
        argv = [sys.executable, os.path.join(REPO, "tests", "vm", "capture_fixtures.py"),
                "--out", FIXTURE_DIR]
    elif args.bench:       # a bench script and its own arguments (its output in pytest.out)
        argv = [sys.executable, os.path.join(REPO, args.bench)] + pytest_args
    else:
        paths = [a for a in pytest_args
                 if not a.startswith("-") and os.path.exists(a.split("::")[0])]
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEs",
                # per-test timeout (pyproject: a hung test fails with its
                # stack, the session goes on)
                "-p", "pytest_timeout",
                "-o", "console_output_style=classic",
                # a test still running after this long dumps every thread's
                # stack into pytest.out (it is not failed for it): a hang
                # leaves its evidence behind
                "-o", f"faulthandler_timeout={HANG_DUMP_SECONDS}",
                "-o", "junit_family=xunit1",   # keeps record_property figures
                f"--junitxml={os.path.join(outdir, 'junit.xml')}"]
        argv += pytest_args + ([] if paths else [os.path.join("tests", "vm")])
    with open(os.path.join(outdir, "pytest.out"), "wb") as out:
        out.write(("$ " + shlex.join(argv) + "\n").encode())
        out.flush()
        rc = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        os.fsync(out.fileno())
    with open(os.path.join(outdir, "vmfacts.txt"), "a") as f:
        f.write(f"inner_seconds={time.monotonic() - start:.1f}\n")
    write(os.path.join(outdir, "exit_code"), f"{rc}\n")
    os.sync()
    return rc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description="Run tests/vm inside a qemu VM (virtme-ng, TCG) with full cgroup v2. "
                    "Unknown arguments are passed to pytest.", allow_abbrev=False)
    p.add_argument("--capture", action="store_true",
                   help="run tests/vm/capture_fixtures.py instead of pytest")
    p.add_argument("--bench", metavar="SCRIPT",
                   help="run this bench script (a path in the repo) with the remaining arguments instead of pytest")
    p.add_argument("--vm-timeout", dest="timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds before qemu is killed (default %(default)s)")
    p.add_argument("--vm-kernel", dest="kernel", help="kernel image (default: newest /boot/vmlinuz-*)")
    p.add_argument("--vm-memory", dest="memory", default="2G")
    p.add_argument("--vm-cpus", dest="cpus", type=int, default=2)
    p.add_argument("--inner", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        args, rest = p.parse_known_args(argv[:i])
        rest += argv[i + 1:]
    else:
        args, rest = p.parse_known_args(argv)
    if args.inner:
        return vm_main(args, rest)
    return host_main(args, rest)

if __name__ == "__main__":
    sys.exit(main())
