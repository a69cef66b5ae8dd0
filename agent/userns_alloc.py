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

`view(userns, idmap)`: what inspect and the API show.
"""
from __future__ import annotations

from dataclasses import replace

import structlog

from agent.errors import Conflict, UserError
from runtime import userns

log = structlog.get_logger("agentd.userns")


def agent_pool(config) -> userns.Pool:
    configured = getattr(config.security, "userns_range", "") or userns.DEFAULT_RANGE
    pool = userns.agent_pool(configured)
    log.info("userns.pool", source=pool.source, ranges=pool.describe(), containers=pool.blocks)
    return pool


def resolve(spec, pool: userns.Pool, live: dict):
    """`spec` with its userns made concrete; `live`: {name: userns} of every
    container the agent keeps (running or not: each keeps its ids until removed)."""
    busy = {name: m for name, m in live.items() if isinstance(m, dict)}
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
