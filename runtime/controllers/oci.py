"""OCI runtime-spec ``linux.resources`` -> Limits, converted as runc and
crun do on cgroup v2 (cpu.shares -> cpu.weight, blockIO.weight ->
io.weight, memory.swap as memory+swap -> memory.swap.max, throttle
devices -> io.max)."""
from __future__ import annotations

import math

from runtime.controllers.cpu import CPU_PERIOD_MAX_US, CPU_PERIOD_MIN_US, CPU_QUOTA_MIN_US, DEFAULT_CPU_PERIOD_US
from runtime.controllers.cpuset import parse_cpuset_list
from runtime.controllers.io import _MAJOR_MAX, _MINOR_MAX, IoMax
from runtime.controllers.value import Limits
from runtime.controllers.values import _HUGE_BITS, MAX, SIZE_LIMIT, LimitError, _kind, _shown

def cpu_shares_to_weight(shares: int) -> int | None:
    """OCI cpu.shares -> cgroup v2 cpu.weight, as runc >= 1.3.2 and crun >= 1.23 do.

    A quadratic in log2(shares) fitted through (2 -> 1), (1024 -> 100) and
    (262144 -> 10000): weight = ceil(10 ** ((l*l + 125*l) / 612 - 7/34)).
    0 means unset (None).
    """
    if shares == 0:
        return None
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    l2 = math.log2(shares)
    exponent = (l2 * l2 + 125 * l2) / 612.0 - 7.0 / 34.0
    return int(math.ceil(math.pow(10, exponent)))


def blkio_weight_to_io_weight(weight: int) -> int | None:
    """OCI blockIO.weight (10..1000) -> io.weight (1..10000) as runc does; 0 = unset."""
    if weight == 0:
        return None
    return 1 + (weight - 10) * 9999 // 990


def _oci_int(value, field, lo=None, hi=SIZE_LIMIT):
    if isinstance(value, (str, float)):
        raise LimitError(field, value, "is not an integer")
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitError(field, f"is {_kind(value)}, not an integer")
    if hi is not None and value > hi:
        raise LimitError(field, _shown(value), f"is out of range; use an integer <= {hi}")
    if value.bit_length() > _HUGE_BITS:
        raise LimitError(field, _shown(value), "is out of range")
    if lo is not None and value < lo:
        raise LimitError(field, value, f"is out of range; use an integer >= {lo}")
    return value


def _oci_object(parent: dict, key: str, where: str) -> dict:
    """parent[key] as an object; absent or null -> {}; LimitError otherwise."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LimitError(f"{where}.{key}", f"is {_kind(value)}, not an object")
    return value


def _oci_list(parent: dict, key: str, where: str) -> list:
    """parent[key] as an array; absent or null -> []; LimitError otherwise."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise LimitError(f"{where}.{key}", f"is {_kind(value)}, not an array")
    return value


def _oci_text(value, field: str) -> str:
    if not isinstance(value, str):
        raise LimitError(field, f'is {_kind(value)}, not a string; use a CPU/node list like "0-1,3"')
    return value


