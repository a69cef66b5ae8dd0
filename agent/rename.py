"""Renaming a container (agentctl rename OLD NEW, POST /v1/containers/OLD/rename).

The id, the cgroup, the logs and the billing history stay; the name changes
in the supervisor's index, the stored row and spec, and an event records it.
Works on the supervisor's container model under its lock.
"""
from __future__ import annotations

import dataclasses

from agent.errors import Conflict


def rename(sup, old: str, new: str):
    """The container's info after the rename; NotFound / Conflict (taken) otherwise."""
    from agent.spec import check_name

    check_name(new)
    with sup._lock:
        e = sup._find(old)
        if new == e.row.name:
            return sup._info(e)
        if new in sup._names or new in sup._entries:
            raise Conflict(f"name: {new!r} is already taken by another container")
        prior = e.row.name
        spec = dataclasses.replace(e.spec, name=new)
        with sup.store.transaction():
            sup.store.update(e.row.id, name=new, spec=spec.to_dict())
            sup.store.add_event(e.row.id, new, "renamed", old_name=prior)
        e.row.name = new
        e.spec = spec
        del sup._names[prior]
        sup._names[new] = e.row.id
        sup._changed(e)
        return sup._info(e)
