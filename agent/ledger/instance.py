"""One container instance's committed (or about to be committed) state: the
raw counters at the last accounted reading and the open period's
accumulators (columns: agent.ledger.schema.STATE_COLS)."""
from __future__ import annotations

import operator

from agent.ledger.schema import ACC_ZERO, STATE_COLS

IDLE, RUNNING, FROZEN = 0, 1, 2


class Instance:
    """``io`` (per-device counters) and ``labels_src`` are in-memory helpers:
    ``c_io`` is their persisted form."""

    __slots__ = STATE_COLS + ("io", "labels_src")

    def __init__(self, **values):
        for c in STATE_COLS:
            setattr(self, c, values.get(c))
        self.io = io_decode(self.c_io)
        self.labels_src = None

    @classmethod
    def new(cls, container_id: str, inode: int, name: str, labels: str) -> "Instance":
        return cls(container_id=container_id, cgroup_inode=inode, name=name, labels=labels,
                   open_start=None, next_min=0, last_state=IDLE, c_io="", finished=0, **ACC_ZERO)

    def row(self) -> tuple:
        return _STATE_ROW(self)

    def reset_accumulators(self) -> None:
        for k, v in ACC_ZERO.items():
            setattr(self, k, v)

    @property
    def key(self) -> tuple:
        return (self.container_id, self.cgroup_inode)


_STATE_ROW = operator.attrgetter(*STATE_COLS)


def io_decode(text) -> dict:
    """"8:0=rbytes,wbytes,rios,wios;..." -> {"8:0": [..4 ints or None..]}."""
    out = {}
    for part in (text or "").split(";"):
        if part:
            dev, _, vals = part.partition("=")
            out[dev] = [int(v) if v else None for v in vals.split(",")]
    return out


def io_encode(io: dict) -> str:
    return ";".join(dev + "=" + ",".join("" if v is None else str(v) for v in vals)
                    for dev, vals in io.items())
