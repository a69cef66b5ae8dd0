"""--host ssh://...: what agentctl accepts and the ssh command line it builds (no ssh runs here;
tests/host/test_remote_host.py runs the real ssh and sshd)."""
from __future__ import annotations

import shlex

import pytest

from agent.cli import ssh_transport as st
from agent.cli.client import Client, ConnectError


@pytest.mark.parametrize("url,parsed", [
    ("ssh://db1", (None, "db1", None)),
    ("ssh://root@127.0.0.1:2222", ("root", "127.0.0.1", 2222)),
    ("ssh://ops@[::1]:22/", ("ops", "::1", 22)),
])
def test_accepted_hosts(url, parsed):
    assert st.parse_host(url) == parsed


@pytest.mark.parametrize("url", ["tcp://h:2375", "unix:///run/x.sock", "ssh://", "ssh://-oProxyCommand=sh",
                                 "ssh://-l@h", "ssh://u:pw@h", "ssh://h/path", "ssh://h:99999", "ssh://h?x=1"])
def test_refused_hosts_are_one_line_naming_the_form(url):
    with pytest.raises(st.HostError) as e:
        st.parse_host(url)
    assert "ssh://[USER@]HOST[:PORT]" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConnectError):
        Client(host=url)


def test_argv_ends_options_before_the_host_and_quotes_the_remote_command(monkeypatch):
    monkeypatch.setenv("AGENT_SSH_COMMAND", "ssh -F '/tmp/my config'")
    monkeypatch.setenv("AGENT_REMOTE_AGENTCTL", "env PATH=/opt/a b/bin agentctl")
    argv = st.ssh_argv("ssh://root@127.0.0.1:2222", "/run/x; rm -rf /.sock")
    assert argv[:3] == ["ssh", "-F", "/tmp/my config"]
    assert "BatchMode=yes" in argv and "-T" in argv
    i = argv.index("--")
    assert argv[i + 1] == "127.0.0.1" and argv[i - 4:i] == ["-p", "2222", "-l", "root"]
    # the remote shell splits the command back into exactly these words
    assert shlex.split(argv[i + 2]) == ["env", "PATH=/opt/a", "b/bin", "agentctl", "--socket", "/run/x; rm -rf /.sock",
                                        "system", "dial-stdio"]


def test_without_socket_the_remote_agentctl_keeps_its_own_default(monkeypatch):
    monkeypatch.delenv("AGENT_REMOTE_AGENTCTL", raising=False)
    monkeypatch.setenv("AGENT_SOCKET", "/local/only.sock")   # this host's socket is not the remote's
    assert st.remote_command(Client(host="ssh://h").path) == "agentctl system dial-stdio"


def test_agent_host_is_read_and_explicit_host_wins(monkeypatch):
    monkeypatch.setenv("AGENT_HOST", "ssh://from-env")
    assert Client().host == "ssh://from-env"
    assert Client(host="ssh://explicit").host == "ssh://explicit"
    monkeypatch.setenv("AGENT_HOST", "")
    assert Client().host is None and Client().where.startswith("agentd at ")


@pytest.mark.parametrize("code,err,expect", [
    (255, "ssh: connect to host 10.9.9.9 port 22: Connection timed out\n", "cannot reach ssh://h: ssh: connect"),
    (255, "Warning: Permanently added 'h' (ED25519) to the list of known hosts.\nroot@h: Permission denied (publickey).\n",
     "permission denied by ssh://h: ssh could not log in (root@h: Permission denied (publickey).)"),
    (255, "Host key verification failed.\n", "cannot reach ssh://h: the host key is not known or changed"),
    (127, "bash: line 1: agentctl: command not found\n", "agentctl not found on ssh://h"),
    (1, "agentctl: cannot connect to agentd at /run/cgroup-agent/agent.sock: Permission denied\n",
     "on ssh://h: cannot connect to agentd at /run/cgroup-agent/agent.sock: Permission denied"),
    (0, "", None),
])
def test_ssh_failures_become_one_line(code, err, expect):
    msg = st.explain("ssh://h", code, err)
    if expect is None:
        assert msg is None
    else:
        assert msg.startswith(expect) and "\n" not in msg
