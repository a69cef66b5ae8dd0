"""What one request costs over `--host ssh://` (agent/cli/ssh_transport.py), against peers
measured in the same run on this machine (sshd on 127.0.0.1, started here):

    unix          GET /v1/health on the agent's Unix socket (agent.cli.client.Client)
    ssh true      a bare `ssh -T HOST true` session: OpenSSH's own floor for one session
    ssh+dial      GET /v1/health through ssh + the remote `agentctl system dial-stdio`
    ssh+dial (ControlPersist)   the same with OpenSSH connection sharing in the ssh_config
                  (ControlMaster auto, ControlPersist): sessions reuse one connection
    agentctl ps   the whole `agentctl --host ssh://... ps` process vs `agentctl ps` on the socket

    python3 bench/remote_request.py [--rounds 20]

Prints the better of two interleaved medians (wall clock; the machine is shared, so read the ratios) and the
ratios ssh+dial / ssh true (what dial-stdio and a Python start on the remote
side add to a session) and ssh+dial / unix.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "host"))

import sshd_fixtures  # noqa: E402
from test_agentctl import start_agentd, stop_agentd  # noqa: E402
from test_remote_host import remote_agentctl  # noqa: E402


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    why = sshd_fixtures.available()
    if why:
        print(f"skipped: {why}")
        return 0
    from agent.cli.client import Client
    from conftest import kill_tree
    from runtime.cgroupfs import Cgroup, find_mount

    top = tempfile.mkdtemp(prefix="cga-bench-remote-")
    os.chmod(top, 0o755)
    sshd = sshd_fixtures.Sshd(top)
    root = Cgroup(os.path.join(find_mount(), f"cga-bench-{uuid.uuid4().hex[:10]}"))
    os.mkdir(root.path)
    d = shared_cfg = None
    try:
        sshd.start()
        os.mkdir(os.path.join(top, "agent"))
        d = start_agentd(root, os.path.join(top, "agent"))
        ssh_cmd = f"ssh -F {sshd.ssh_config(sshd.user_key)}"
        os.environ.update(AGENT_SSH_COMMAND=ssh_cmd, AGENT_REMOTE_AGENTCTL=remote_agentctl(d.sock))
        local, remote = Client(d.sock, host=""), Client(host=sshd.url)
        shared_cfg = sshd.ssh_config(sshd.user_key) + ".shared"
        with open(sshd.ssh_config(sshd.user_key)) as src, open(shared_cfg, "w") as dst:
            dst.write(src.read() + f"  ControlMaster auto\n  ControlPath {top}/cm-%C\n  ControlPersist 60\n")
        os.environ.pop("AGENT_HOST", None)
        assert remote.call("GET", "/v1/health")["status"] == "ok"
        bare = ssh_cmd.split() + ["-o", "BatchMode=yes", "-T", "-p", str(sshd.port), "-l", "root", "127.0.0.1", "true"]
        agentctl = [sys.executable, "-m", "agent.cli"]
        res = {}
        os.environ["AGENT_SSH_COMMAND"] = f"ssh -F {shared_cfg}"   # read when a client is made
        remote_shared = Client(host=sshd.url)
        os.environ["AGENT_SSH_COMMAND"] = ssh_cmd
        for _ in range(2):   # interleaved rounds: load changes hit every contender alike
            for name, fn in (("unix", lambda: local.call("GET", "/v1/health")),
                             ("ssh true", lambda: subprocess.run(bare, check=True)),
                             ("ssh+dial", lambda: remote.call("GET", "/v1/health")),
                             ("ssh+dial ControlPersist", lambda: remote_shared.call("GET", "/v1/health")),
                             ("agentctl ps (socket)", lambda: subprocess.run(
                                 [*agentctl, "--socket", d.sock, "ps"], check=True, stdout=subprocess.DEVNULL)),
                             ("agentctl ps (--host)", lambda: subprocess.run(
                                 [*agentctl, "--host", sshd.url, "ps"], check=True, stdout=subprocess.DEVNULL))):
                res.setdefault(name, []).append(timed(fn, max(1, args.rounds // 2)))
        med = {k: min(v) for k, v in res.items()}
        for k, v in med.items():
            print(f"{k:22s} {v * 1000:9.2f} ms")
        print(f"ssh+dial / ssh true    {med['ssh+dial'] / med['ssh true']:9.2f}x")
        print(f"ssh+dial / unix        {med['ssh+dial'] / med['unix']:9.0f}x")
        print(f"ssh+dial / ControlPersist {med['ssh+dial'] / med['ssh+dial ControlPersist']:6.2f}x")
        print(f"agentctl ps --host / socket {med['agentctl ps (--host)'] / med['agentctl ps (socket)']:5.2f}x")
    finally:
        if shared_cfg:
            subprocess.run(["ssh", "-F", shared_cfg, "-O", "exit", "-p", str(sshd.port), "root@127.0.0.1"],
                           capture_output=True)   # the shared connection's master
        if d is not None:
            stop_agentd(d)
        sshd.stop()
        kill_tree(root)
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
