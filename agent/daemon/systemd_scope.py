"""Under systemd, the launcher and the containers live in a delegated
transient scope next to the service (system.slice/<service>-containers.scope),
not inside the service's own cgroup.

Why: on systemd <= 253 a restarted service's new main process is put in the
service's cgroup R itself; once the agent had enabled a controller in R's
subtree_control (no-internal-process rule) the restart failed with
219/CGROUP for as long as the launcher and containers were left under R.
With the scope, the service's cgroup only ever holds agentd, so
`systemctl restart` works on every systemd, the containers stay in a unit
systemd knows (`systemd-cgls`, `systemctl status <scope>`), and stopping the
service never touches them.

The scope needs a process at creation (systemd moves it in): a placeholder
forked from agentd, which leaves as soon as the launcher runs in
<scope>/launcher (or after PLACEHOLDER_MAX_S, or at once if agentd dies
before telling it the scope's cgroup). A later agentd finds the scope
active and reuses it (live restore); once the last container and the
launcher are gone systemd removes the empty scope and the next agentd
starts a new one.

Not used (today's layout, agent/daemon.py resolve_cgroup_root): when
agent.cgroup_root is configured, when systemd is not PID 1 or agentd was not
started by it, when the service's own cgroup still holds containers of the
earlier in-service layout (kept until they are gone), or when systemd
cannot be reached over D-Bus (logged).
"""
from __future__ import annotations

import os
import signal
import time

import structlog

from runtime import cgroupfs, systemd_dbus
from runtime.systemd_dbus import SystemdError

log = structlog.get_logger("agentd.systemd")

SCOPE_SUFFIX = "-containers.scope"
PLACEHOLDER_MAX_S = 600
DESCRIPTION = "cgroup-agent containers and launcher (delegated, outside the agent's service)"


def scope_name(own_cgroup: str) -> str:
    """cgroup-agent.service -> cgroup-agent-containers.scope"""
    unit = os.path.basename(own_cgroup.rstrip("/"))
    base = unit[:-len(".service")] if unit.endswith(".service") else "cgroup-agent"
    return base.replace("@", "-") + SCOPE_SUFFIX


def payload_root(configured: str) -> tuple[str, str] | None:
    """-> (absolute cgroupfs path of R, why) when R is the delegated scope;
    None when today's layout applies."""
    if configured or not (systemd_dbus.booted() and systemd_dbus.under_service()):
        return None
    mount = cgroupfs.find_mount()
    own = cgroupfs.own_cgroup()
    own_path = os.path.join(mount, own.lstrip("/")).rstrip("/")
    old = os.path.join(own_path, "containers")
    if os.path.isdir(old) and any(e.is_dir() for e in os.scandir(old)):
        log.info("systemd.scope_not_used", reason=f"{old} still holds containers of the in-service layout")
        return None
    name = scope_name(own)
    try:
        with systemd_dbus.Manager() as manager:
            cgroup = manager.active_cgroup(name)
            if cgroup:
                return os.path.join(mount, cgroup.lstrip("/")), f"systemd scope {name} (already active)"
            cgroup = _start_with_placeholder(manager, name, mount)
            return os.path.join(mount, cgroup.lstrip("/")), f"systemd scope {name} (started)"
    except SystemdError as e:
        log.warning("systemd.scope_unavailable", scope=name, error=str(e),
                    effect="containers stay in the service's own cgroup")
        return None


def _start_with_placeholder(manager, name: str, mount: str) -> str:
    r, w = os.pipe()
    pid_r, pid_w = os.pipe()
    child = os.fork()
    if child == 0:      # intermediate: fork the placeholder, report its pid, exit (init reaps it)
        try:
            os.close(w)
            os.close(pid_r)
            grandchild = os.fork()
            if grandchild == 0:
                os.close(pid_w)
                _placeholder(r, mount)
            os.write(pid_w, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(r)
    os.close(pid_w)
    try:
        os.waitpid(child, 0)
        placeholder = int(os.read(pid_r, 32) or b"0")
        os.close(pid_r)
        if not placeholder:
            raise SystemdError(f"{name}: the placeholder process did not start")
        cgroup = manager.start_delegated_scope(name, placeholder, DESCRIPTION)
        os.write(w, cgroup.encode())
        log.info("systemd.scope_started", scope=name, cgroup=cgroup, placeholder=placeholder)
        return cgroup
    finally:
        os.close(w)


def _placeholder(r: int, mount: str) -> None:
    """Hold the scope until the launcher runs in it. Runs in a forked copy of
    agentd: only os-level calls, never returns."""
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        data = b""
        while chunk := os.read(r, 4096):
            data += chunk
        if data:
            events = os.path.join(mount, data.decode().lstrip("/"), "launcher", "cgroup.events")
            deadline = time.monotonic() + PLACEHOLDER_MAX_S
            while time.monotonic() < deadline:
                try:
                    with open(events) as f:
                        if "populated 1" in f.read():
                            break
                except OSError:
                    pass
                time.sleep(0.2)
    finally:
        os._exit(0)
