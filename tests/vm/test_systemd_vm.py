"""tests/host/test_systemd_unit.py in the VM: the same systemd 252 booted by
systemd-nspawn, here on a full cgroup v2 hierarchy with controllers, where
the agent enables domain controllers below its root (the case that made
`systemctl restart` fail with 219/CGROUP on systemd <= 253 when the
containers were inside the service's cgroup)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "host"))

from test_systemd_unit import box, pytestmark, test_restart_and_reload_under_systemd_keep_every_container  # noqa: E402,F401
