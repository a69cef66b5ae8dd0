"""Rate card and Decimal money for billing records.

Prices come from ``[billing]``: per CPU core-hour, per GiB-hour of memory,
per GiB read and per GiB written, per GiB-hour of disk space and per GiB
transmitted, in one ISO 4217 currency. The pricing
basis decides which quantity of CPU and memory is charged:

    usage     what the container used (cpu_seconds, memory_byte_seconds)
    reserved  what its limits reserved while it ran (reserved_cpu_seconds,
              reserved_memory_byte_seconds); a meter without a limit falls
              back to usage (nothing was reserved, so usage is what it took)
    max       per meter max(usage, reserved): OpenCost's allocation rule

IO, disk and network are always charged on usage (there is no reservation
of bytes).

Rounding rule (documented in docs/billing.md): every quantity is converted
to its pricing unit and multiplied by the price in exact Decimal arithmetic
(28 significant digits), then each meter's cost is rounded once, half to
even, to a nano-unit of the currency (1e-9). A record's cost is the sum of
its rounded meter costs, so meter rows (FOCUS) always add up to the
record, and any sum of records is exact (costs are stored as integer
nano-units). Money never passes through float.
"""
from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import NamedTuple

BASES = ("usage", "reserved", "max")
NANO = Decimal("1e-9")
NANOS_PER_UNIT = 10**9
USEC_PER_HOUR = 3_600_000_000
GIB = 1 << 30
GIB_SECONDS_PER_GIB_HOUR = GIB * 3600

# meter name -> (pricing unit, SKU id, description)
METERS = {
    "cpu": ("Core-Hours", "cpu-core-hour", "CPU time"),
    "memory": ("GiB-Hours", "memory-gib-hour", "Memory"),
    "io_read": ("GiB", "io-read-gib", "Bytes read"),
    "io_write": ("GiB", "io-write-gib", "Bytes written"),
    "disk": ("GiB-Hours", "disk-gib-hour", "Disk space"),
    "net_tx": ("GiB", "net-tx-gib", "Bytes transmitted"),
}


class MeterCosts(NamedTuple):
    """Costs of one record in integer nano-units of the currency."""

    cpu: int
    memory: int
    io_read: int
    io_write: int
    disk: int = 0
    net_tx: int = 0

    @property
    def total(self) -> int:
        return self.cpu + self.memory + self.io_read + self.io_write + self.disk + self.net_tx


class PricedQuantities(NamedTuple):
    """The quantities the basis charges for: CPU in µs, memory in byte-seconds."""

    cpu_usec: int
    memory_byte_seconds: int


