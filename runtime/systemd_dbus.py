"""systemd's manager over D-Bus (jeepney, pure Python, no libsystemd): is
systemd the init, what cgroup does a unit own, and start a delegated
transient scope around a process (StartTransientUnit with Delegate=yes,
the call runc's systemd cgroup driver makes).

Only the system bus is used (/run/dbus/system_bus_socket, or
$DBUS_SYSTEM_BUS_ADDRESS). Every failure is a SystemdError with one line
naming the unit and what systemd answered.
"""
from __future__ import annotations

import os
import time

from jeepney import DBusAddress, DBusErrorResponse, Properties, new_method_call
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import unwrap_msg

MANAGER = DBusAddress("/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1",
                      interface="org.freedesktop.systemd1.Manager")
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
CALL_TIMEOUT = 30.0
TASKS_INFINITY = 2 ** 64 - 1


class SystemdError(Exception):
    """A call to systemd failed or systemd is not reachable."""


def booted() -> bool:
    """sd_booted(): systemd is PID 1 (it creates /run/systemd/system)."""
    return os.path.isdir("/run/systemd/system")


def under_service() -> bool:
    """This process was started by systemd as (part of) a unit."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET"))


class Manager:
    """One connection to the system bus, talking to systemd's manager."""

    def __init__(self):
        try:
            self.conn = open_dbus_connection(bus="SYSTEM")
        except (OSError, ValueError, KeyError) as e:
            raise SystemdError(f"cannot connect to the D-Bus system bus: {e}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, msg, what: str):
        try:
            return unwrap_msg(self.conn.send_and_get_reply(msg, timeout=CALL_TIMEOUT))
        except DBusErrorResponse as e:
            raise SystemdError(f"{what}: {e.name}: {' '.join(map(str, e.data))}") from None
        except (OSError, TimeoutError) as e:
            raise SystemdError(f"{what}: no answer from systemd: {e}") from None

    def unit_path(self, name: str) -> str | None:
        """Object path of a loaded unit; None when systemd has no such unit."""
        try:
            return self._call(new_method_call(MANAGER, "GetUnit", "s", (name,)), f"GetUnit {name}")[0]
        except SystemdError as e:
            if NO_SUCH_UNIT in str(e):
                return None
            raise

    def unit_property(self, path: str, interface: str, prop: str):
        obj = Properties(DBusAddress(path, bus_name=MANAGER.bus_name, interface=interface))
        _sig, value = self._call(obj.get(prop), f"{prop} of {path}")[0]
        return value

    def active_cgroup(self, name: str) -> str | None:
        """The cgroup (path below the cgroup2 mount) of an active unit, or None
        when the unit is not loaded or not active."""
        path = self.unit_path(name)
        if path is None:
            return None
        if self.unit_property(path, UNIT_INTERFACE, "ActiveState") not in ("active", "reloading"):
            return None
        kind = name.rsplit(".", 1)[-1].capitalize()      # Scope, Service, Slice carry ControlGroup
        return self.unit_property(path, f"org.freedesktop.systemd1.{kind}", "ControlGroup") or None

    def start_delegated_scope(self, name: str, pid: int, description: str,
                              slice_: str = "system.slice") -> str:
        """Start the transient scope `name` around `pid`, delegated (the
        caller owns the cgroup subtree; systemd keeps out of it) and without a
        task limit; -> its cgroup path below the cgroup2 mount, once systemd
        has moved `pid` there."""
        props = [("Description", ("s", description)),
                 ("Slice", ("s", slice_)),
                 ("Delegate", ("b", True)),
                 ("TasksMax", ("t", TASKS_INFINITY)),
                 ("PIDs", ("au", [pid]))]
        self._call(new_method_call(MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                                   (name, "fail", props, [])), f"StartTransientUnit {name}")
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:   # the start job runs asynchronously: wait until systemd reports the scope active
            cgroup = self.active_cgroup(name)
            if cgroup:
                return cgroup
            if time.monotonic() > deadline:
                raise SystemdError(f"{name}: not active {CALL_TIMEOUT:.0f} s after StartTransientUnit")
            time.sleep(0.1)
