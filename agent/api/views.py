"""The control API's JSON views: what a container, its stats and any agent value look like on the wire."""
from __future__ import annotations

import dataclasses
import json


def json_bytes(obj) -> bytes:
    """The compact JSON of an answer, newline-terminated; NaN/Infinity refused."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def plain(value):
    """Make supervisor/ledger values JSON-serialisable."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "to_json") and not isinstance(value, type):
        out = value.to_json()
        if isinstance(out, (str, bytes)):
            out = json.loads(out)
        return plain(out)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [plain(v) for v in value]
        return sorted(items) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)  # Decimal, paths, enums


def container_json(info) -> dict:
    """ContainerInfo -> the JSON object of GET /v1/containers/{name}."""
    doc = plain(info)
    doc["limits"] = plain(info.limits) if info.limits is not None else {}
    return doc


def _sum_io(io) -> dict:
    total = {"rbytes": 0, "wbytes": 0, "rios": 0, "wios": 0}
    for dev in (io or {}).values():
        for k in total:
            total[k] += getattr(dev, k, 0) or 0
    return total


def _limit(limits, field: str):
    return getattr(limits, field, None) if limits is not None else None


def stats_json(info, sample) -> dict:
    """One container's row of /v1/stats from its latest CgroupSample (None: no sample)."""
    limits = info.limits
    quota, period = _limit(limits, "cpu_quota_us"), _limit(limits, "cpu_period_us")
    row = {
        "name": info.name, "id": info.id, "state": info.state, "pid": info.pid,
        "cpu_usage_usec": None, "cpu_user_usec": None, "cpu_system_usec": None,
        "cpu_nr_periods": None, "cpu_nr_throttled": None, "cpu_throttled_usec": None,
        "cpu_limit": (quota / (period or 100000)) if quota else None,
        "memory_current": None, "memory_peak": None,
        "memory_limit": _limit(limits, "memory_max"), "memory_high": _limit(limits, "memory_high"),
        "io_read_bytes": None, "io_write_bytes": None, "io_read_ops": None, "io_write_ops": None,
        "pids_current": None, "pids_limit": _limit(limits, "pids_max"),
        "oom_kills": info.oom_kills,
    }
    if sample is None:
        return row
    cpu = getattr(sample, "cpu", None)
    if cpu is not None:
        row.update(cpu_usage_usec=cpu.usage_usec, cpu_user_usec=cpu.user_usec, cpu_system_usec=cpu.system_usec,
                   cpu_nr_periods=cpu.nr_periods, cpu_nr_throttled=cpu.nr_throttled,
                   cpu_throttled_usec=cpu.throttled_usec)
    row.update(memory_current=getattr(sample, "memory_current", None),
               memory_peak=getattr(sample, "memory_peak", None),
               pids_current=getattr(sample, "pids_current", None))
    io = getattr(sample, "io", None)
    if io is not None:
        t = _sum_io(io)
        row.update(io_read_bytes=t["rbytes"], io_write_bytes=t["wbytes"], io_read_ops=t["rios"], io_write_ops=t["wios"])
    return row