class RateCard(NamedTuple):
    currency: str = "USD"
    basis: str = "usage"
    cpu_core_hour: Decimal = Decimal(0)
    memory_gib_hour: Decimal = Decimal(0)
    io_read_gib: Decimal = Decimal(0)
    io_write_gib: Decimal = Decimal(0)
    disk_gib_hour: Decimal = Decimal(0)
    net_gib: Decimal = Decimal(0)

    @classmethod
    def from_config(cls, billing) -> "RateCard":
        """From the config's ``[billing]`` section (agent.config.BillingSection)."""
        card = cls(
            currency=billing.currency,
            basis=billing.basis,
            cpu_core_hour=Decimal(billing.price_cpu_core_hour),
            memory_gib_hour=Decimal(billing.price_memory_gib_hour),
            io_read_gib=Decimal(billing.price_io_read_gib),
            io_write_gib=Decimal(billing.price_io_write_gib),
            disk_gib_hour=Decimal(getattr(billing, "price_disk_gib_hour", 0)),
            net_gib=Decimal(getattr(billing, "price_net_gib", 0)),
        )
        card.check()
        return card

    def check(self) -> None:
        if self.basis not in BASES:
            raise ValueError(f"billing.basis: {self.basis!r} is not one of {', '.join(BASES)}")
        for field in ("cpu_core_hour", "memory_gib_hour", "io_read_gib", "io_write_gib", "disk_gib_hour", "net_gib"):
            v = getattr(self, field)
            if not isinstance(v, Decimal) or not v.is_finite() or v < 0:
                raise ValueError(f"billing.price_{field}: {v!r} is not a decimal >= 0")

    def priced(self, cpu_usec: int, reserved_cpu_usec: int, cpu_limited: bool,
               memory_byte_seconds: int, reserved_memory_byte_seconds: int,
               memory_limited: bool) -> PricedQuantities:
        """Apply the basis to CPU and memory."""
        return PricedQuantities(
            _basis(self.basis, cpu_usec, reserved_cpu_usec, cpu_limited),
            _basis(self.basis, memory_byte_seconds, reserved_memory_byte_seconds, memory_limited),
        )

    def costs(self, priced: PricedQuantities, io_read_bytes: int, io_write_bytes: int,
              memory_measured: bool = True, io_measured: bool = True,
              disk_byte_seconds: int | None = None, net_tx_bytes: int | None = None) -> MeterCosts:
        """Meter costs in nano-units (each rounded half-even once). A meter
        the host could not measure is unpriced: its cost is 0 here and the
        record lists it in ``unpriced`` (see unpriced_meters); it is never
        priced as if nothing had been used. Memory priced on its reservation
        (basis reserved, with a limit) needs no measurement. Disk
        byte-seconds and bytes transmitted: None = not measured (cost 0)."""
        memory = priced.memory_byte_seconds if memory_measured or self.memory_reserved_only() else 0
        return MeterCosts(
            to_nanos(Decimal(priced.cpu_usec) * self.cpu_core_hour / USEC_PER_HOUR),
            to_nanos(Decimal(memory) * self.memory_gib_hour / GIB_SECONDS_PER_GIB_HOUR),
            to_nanos(Decimal(io_read_bytes if io_measured else 0) * self.io_read_gib / GIB),
            to_nanos(Decimal(io_write_bytes if io_measured else 0) * self.io_write_gib / GIB),
            to_nanos(Decimal(disk_byte_seconds or 0) * self.disk_gib_hour / GIB_SECONDS_PER_GIB_HOUR),
            to_nanos(Decimal(net_tx_bytes or 0) * self.net_gib / GIB),
        )

    def memory_reserved_only(self) -> bool:
        return self.basis == "reserved"


def unpriced_meters(memory_unmeasured: bool, io_unmeasured: bool, disk_unpriced: bool = False,
                    net_unpriced: bool = False) -> list[str]:
    """The meters of a record (or group) that are not priced because the
    host could not measure them: ["memory"], ["io_read", "io_write"], ...
    Disk and network are named only when they have a price (disk_unpriced,
    net_unpriced: unmeasured and priced): most containers have no disk or
    network namespace of their own, and a meter without a price loses nothing."""
    return ((["memory"] if memory_unmeasured else []) + (["io_read", "io_write"] if io_unmeasured else [])
            + (["disk"] if disk_unpriced else []) + (["net_tx"] if net_unpriced else []))


def _basis(basis: str, used: int, reserved: int, limited: bool) -> int:
    if basis == "usage" or not limited:
        return used
    if basis == "reserved":
        return reserved
    return max(used, reserved)


def to_nanos(amount: Decimal) -> int:
    """Round an exact amount half-even to nano-units; returns an int."""
    with localcontext() as ctx:
        ctx.prec = 40
        return int((amount / NANO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def money(nanos: int) -> str:
    """Integer nano-units -> decimal string with 9 places ("0.000123400")."""
    return format((Decimal(int(nanos)) * NANO).quantize(NANO), "f")


def quantity(value: int, per_unit: int) -> str:
    """An exact quantity in pricing units as a decimal string (12 places, half-even)."""
    with localcontext() as ctx:
        ctx.prec = 40
        q = (Decimal(int(value)) / Decimal(per_unit)).quantize(Decimal("1e-12"), rounding=ROUND_HALF_EVEN)
    return format(q, "f")
