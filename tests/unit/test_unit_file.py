"""deploy/cgroup-agent.service: systemd-analyze verify accepts it, and the
settings that live restore, notify and containers depend on are there."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "cgroup-agent.service"
INSTALLED_AGENTD = "/usr/local/bin/agentd"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax: [Section], Key=Value (keys may repeat), # and ; comments,
    backslash line continuation."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit():
    return parse_unit(UNIT.read_text())


def one(unit, section, key):
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= missing"
    assert len(values) == 1, f"[{section}] {key}= set {len(values)} times"
    return values[0]


def verify(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze missing: apt-get install systemd"
    # verify works without a running systemd (PID 1 here is not systemd);
    # --man=no: man pages are not installed everywhere.
    return subprocess.run([exe, "verify", "--man=no", str(path)], cwd=path.parent,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER=""))


def verifiable_copy(tmp_path: Path, extra: str = "") -> Path:
    """The unit with only ExecStart's binary pointed at this machine's agentd
    (verify checks that the binary exists and is executable)."""
    agentd = INSTALLED_AGENTD if os.access(INSTALLED_AGENTD, os.X_OK) else shutil.which("agentd")
    assert agentd, "agentd not on PATH: pip install -e ."
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_AGENTD} " in text
    text = text.replace(f"ExecStart={INSTALLED_AGENTD} ", f"ExecStart={agentd} ")
    text = text.replace("[Service]\n", "[Service]\n" + extra, 1)
    dst = tmp_path / "cgroup-agent.service"
    dst.write_text(text)
    return dst


def test_systemd_analyze_verify_is_silent(tmp_path):
    r = verify(verifiable_copy(tmp_path))
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)


def test_verify_would_catch_a_mistake(tmp_path):
    """The check above is meaningful: a bad key or value makes verify speak."""
    r = verify(verifiable_copy(tmp_path, extra="KillMod=process\nRestart=sometimes\n"))
    out = r.stdout + r.stderr
    assert "KillMod" in out and "sometimes" in out


def test_notify_and_reload(unit):
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Service", "WatchdogSec") == "30s"
    start = one(unit, "Service", "ExecStart").split()
    assert start[0] == INSTALLED_AGENTD
    assert start[1:] == ["--config", "/etc/cgroup-agent/config.toml"]


def test_live_restore_settings(unit):
    assert one(unit, "Service", "Delegate") == "yes"
    # only agentd is signalled: the launcher and containers survive restarts
    assert one(unit, "Service", "KillMode") == "process"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert one(unit, "Service", "RestartSec")
    assert one(unit, "Service", "TimeoutStopSec")
    # a container OOM must not stop the agent; all containers share R's pids.max
    assert one(unit, "Service", "OOMPolicy") == "continue"
    assert one(unit, "Service", "TasksMax") == "infinity"
    assert int(one(unit, "Service", "LimitNOFILE")) >= 65536


def test_directories_match_default_config(unit):
    assert one(unit, "Service", "StateDirectory") == "cgroup-agent"
    assert one(unit, "Service", "RuntimeDirectory") == "cgroup-agent"
    assert one(unit, "Service", "RuntimeDirectoryPreserve") == "yes"
    from agent.config import load_config
    cfg = load_config(None, {})
    assert cfg.agent.state_dir == "/var/lib/cgroup-agent"
    assert os.path.dirname(cfg.agent.socket) == "/run/cgroup-agent"


# Settings that would be inherited by every container or take away what
# launching needs; each must be absent as a directive and explained in a comment.
NOT_USED = [
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "DevicePolicy",
    "ProtectKernelTunables", "ProtectControlGroups", "ProtectKernelModules",
    "NoNewPrivileges", "SystemCallFilter", "SystemCallArchitectures",
    "RestrictNamespaces", "RestrictAddressFamilies", "MemoryDenyWriteExecute",
    "ProtectHostname", "PrivateNetwork", "IPAddressDeny", "User", "DynamicUser",
    "OOMScoreAdjust", "UMask",
]


@pytest.mark.parametrize("key", NOT_USED)
def test_container_breaking_hardening_absent_and_explained(unit, key):
    assert key not in unit["Service"]
    comments = [l for l in UNIT.read_text().splitlines() if l.lstrip().startswith("#")]
    assert any(f"{key}=" in c for c in comments), f"{key}= not explained"


# Docker's default container set plus what the agent and launcher need.
NEEDED_CAPS = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_RESOURCE", "CAP_SYS_PTRACE",
    "CAP_DAC_READ_SEARCH",
    "CAP_BPF",   # the per-container device allow-list (runtime/devfilter.py)
}


def test_capability_bounding_set_keeps_what_containers_need(unit):
    value = one(unit, "Service", "CapabilityBoundingSet")
    assert value.startswith("~"), "deny-list expected"
    dropped = set(value[1:].split())
    assert "CAP_SYS_MODULE" in dropped and "CAP_SYS_RAWIO" in dropped
    assert not dropped & NEEDED_CAPS


def test_every_service_setting_is_commented():
    """Each block of directives in [Service] starts with a comment saying why."""
    lines = UNIT.read_text().splitlines()
    start = lines.index("[Service]")
    end = lines.index("[Install]")
    block: list[str] = []
    for line in lines[start + 1:end] + [""]:
        if line.strip():
            block.append(line)
            continue
        directives = [l for l in block if not l.startswith("#")]
        if directives:
            assert block[0].startswith("#"), f"uncommented: {directives}"
        block = []


SYSUSERS = ROOT / "deploy" / "cgroup-agent.sysusers"


def test_sysusers_snippet_creates_the_socket_groups(tmp_path):
    """systemd-sysusers applies the snippet to a copy of this machine's user database."""
    exe = shutil.which("systemd-sysusers")
    assert exe, "systemd-sysusers missing: apt-get install systemd"
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        if os.path.exists(f"/etc/{name}"):
            shutil.copy(f"/etc/{name}", etc / name)
    before = (etc / "group").read_text()
    r = subprocess.run([exe, f"--root={tmp_path}", str(SYSUSERS)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    groups = {line.split(":")[0]: line for line in (etc / "group").read_text().splitlines()}
    for g in ("cgroup-agent", "cgroup-agent-admin"):
        assert g in groups
        if f"\n{g}:" not in "\n" + before:
            assert g in r.stdout + r.stderr  # it says what it created
    # the names are ones the config accepts for socket_group/read_group/admin_group
    from agent.config import load_config
    cfg = load_config(None, {"socket_group": "cgroup-agent", "read_group": "cgroup-agent",
                             "admin_group": "cgroup-agent-admin"})
    assert cfg.agent.admin_group == "cgroup-agent-admin"
