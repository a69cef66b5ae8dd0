"""Debian's OpenSSH server on 127.0.0.1, started here with its own sshd_config,
host key and an authorized key made with ssh-keygen (root login by key only),
and ssh_config files for the client: the real ssh and sshd, nothing mocked.

    sshd = Sshd(top); sshd.start()
    env["AGENT_SSH_COMMAND"] = f"ssh -F {sshd.ssh_config(sshd.user_key)}"
    ... agentctl --host sshd.url ...
    sshd.stop()
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from helpers import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
    return path


def available() -> str | None:
    """Why the ssh tests cannot run here, or None."""
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "openssh-server / openssh-client are not installed (scripts/setup.sh installs them)"
    return None


class Sshd:
    def __init__(self, top: str):
        self.top = top
        self.port = free_port()
        self.url = f"ssh://root@127.0.0.1:{self.port}"
        self.proc = None
        self.host_key = keygen(os.path.join(top, "host_key"))
        self.user_key = keygen(os.path.join(top, "user_key"))     # authorized
        self.other_key = keygen(os.path.join(top, "other_key"))   # a key the server does not know
        self.authorized = os.path.join(top, "authorized_keys")
        shutil.copy(self.user_key + ".pub", self.authorized)
        self.config = os.path.join(top, "sshd_config")
        with open(self.config, "w") as f:
            f.write(f"ListenAddress 127.0.0.1:{self.port}\nHostKey {self.host_key}\nPidFile {top}/sshd.pid\n"
                    f"AuthorizedKeysFile {self.authorized}\nPermitRootLogin prohibit-password\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                    "PrintMotd no\nLogLevel VERBOSE\n")
        with open(self.host_key + ".pub") as f:
            kind, key = f.read().split()[:2]
        self.known_hosts = os.path.join(top, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {kind} {key}\n")
        self.log_path = os.path.join(top, "sshd.log")

    def ssh_config(self, key: str) -> str:
        """An ssh_config for 127.0.0.1 with this identity and the server's host key known."""
        path = os.path.join(self.top, f"ssh_config.{os.path.basename(key)}")
        with open(path, "w") as f:
            f.write(f"Host 127.0.0.1\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                    f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                    "  StrictHostKeyChecking yes\n")
        return path

    def start(self, timeout: float = 30) -> None:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # its privilege separation directory
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {open(self.log_path).read()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("sshd did not listen") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
