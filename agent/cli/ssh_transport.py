"""The client's second transport: the agent of another host, reached over OpenSSH.

    agentctl --host ssh://[USER@]HOST[:PORT] ps        (or AGENT_HOST=ssh://...)

For each request the client starts the user's own ``ssh`` (their config,
keys and known_hosts; BatchMode, so it never prompts; no tty) running
``agentctl system dial-stdio`` on that host, which joins its stdin and stdout
to the agent's socket there. ssh's stdin and stdout are one end of a
socketpair; the client speaks HTTP on the other end exactly as on the Unix
socket. One request per connection, as on the socket: one ssh per request.

Environment:
    AGENT_SSH_COMMAND       the ssh command line (default: ssh), e.g. "ssh -F ./ssh_config"
    AGENT_REMOTE_AGENTCTL   the agentctl command on the remote host (default: agentctl),
                            e.g. "/opt/cgroup-agent/bin/agentctl" or "env PATH=/opt/x/bin agentctl"

An explicit --socket is passed to the remote agentctl; without it the remote
agentctl uses its own default ($AGENT_SOCKET there, or /run/cgroup-agent/agent.sock).

When ssh fails, its stderr names why; failure() turns that into one line
(ssh missing, host unreachable, key refused, agentctl missing on the host).
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
from urllib.parse import urlsplit

from agent.cli.errors import ConnectError

SSH_EXIT_ERROR = 255        # ssh's own failures (connect, authentication)
SHELL_NOT_FOUND = 127       # the remote shell could not find the command
SHELL_NOT_EXECUTABLE = 126
DEFAULT_REMOTE_AGENTCTL = "agentctl"
HOST_ACCEPTED = "use ssh://[USER@]HOST[:PORT]"


class HostError(ValueError):
    """--host / AGENT_HOST is not an ssh:// URL we accept."""


def parse_host(url: str) -> tuple[str | None, str, int | None]:
    """ssh://[USER@]HOST[:PORT] -> (user, host, port)."""
    if not url.startswith("ssh://"):
        raise HostError(f"host {url!r} is not accepted; {HOST_ACCEPTED} (only ssh:// is supported)")
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise HostError(f"host {url!r}: {e}; {HOST_ACCEPTED}") from None
    host = u.hostname
    if not host or host.startswith("-") or u.path not in ("", "/") or u.query or u.fragment or u.password:
        raise HostError(f"host {url!r} is not accepted; {HOST_ACCEPTED}")
    user = u.username
    if user is not None and (not user or user.startswith("-")):
        raise HostError(f"host {url!r}: bad user name; {HOST_ACCEPTED}")
    return user, host, port


def remote_command(socket_path: str | None) -> str:
    """The command line ssh asks the remote shell to run (every word quoted)."""
    words = shlex.split(os.environ.get("AGENT_REMOTE_AGENTCTL") or DEFAULT_REMOTE_AGENTCTL)
    if socket_path:
        words += ["--socket", socket_path]
    words += ["system", "dial-stdio"]
    return " ".join(shlex.quote(w) for w in words)


def ssh_argv(url: str, socket_path: str | None) -> list[str]:
    user, host, port = parse_host(url)
    argv = shlex.split(os.environ.get("AGENT_SSH_COMMAND") or "ssh")
    argv += ["-o", "BatchMode=yes", "-T", "-o", "ConnectTimeout=15"]
    if port is not None:
        argv += ["-p", str(port)]
    if user is not None:
        argv += ["-l", user]
    return argv + ["--", host, remote_command(socket_path)]


class SshTransport:
    def __init__(self, url: str, socket_path: str | None = None, timeout: float | None = None):
        try:
            self.argv = ssh_argv(url, socket_path)
        except HostError as e:
            raise ConnectError(str(e)) from None
        self.url = url
        self.timeout = timeout
        self.where = f"agentd on {url}"
        self._procs: dict[int, subprocess.Popen] = {}   # our socket's fd -> its ssh

    def connect(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(self.argv, stdin=theirs, stdout=theirs, stderr=subprocess.PIPE,
                                    process_group=0)   # Ctrl-C is for agentctl (it forwards it), not ssh
        except FileNotFoundError:
            ours.close()
            raise ConnectError(f"cannot reach {self.url}: {self.argv[0]!r} not found; install OpenSSH's client "
                               "(openssh-client) or set AGENT_SSH_COMMAND") from None
        except OSError as e:
            ours.close()
            raise ConnectError(f"cannot reach {self.url}: cannot run {self.argv[0]!r}: {e.strerror or e}") from None
        finally:
            theirs.close()
        ours.settimeout(self.timeout)
        self._procs[ours.fileno()] = proc
        return ours

    def close(self, sock) -> None:
        proc = self._procs.pop(sock.fileno(), None)
        sock.close()   # ssh reads EOF, ends the session, exits
        if proc is not None:
            self._reap(proc)

    @staticmethod
    def _reap(proc, timeout: float = 15) -> tuple[int | None, str]:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        return proc.returncode, (err or b"").decode("utf-8", "replace")

    def failure(self, sock) -> None:
        """Raise ConnectError naming why ssh or the remote agentctl failed (if they did)."""
        proc = self._procs.get(sock.fileno())
        if proc is None:
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        code, err = self._reap(proc)
        message = explain(self.url, code, err)
        if message:
            raise ConnectError(message)


def _last_line(err: str) -> str:
    lines = [ln.strip() for ln in err.splitlines()
             if ln.strip() and not ln.startswith("Warning: Permanently added")]
    return lines[-1] if lines else ""


def explain(url: str, code: int | None, err: str) -> str | None:
    """One line for a failed ssh session, or None when ssh and the remote command exited 0."""
    if not code:
        return None
    line = _last_line(err)
    if code == SSH_EXIT_ERROR:
        if "Permission denied" in err or "Too many authentication failures" in err:
            return (f"permission denied by {url}: ssh could not log in ({line}); "
                    "check the user, your key (ssh-agent, ~/.ssh/config) and the host's authorized_keys")
        if "Host key verification failed" in err:
            return f"cannot reach {url}: the host key is not known or changed ({line}); check ~/.ssh/known_hosts"
        return f"cannot reach {url}: {line or f'ssh exited with status {code}'}"
    if code in (SHELL_NOT_FOUND, SHELL_NOT_EXECUTABLE):
        return (f"agentctl not found on {url} ({line or f'exit status {code}'}); install cgroup-agent there "
                "or name its agentctl with AGENT_REMOTE_AGENTCTL")
    if "invalid choice: 'system'" in line or "invalid choice: 'dial-stdio'" in line:
        return (f"the agentctl on {url} has no 'system dial-stdio' (an older cgroup-agent); "
                "upgrade it there, or name a newer one with AGENT_REMOTE_AGENTCTL")
    if line.startswith("agentctl: "):
        line = line[len("agentctl: "):]
    return f"on {url}: {line or f'agentctl system dial-stdio exited with status {code}'}"
