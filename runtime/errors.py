"""Exceptions raised by the runtime layer.

Every message is one line that names what went wrong and, for errors a user
can cause, what is accepted instead.
"""
from __future__ import annotations


class CgroupError(Exception):
    """A cgroupfs operation failed (I/O error, no cgroup2 mount, ...)."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


class CgroupGone(CgroupError):
    """The cgroup directory vanished (removed by someone else)."""


class CgroupBusy(CgroupError):
    """rmdir refused: the cgroup still has processes or child cgroups."""


class ControllerMissing(CgroupError):
    """A limit needs a controller that is not enabled for the cgroup.

    ``reason`` is phrased to follow "<controller> controller is ...", e.g.
    "bound to cgroup v1 (hybrid host: /sys/fs/cgroup/memory); cgroup2 at
    /sys/fs/cgroup/unified has no memory controller".
    """

    def __init__(self, controller: str, reason: str, missing: dict | None = None):
        self.controller = controller
        self.reason = reason
        # every missing controller -> its reason (the message names them all, in order)
        self.missing = dict(missing) if missing else {controller: reason}
        super().__init__("; ".join(f"{c} controller is {r}" for c, r in self.missing.items()))


class FreezeTimeout(CgroupError):
    """cgroup.events did not confirm a freeze/thaw in time."""


class KillTimeout(FreezeTimeout):
    """A cgroup was still populated when kill() gave up (a FreezeTimeout too)."""


_NO_VALUE = object()


class LimitError(ValueError):
    """A limit value a user typed is not acceptable.

    ``LimitError(field, value, accepted)`` renders as
    ``memory: "12Q" is not a size; use bytes or ... (e.g. 512M), or "max"``.
    The two-argument form ``LimitError(field, accepted)`` is accepted too
    (as written in docs/architecture.md); then the message names no value.
    ``accepted`` is the rest of the sentence after the value, e.g.
    'is not a size; use bytes or a number with K, M, G or T (e.g. 512M), or "max"'.
    """

    def __init__(self, field: str, value=_NO_VALUE, accepted: str | None = None):
        if accepted is None:
            accepted = "" if value is _NO_VALUE else str(value)
            value = _NO_VALUE
        self.field = field
        self.value = None if value is _NO_VALUE else value
        self.accepted = accepted
        if value is _NO_VALUE:
            msg = f"{field}: {accepted}"
        else:
            shown = '"' + str(value).replace('"', '\\"') + '"'
            msg = f"{field}: {shown} {accepted}"
        super().__init__(" ".join(msg.split()))  # always one line
