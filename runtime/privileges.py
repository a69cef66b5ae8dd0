"""The privilege drop before execve, one sequence for a container's PID 1
(runtime/container_init.py) and a process started inside it
(runtime/execin.py): no_new_privs, the seccomp filter, rlimits, then the
bounding set, setgroups/setgid/setuid and the capabilities (Docker's
default set, the spec's list, or the OCI capability sets).

The order matters: the filter is installed and the rlimits set while
CAP_SYS_ADMIN and CAP_SYS_RESOURCE are still held; the bounding set is cut
while CAP_SETPCAP is held, the user switched while CAP_SETUID/SETGID are.
"""

from __future__ import annotations

import os

from . import caps as capsmod
from . import namespaces as ns
from . import rlimits, seccomp
from .intermediate import step
from .spawnspec import SpawnSpec


def drop(spec: SpawnSpec, uid: int, gid: int) -> None:
    """spec's no_new_privs, seccomp, rlimits and capabilities; the process
    becomes `uid`/`gid` (the spec's own, or exec's -u) with no supplementary
    groups."""
    if spec.no_new_privs:
        step("set no_new_privs", ns.set_no_new_privs)
    if spec.seccomp:
        # installed while CAP_SYS_ADMIN is still held, so it works with
        # no_new_privs off too; it refuses nothing the steps below need
        step("install seccomp filter", seccomp.install)
    for kind, soft, hard in spec.rlimits:      # before CAP_SYS_RESOURCE goes
        step(f"set {kind} {soft}/{hard}", rlimits.set_limit, kind, soft, hard)
    if spec.capability_sets is not None:
        _set_capabilities(spec.capability_sets, uid, gid)
        return
    keep = spec.cap_mask
    # bounding set first (needs CAP_SETPCAP, still held); then the user switch
    # (CAP_SETUID/SETGID still held); then permitted/effective, which a
    # switch to a non-zero uid has already emptied
    try:
        ns.prctl(ns.PR_CAP_AMBIENT, ns.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    _drop_bounding(keep)
    step("setgroups", os.setgroups, [])
    step(f"setgid {gid}", os.setgid, gid)
    step(f"setuid {uid}", os.setuid, uid)
    _eff, permitted, _inh = step("capget", ns.capget)
    keep &= permitted
    step("capset", ns.capset, keep, keep, 0)


def _drop_bounding(keep: int) -> None:
    for cap in range(capsmod.last_cap() + 1):
        if not keep >> cap & 1 and ns.prctl(ns.PR_CAPBSET_READ, cap) == 1:
            step(f"drop capability {capsmod.CAPABILITIES[cap] if cap < len(capsmod.CAPABILITIES) else cap}",
                 ns.prctl, ns.PR_CAPBSET_DROP, cap)


def _set_capabilities(capability_sets: dict, uid: int, gid: int) -> None:
    """OCI process.capabilities, as runc applies them: bounding set, then the
    user switch keeping the permitted set (PR_SET_KEEPCAPS), then effective,
    permitted and inheritable, then the ambient ones raised. execve then
    does what the kernel does with them (for uid 0: bounding | inheritable)."""
    sets = {k: capsmod.mask(v) for k, v in capability_sets.items()}
    try:
        ns.prctl(ns.PR_CAP_AMBIENT, ns.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    _drop_bounding(sets["bounding"])
    step("keep capabilities across setuid", ns.prctl, ns.PR_SET_KEEPCAPS, 1)
    step("setgroups", os.setgroups, [])
    step(f"setgid {gid}", os.setgid, gid)
    step(f"setuid {uid}", os.setuid, uid)
    step("capset", ns.capset, sets["effective"], sets["permitted"], sets["inheritable"])
    for cap in capsmod.names_of(sets["ambient"]):
        step(f"raise ambient capability {cap}", ns.prctl, ns.PR_CAP_AMBIENT, ns.PR_CAP_AMBIENT_RAISE,
             capsmod.CAP_NUMBER[cap])
    step("clear keep-capabilities", ns.prctl, ns.PR_SET_KEEPCAPS, 0)
