"""The scope's name follows the service's; no scope when the operator chose
the cgroup root or when systemd did not start agentd (the layout of a host
without systemd is unchanged). The scope itself is tested under a real
systemd: tests/host/test_systemd_unit.py."""
from agent.daemon import systemd_scope
from runtime import systemd_dbus


def test_the_scope_is_named_after_the_service():
    assert systemd_scope.scope_name("/system.slice/cgroup-agent.service") == "cgroup-agent-containers.scope"
    assert systemd_scope.scope_name("/system.slice/agent@blue.service") == "agent-blue-containers.scope"
    assert systemd_scope.scope_name("/") == "cgroup-agent-containers.scope"


def test_a_configured_root_never_asks_systemd(monkeypatch):
    monkeypatch.setenv("INVOCATION_ID", "0" * 32)
    assert systemd_scope.payload_root("/sys/fs/cgroup/mine") is None


def test_not_started_by_systemd_keeps_todays_layout(monkeypatch):
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd_dbus.under_service()
    assert systemd_scope.payload_root("") is None
