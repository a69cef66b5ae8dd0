"""What the launcher gets for one start of a container: the spawn spec
(argv, environment with the default PATH, mounts, security, logs), the
overlayfs of an image container, and the BPF device filter attached to its
cgroup. Mixed into ``agent.supervisor.Supervisor``."""
from __future__ import annotations

import os

import structlog

from agent import selfmetrics
from agent.errors import UserError
from agent.supervision.state import Container, State
from runtime import devfilter
from runtime.rules import DEFAULT_PATH

log = structlog.get_logger("agentd.supervisor")  # one logger for every supervision module


class LaunchSpec:
    """What the launcher gets for one start: the spawn spec, the image overlay, the device filter."""

    def _spawn_spec(self, e: Container) -> dict:
        s = e.spec
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": s.hostname}
        env.update(s.env)
        logdir = os.path.join(self.logs_dir, e.row.id)
        os.makedirs(logdir, mode=0o750, exist_ok=True)
        spawn = {
            "argv": list(s.argv), "env": env, "cwd": s.workdir, "uid": s.uid, "gid": s.gid,
            "hostname": s.hostname, "rootfs": s.rootfs,
            "mounts": [{"src": v.src, "dst": v.dst, "ro": v.ro, "noexec": v.noexec} for v in s.volumes],
            "network": s.network, "cgroup": e.cg.path,
            "stdout": os.path.join(logdir, "stdout.log"), "stderr": os.path.join(logdir, "stderr.log"),
            "log_max_bytes": s.log_max_bytes, "seccomp": True, **s.spawn_security(),
            # checked again by the launcher on the descriptors it mounts
            "protected": {"state_dir": os.path.abspath(self.config.agent.state_dir),
                          "socket": os.path.abspath(self.config.agent.socket)},
            "allow_sensitive_binds": self.config.security.allow_sensitive_binds,
            "overlay": self._overlay(e),
            **({"userns": s.userns} if isinstance(s.userns, dict) else {}),
            "devices": [{"src": d.src, "dst": d.dst, "type": d.type, "major": d.major, "minor": d.minor}
                        for d in s.devices] if (s.rootfs or s.image_id) else [],
            **({"readonly_rootfs": True} if s.read_only else {}),
            "tmpfs": [t.to_dict() for t in s.tmpfs],
            **({"stdin": True} if s.stdin else {}),   # run -i (agent/api/exec.py forwards it)
            **({"tty": True} if s.tty else {}),       # run -t (runtime/terminal.py)
            **({"tty_size": list(s.console_size)} if s.tty and s.console_size else {}),
        }
        if self.net is not None:
            self.net.spawn_fields(e.row.id, s, spawn)  # netns, the /etc files
        return spawn

    def _overlay(self, e: Container) -> dict | None:
        """The overlayfs an image container's root is made of (None for the others)."""
        s = e.spec
        if not s.image_id:
            return None
        if self.images is None:
            raise UserError(f"image: container {s.name!r} needs image {s.image_ref} but images are "
                            "not enabled on this agentd (see its log)")
        try:
            lower = self.images.lower_dirs(s.image_id)
        except KeyError:
            raise UserError(f"image: {s.image_ref} ({s.image_id}) is no longer in the image store; "
                            f"pull it again, or remove container {s.name!r}") from None
        top = os.path.join(self.rootfs_dir, e.row.id)
        for d in ("upper", "work", "root"):
            os.makedirs(os.path.join(top, d), mode=0o755, exist_ok=True)
        os.chmod(self.rootfs_dir, 0o700)
        return {"lower": lower, "upper": os.path.join(top, "upper"), "work": os.path.join(top, "work"),
                "target": os.path.join(top, "root")}

    def _filter_devices(self, e: Container) -> None:
        """Attach the device allow-list to the cgroup before anything runs in it
        (kept across restarts with the cgroup); where BPF is refused, one log
        line and a metric, and the container runs as before (nodev mounts)."""
        rules = devfilter.DEFAULT_RULES + tuple(devfilter.Rule(d.type, d.major, d.minor, d.access)
                                                for d in e.spec.devices)
        try:
            prog_id, new = devfilter.install(e.cg.path, rules)
        except devfilter.Unavailable as err:
            e.device_filter = f"off: {err}"
            selfmetrics.inc("device_filter_unavailable_total")
            log.warning("container.device_filter_unavailable", name=e.row.name, id=e.row.id, reason=str(err),
                        note="devices are held by nodev mounts only")
            return
        e.device_filter = "on"
        if new:
            log.info("container.device_filter_attached", name=e.row.name, id=e.row.id, prog_id=prog_id,
                     devices=[str(d) for d in e.spec.devices])

    def _device_filter_status(self, e: Container) -> None:
        """At boot: what the cgroup of a container that already ran has attached."""
        if e.row.state == State.CREATED or not e.cg.exists():
            return
        try:
            e.device_filter = "on" if devfilter.attached(e.cg.path) else "off: no device program on its cgroup"
        except devfilter.Unavailable as err:
            e.device_filter = f"off: {err}"