def from_oci(resources: dict | None) -> Limits:
    """OCI runtime-spec ``linux.resources`` -> Limits, converted like runc/crun."""
    r = resources or {}
    if not isinstance(r, dict):
        raise LimitError("linux.resources", f"is {_kind(r)}, not an object")
    vals: dict = {}

    cpu = _oci_object(r, "cpu", "linux.resources")
    shares = cpu.get("shares")
    if shares is not None:
        _oci_int(shares, "linux.resources.cpu.shares", 0)
        weight = cpu_shares_to_weight(shares)
        if weight is not None:
            vals["cpu_weight"] = weight
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota is not None:
        _oci_int(quota, "linux.resources.cpu.quota")
    if period is not None:
        _oci_int(period, "linux.resources.cpu.period", 0)
    if quota or period:
        p = period or DEFAULT_CPU_PERIOD_US
        if not CPU_PERIOD_MIN_US <= p <= CPU_PERIOD_MAX_US:
            raise LimitError("linux.resources.cpu.period", p,
                             "is out of range; use 1000 to 1000000 microseconds")
        if quota is not None and quota > 0:
            if quota < CPU_QUOTA_MIN_US:
                raise LimitError("linux.resources.cpu.quota", quota,
                                 "is too small; the kernel's minimum is 1000 microseconds")
            vals["cpu_quota_us"] = quota
        else:
            vals["cpu_quota_us"] = MAX
        vals["cpu_period_us"] = p
    for key, name in (("cpus", "cpuset_cpus"), ("mems", "cpuset_mems")):
        if cpu.get(key) is not None:
            text = _oci_text(cpu[key], f"linux.resources.cpu.{key}")
            if text:
                vals[name] = parse_cpuset_list(text, f"linux.resources.cpu.{key}")

    mem = _oci_object(r, "memory", "linux.resources")
    limit = mem.get("limit")
    swap = mem.get("swap")
    reservation = mem.get("reservation")
    if limit is not None:
        _oci_int(limit, "linux.resources.memory.limit", -1)
        if limit != 0:
            vals["memory_max"] = MAX if limit == -1 else limit
    if reservation is not None:
        _oci_int(reservation, "linux.resources.memory.reservation", -1)
        if reservation != 0:
            vals["memory_low"] = MAX if reservation == -1 else reservation
    if swap is not None:
        _oci_int(swap, "linux.resources.memory.swap", -1)
    swap_v2 = _oci_swap(swap or 0, limit or 0)
    if swap_v2 is not None:
        vals["memory_swap_max"] = swap_v2

    blkio = _oci_object(r, "blockIO", "linux.resources")
    bw = blkio.get("weight")
    if bw is not None:
        _oci_int(bw, "linux.resources.blockIO.weight", 0)
        if bw and not 10 <= bw <= 1000:
            raise LimitError("linux.resources.blockIO.weight", bw,
                             "is out of range; use 10 to 1000 (or 0 for unset)")
        w = blkio_weight_to_io_weight(bw)
        if w is not None:
            vals["io_weight"] = w
    devs: dict[tuple[int, int], dict] = {}
    for key, rate in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                      ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for i, dev in enumerate(_oci_list(blkio, key, "linux.resources.blockIO")):
            where = f"linux.resources.blockIO.{key}[{i}]"
            if not isinstance(dev, dict) or "major" not in dev or "minor" not in dev:
                raise LimitError(where, "is not a {major, minor, rate} object")
            major, minor, value = dev["major"], dev["minor"], dev.get("rate")
            if value is None:
                value = 0
            _oci_int(major, where + ".major", 0, _MAJOR_MAX)
            _oci_int(minor, where + ".minor", 0, _MINOR_MAX)
            _oci_int(value, where + ".rate", 0)
            devs.setdefault((major, minor), {})[rate] = value or None  # 0 = no limit
    if devs:
        vals["io_max"] = tuple(IoMax(maj, mnr, **rates) for (maj, mnr), rates in devs.items())

    pids = _oci_object(r, "pids", "linux.resources")
    if pids.get("limit") is not None:
        n = _oci_int(pids["limit"], "linux.resources.pids.limit")
        vals["pids_max"] = MAX if n <= 0 else n
    return Limits(**vals)


def _oci_swap(swap: int, limit: int) -> int | str | None:
    """OCI memory.swap is memory+swap; cgroup v2 memory.swap.max is swap alone."""
    if limit == -1 and swap == 0:
        return MAX  # unlimited memory and no swap given: both unlimited
    if swap == 0:
        return None  # unset
    if swap == -1:
        return MAX
    if limit in (0, -1):
        raise LimitError("linux.resources.memory.swap", swap,
                         "needs a memory limit; set linux.resources.memory.limit too")
    if swap < limit:
        raise LimitError("linux.resources.memory.swap", swap,
                         f"is below the memory limit ({limit}); OCI swap is memory+swap, "
                         f"so use a value >= the limit")
    return swap - limit
