"""Which host ids each container's user namespace gets.

`agent_pool(config)`: the agent's pool (runtime.userns.agent_pool: the
`cgroup-agent` user's /etc/subuid and /etc/subgid entries, else
`[security] userns_range`), announced once in the log (userns.pool).

`resolve(spec, pool, live)`: at create, a spec asking for "auto" gets the
first block of 65536 host uids and gids that no container in `live` holds;
an explicit mapping (API or OCI bundle) is refused when its host ids
overlap another container's. The result is stored with the container's
spec, so the allocation survives an agentd restart and is freed when the
container is removed (its row goes).

`HostClaims`: the blocks are host-wide, not per agent. Every agentd on the
host publishes the mappings its containers hold in CLAIMS_DIR (one file per
state dir, rewritten at each allocation and at start), and an allocation,
made under a host-wide lock, treats every other agentd's published blocks
as taken: two agentds on one pool (the default range) never give two
containers the same host ids. A file whose state dir is gone is ignored.

`view(userns, idmap)`: what inspect and the API show.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import replace

import structlog

from agent.errors import Conflict, UserError
from agent.network.names import tag
from runtime import userns

log = structlog.get_logger("agentd.userns")

CLAIMS_DIR = "/run/cgroup-agent-userns"  # host-wide, 0700: what each agentd's containers hold


class HostClaims:
    """The mappings this agentd's containers hold, published for the other
    agentds of the host, and theirs read back."""

    def __init__(self, state_dir: str, claims_dir: str = CLAIMS_DIR):
        self.state_dir = os.path.realpath(state_dir)
        self.dir = claims_dir
        self.path = os.path.join(claims_dir, tag(self.state_dir) + ".json")   # the state dir's tag, as networks use

    @contextlib.contextmanager
    def locked(self):
        """The host-wide lock; where CLAIMS_DIR cannot be made (a read-only
        /run), a warning, and the allocation goes on from what can be read."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            log.warning("userns.claims_unlocked", path=self.dir, error=str(e))
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def others(self) -> dict:
        """{"NAME of the agentd on STATE_DIR": mapping} of the other agentds'
        containers that may still run or start: while that agentd runs (its
        pid, same start time) or the container's cgroup exists (it does from
        create to remove, also while its agentd is down). The file of a
        stopped agentd that holds nothing is removed (called under the lock)."""
        held = {}
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return held
        for fname in names:
            path = os.path.join(self.dir, fname)
            if not fname.endswith(".json") or path == self.path:
                continue
            try:
                with open(path) as f:
                    doc = json.load(f)
                if doc["state_dir"] == self.state_dir:
                    continue
                alive = _started(doc["pid"]) == doc["started"]
                kept = 0
                for name, c in doc["containers"].items():
                    if isinstance(c["userns"], dict) and (alive or (c["cgroup"] and os.path.isdir(c["cgroup"]))):
                        held[f"{name} of the agentd on {doc['state_dir']}"] = c["userns"]
                        kept += 1
                if not alive and not kept:
                    os.unlink(path)       # that agentd is gone and holds nothing: its next start writes anew
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                log.warning("userns.claims_unreadable", path=path, error=str(e))
        return held

    def publish(self, containers: dict) -> None:
        """Replace this agentd's file with `containers` ({name: (mapping,
        cgroup path or None)}); a failure is logged (the allocation stands)."""
        doc = {"state_dir": self.state_dir, "pid": os.getpid(), "started": _started(os.getpid()),
               "containers": {n: {"userns": m, "cgroup": cg} for n, (m, cg) in containers.items()
                              if isinstance(m, dict)}}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("userns.claims_unwritable", path=self.path, error=str(e))
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _started(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None when gone:
    with the pid, it names one process even after pids wrap."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def agent_pool(config) -> userns.Pool:
    configured = getattr(config.security, "userns_range", "") or userns.DEFAULT_RANGE
    pool = userns.agent_pool(configured)
    log.info("userns.pool", source=pool.source, ranges=pool.describe(), containers=pool.blocks)
    return pool


def resolve(spec, pool: userns.Pool, live: dict, claims: HostClaims | None = None,
            cgroups: dict | None = None):
    """`spec` with its userns made concrete; `live`: {name: userns} of every
    container the agent keeps (running or not: each keeps its ids until removed);
    `claims`: the host-wide record (the other agentds' blocks count as taken,
    and the result is published, with `cgroups` {name: path}, before the lock
    is let go)."""
    if claims is None or spec.userns == "host":
        return _resolve(spec, pool, live)
    with claims.locked():
        spec = _resolve(spec, pool, live, claims.others())
        cgroups = cgroups or {}
        claims.publish({**{n: (m, cgroups.get(n)) for n, m in live.items()}, spec.name: (spec.userns, None)})
    return spec


def _resolve(spec, pool: userns.Pool, live: dict, others: dict | None = None):
    busy = {name: m for name, m in live.items() if isinstance(m, dict)}
    for name, m in (others or {}).items():
        if isinstance(m, dict):
            busy[name] = m
    if spec.userns == "auto":
        try:
            mapping = pool.allocate(busy.values())
        except userns.UsernsError as e:
            raise Conflict(str(e)) from None
        log.info("userns.allocated", name=spec.name, uid=mapping["uid"][0][1], gid=mapping["gid"][0][1],
                 count=userns.CONTAINER_IDS)
        return replace(spec, userns=mapping)
    if isinstance(spec.userns, dict):
        for name, other in busy.items():
            for side in ("uid", "gid"):
                for _i, h, n in spec.userns[side]:
                    for _oi, oh, on in other[side]:
                        if h < oh + on and oh < h + n:
                            raise Conflict(f"userns.{side}: host {side}s {h}-{h + n - 1} overlap those of "
                                           f"container {name!r} ({oh}-{oh + on - 1})")
        return spec
    if spec.userns != "host":
        raise UserError(f"userns: {spec.userns!r} is not auto, host or a mapping")
    return spec


def view(mapping, idmap: dict | None):
    if not isinstance(mapping, dict):
        return "host"
    return {"uid": mapping["uid"], "gid": mapping["gid"], "idmap": idmap}
