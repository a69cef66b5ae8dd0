"""The cpu controller: cpu.max (quota and period) and cpu.weight.

User input ("0.5" cores, "150%", "QUOTA/PERIOD", "max"), rendering to the
files and reading them back, side by side.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, DecimalException

from runtime.controllers.values import (MAX, SIZE_LIMIT, LimitError, _int, _parse_int, _shown, _text,
                                        parse_weight)

NAME = "cpu"
FIELDS = ("cpu_quota_us", "cpu_period_us", "cpu_weight")
FILES = {"cpu.max": "cpu_quota_us", "cpu.weight": "cpu_weight"}

DEFAULT_CPU_PERIOD_US = 100_000
CPU_PERIOD_MIN_US, CPU_PERIOD_MAX_US = 1_000, 1_000_000
CPU_QUOTA_MIN_US = 1_000
CPUS_ACCEPTED = ('is not a CPU amount; use cores (e.g. 0.5), a percentage of one core '
                 '(e.g. 150%), QUOTA/PERIOD in microseconds (e.g. 50000/100000), or "max"')


def format_cpus(quota_us: int, period_us: int) -> str:
    """50000, 100000 -> "0.5"; 1000000, 100000 -> "10" (cores, up to 4 decimals)."""
    q = (Decimal(quota_us) / Decimal(period_us)).quantize(Decimal("0.0001"))
    return format(q.normalize(), "f")


def parse_cpus(value, field: str = "cpus") -> tuple[int | str, int]:
    """ "0.5" / "150%" / "50000/100000" / "max" -> (quota_us | MAX, period_us)."""
    value = _shown(value)
    if isinstance(value, bool):
        raise LimitError(field, value, CPUS_ACCEPTED)
    text = _text(value)
    if text.lower() == MAX:
        return MAX, DEFAULT_CPU_PERIOD_US
    period = DEFAULT_CPU_PERIOD_US
    try:
        if "/" in text:
            q, _, p = text.partition("/")
            q, p = q.strip(), p.strip()
            if not p.isdigit() or not (q.isdigit() or q.lower() == MAX):
                raise LimitError(field, value, CPUS_ACCEPTED)
            period = _int(p, field, value, CPUS_ACCEPTED)
            if not CPU_PERIOD_MIN_US <= period <= CPU_PERIOD_MAX_US:
                raise LimitError(field, value, "has a period out of range; the period must be "
                                 "1000 to 1000000 microseconds (e.g. 50000/100000)")
            if q.lower() == MAX:
                return MAX, period
            quota = int(q)
        else:
            if text.endswith("%"):
                cores = Decimal(text[:-1].strip()) / 100
            else:
                cores = Decimal(text)
            if not cores.is_finite() or cores < 0:
                raise LimitError(field, value, CPUS_ACCEPTED)
            if cores * period > SIZE_LIMIT:  # before int(): "1e999999" would make a million digits
                raise LimitError(field, value, 'is too large; use "max" for no limit')
            quota = int((cores * period).to_integral_value(rounding=ROUND_HALF_UP))
    except LimitError:
        raise
    except (DecimalException, ValueError):  # DecimalException: InvalidOperation, Overflow ("1e999999999")
        raise LimitError(field, value, CPUS_ACCEPTED) from None
    if quota < CPU_QUOTA_MIN_US:
        raise LimitError(field, value, "is too small; the kernel's minimum quota is 1000 "
                         "microseconds (0.01 cores at the default period of 100000)")
    if quota > SIZE_LIMIT:
        raise LimitError(field, value, 'is too large; use "max" for no limit')
    return quota, period


def _cpus(value, key) -> dict:
    quota, period = parse_cpus(value, key)
    return {"cpu_quota_us": quota, "cpu_period_us": period}


PARSERS = {
    "cpus": _cpus,
    "cpu_quota_us": lambda value, key: {"cpu_quota_us": _parse_int(
        value, key, 'is not a quota; use microseconds >= 1000, or "max"', CPU_QUOTA_MIN_US, SIZE_LIMIT,
        allow_max=True)},
    "cpu_period_us": lambda value, key: {"cpu_period_us": _parse_int(
        value, key, "is not a period; use 1000 to 1000000 microseconds", CPU_PERIOD_MIN_US, CPU_PERIOD_MAX_US)},
    "cpu_weight": lambda value, key: {"cpu_weight": parse_weight(value, key)},
}


def render(limits, out: dict) -> None:
    if limits.cpu_quota_us is not None:
        out["cpu.max"] = f"{limits.cpu_quota_us} {limits.cpu_period_us}"
    if limits.cpu_weight is not None:
        out["cpu.weight"] = str(limits.cpu_weight)


def read_back(texts: dict, vals: dict) -> None:
    t = texts.get("cpu.max")
    if t is not None:
        q, _, p = t.strip().partition(" ")
        vals["cpu_quota_us"] = MAX if q == MAX else int(q)
        vals["cpu_period_us"] = int(p) if p else DEFAULT_CPU_PERIOD_US
    t = texts.get("cpu.weight")
    if t is not None:
        vals["cpu_weight"] = int(t.strip())
