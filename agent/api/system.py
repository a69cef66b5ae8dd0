"""The system endpoints of the control API (a resource module, registered in agent/api/router.py).

    GET /v1/health        agentd answers: version, pid, the caller's access level and uid
    GET /v1/system/info   the agent and its host: version, host name, kernel, cgroup mode,
                          controllers enabled and missing (with reasons), state dir, containers
                          running/total, images, userns pool, device filter
    GET /v1/system/df     bytes the agent holds on disk: images, containers' upper dirs,
                          logs, state and ledger databases; the images a prune would remove

Read-only (GET): anyone with read access may ask. `agentctl system info|df`
print them; `system prune` uses the container and image endpoints.
"""
from __future__ import annotations

import os

from agent.api.http import VERSION
from runtime import cgroupfs

ROUTES = [
    (("v1", "health"), {"GET": "health"}),
    (("v1", "system", "info"), {"GET": "system_info"}),
    (("v1", "system", "df"), {"GET": "system_df"}),
]

QUERY_PARAMS = {"health": {}, "system_info": {}, "system_df": {}}

from agent.model import LIVE  # noqa: E402 (the one rule of what counts as live)


def disk_usage(path: str, seen: set | None = None) -> int:
    """Bytes allocated on disk below ``path`` (st_blocks), each inode counted once;
    0 when it does not exist. Symbolic links are not followed."""
    seen = set() if seen is None else seen
    total = 0
    try:
        st = os.lstat(path)
    except OSError:
        return 0
    stack = [(path, st)]
    while stack:
        p, st = stack.pop()
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        total += st.st_blocks * 512
        if not os.path.isdir(p) or os.path.islink(p):
            continue
        try:
            with os.scandir(p) as it:
                for entry in it:
                    try:
                        stack.append((entry.path, entry.stat(follow_symlinks=False)))
                    except OSError:
                        pass  # gone meanwhile
        except OSError:
            pass
    return total


def cgroup_mode(mounts) -> str:
    """unified (cgroup2 at /sys/fs/cgroup), hybrid (cgroup2 beside v1 hierarchies) or legacy."""
    types = {(m[1], m[2]) for m in mounts}
    if ("/sys/fs/cgroup", "cgroup2") in types:
        return "unified"
    if any(t == "cgroup2" for _, t in types):
        return "hybrid"
    return "legacy"


class SystemHandlers:
    def h_health(self, query, body):
        self._send_json(200, {"status": "ok", "version": VERSION, "pid": os.getpid(),
                              "access": self.access, "uid": self.peer.uid,
                              "usage": self.api.ledger is not None})


    def h_system_info(self, query, body):
        api, sup = self.api, self.sup
        infos = sup.containers(all=True)
        running = [i for i in infos if i.state in LIVE]
        layout = getattr(sup, "layout", None)
        cgroup = {"mode": cgroup_mode(cgroupfs.read_mounts())}
        if layout is not None:
            cgroup.update(root=layout.root.path, containers=layout.containers.path,
                          controllers_enabled=sorted(layout.enabled),
                          controllers_missing=dict(sorted(layout.missing.items())))
        filters: dict[str, int] = {}
        for i in running:
            state = getattr(i, "device_filter", "") or "unknown"
            filters[state] = filters.get(state, 0) + 1
        pool = getattr(sup, "userns_pool", None)
        images = None
        if api.images is not None:
            images = len(api.images.list())
        uname = os.uname()
        self._send_json(200, {
            "version": VERSION, "host": api.config.agent.host, "hostname": uname.nodename,
            "kernel": uname.release, "arch": uname.machine, "pid": os.getpid(),
            "cgroup": cgroup, "state_dir": os.path.abspath(api.config.agent.state_dir),
            "socket": api.config.agent.socket,
            "containers": {"running": len(running), "total": len(infos)},
            "images": images,
            "userns_pool": None if pool is None else {"source": pool.source, "ranges": pool.describe(),
                                                      "containers": pool.blocks},
            "device_filter": {"running_containers": filters},
            "usage": api.ledger is not None,
        })

    def h_system_df(self, query, body):
        state_dir = os.path.abspath(self.api.config.agent.state_dir)
        infos = self.sup.containers(all=True)
        images_dir = os.path.join(state_dir, "images")
        uppers = os.path.join(state_dir, "containers")
        dbs = {}
        try:
            names = sorted(os.listdir(state_dir))
        except OSError:
            names = []
        for name in names:
            if ".db" in name:   # state.db, ledger.db and their -wal/-shm files
                dbs[name] = disk_usage(os.path.join(state_dir, name))
        images = None
        if self.api.images is not None:
            svc = self.api.images
            listed, used = svc.list(), svc.in_use()
            images = {"count": len(listed), "bytes": disk_usage(images_dir),
                      # what POST /v1/images/prune would remove (with the layers only they use)
                      "prunable": [i["id"] for i in listed if not i["names"] and i["id"] not in used]}
        self._send_json(200, {
            "state_dir": state_dir,
            "images": images,
            "containers": {"count": len(infos), "running": sum(1 for i in infos if i.state in LIVE),
                           "upper_bytes": disk_usage(uppers)},
            "logs": {"bytes": disk_usage(os.path.join(state_dir, "logs"))},
            "databases": {"bytes": sum(dbs.values()), "files": dbs},
        })


HANDLERS = SystemHandlers
