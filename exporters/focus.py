"""FOCUS 1.2 (FinOps Open Cost and Usage Specification) rows from the ledger.

Pure functions over the hourly per-instance sums agent.ledger builds
(hour, container_id, cgroup_inode, name, labels and the summed integer
columns); nothing here touches the database or the kernel. The daemon hands
focus_rows to the ledger (which imports no exporter).

One row per container instance, meter and UTC hour. Meters: cpu
(Core-Hours) and memory (GiB-Hours) are Compute / Containers; io_read and
io_write (GiB) are Storage / Block Storage (the bytes a container moved
to and from block devices, io.stat); disk (GiB-Hours, the files an image
container keeps in its rootfs) is Storage / Block Storage; net_tx (GiB
transmitted from the container's own network namespace) is Networking /
Network Infrastructure. A meter whose quantity the ledger did
not measure (None) has no row; nor has one whose quantity and cost are both 0.

Columns: the 21 mandatory ones, the conditional ones our data implies
(ConsumedQuantity/Unit, ListUnitPrice, ContractedUnitPrice, PricingCategory,
ResourceId/Name/Type, SkuId, SkuMeter, SkuPriceId, SkuPriceDetails, Tags),
the recommended ChargeFrequency and ServiceSubcategory, then our own x_
columns. No discounts, commitments, taxes or corrections: ChargeCategory
"Usage", ChargeClass null, PricingCategory "Standard", and
BilledCost = EffectiveCost = ListCost = ContractedCost. The billing
account is the host; the billing period the UTC calendar month of the
charge period. Times are ISO 8601 UTC (2026-11-01T13:00:00Z), start
inclusive, end exclusive.

Rounding rule (docs/billing.md): a row's cost is exact. It is the row's
PricingQuantity -- the hour's summed integer quantity (µs, byte-seconds,
bytes), an exact figure -- times the unit price, computed in exact Decimal
and rounded once, half to even, to 1e-9 of the currency. Each ledger record
is priced and rounded the same way on its own, so the records of a row add
up to the row's cost within half a nano-unit per record; a row never
inherits the records' rounding (0.019921875 stays 0.019921875).

Closed periods only by default: an hour is closed once its end plus a
grace (the billing period and a minute, for the last record's commit) has
passed; rows of a closed hour never change between two exports. The open
hour is included on request (``open``), with x_ChargePeriodStatus "Open".
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

from agent.pricing import GIB, GIB_SECONDS_PER_GIB_HOUR, METERS, USEC_PER_HOUR, money, quantity, to_nanos
from agent.records import HOUR, grace_seconds, hour_is_open, iso  # noqa: F401  (grace_seconds: the closed-hour rule lives with the records)

SERVICE_NAME = "cgroup-agent"
RESOURCE_TYPE = "Container"

FOCUS_COLUMNS = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription",
    "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart", "ConsumedQuantity", "ConsumedUnit",
    "ContractedCost", "ContractedUnitPrice", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "ListUnitPrice", "PricingCategory", "PricingQuantity", "PricingUnit", "ProviderName",
    "PublisherName", "ResourceId", "ResourceName", "ResourceType", "ServiceCategory", "ServiceName",
    "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceDetails", "SkuPriceId", "Tags",
    "x_Host", "x_ContainerId", "x_CgroupInode", "x_Meter", "x_PricingBasis", "x_ChargePeriodStatus",
)

# meter -> (consumed column, priced column, units per pricing unit, RateCard price field,
#           ServiceCategory, ServiceSubcategory)
METER_COLUMNS = {
    "cpu": ("cpu_usec", "priced_cpu_usec", USEC_PER_HOUR, "cpu_core_hour", "Compute", "Containers"),
    "memory": ("memory_byte_seconds", "priced_memory_byte_seconds", GIB_SECONDS_PER_GIB_HOUR,
               "memory_gib_hour", "Compute", "Containers"),
    "io_read": ("io_read_bytes", "io_read_bytes", GIB, "io_read_gib", "Storage", "Block Storage"),
    "io_write": ("io_write_bytes", "io_write_bytes", GIB, "io_write_gib", "Storage", "Block Storage"),
    "disk": ("disk_byte_seconds", "disk_byte_seconds", GIB_SECONDS_PER_GIB_HOUR, "disk_gib_hour", "Storage",
             "Block Storage"),
    "net_tx": ("net_tx_bytes", "net_tx_bytes", GIB, "net_gib", "Networking", "Network Infrastructure"),
}
# meters most containers do not have (no upper dir, host network): the count
# of records behind an hour that measured them
MEASURED_BY = {"disk": "disk_measured", "net_tx": "net_measured"}


def _month(ts: int) -> tuple[str, str]:
    d = datetime.fromtimestamp(ts, timezone.utc)
    start = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")


def unit_price(price: Decimal) -> str:
    """A unit price as a plain decimal string (never an exponent)."""
    s = format(Decimal(price).normalize(), "f")
    return s if s not in ("-0",) else "0"


def row_cost_nanos(priced: int, price: Decimal, per_unit: int) -> int:
    """The rounding rule: the exact quantity (priced / per_unit) times the price, rounded once."""
    return to_nanos(Decimal(int(priced)) * Decimal(price) / Decimal(per_unit))


def focus_rows(hourly: list[dict], host: str, card, now: float, grace: int,
               include_open: bool = False) -> list[dict]:
    """Hourly per-instance sums -> FOCUS rows (see the module docstring).
    ``card`` is the agent.pricing.RateCard the records were priced with."""
    rows = []
    for h in hourly:
        is_open = hour_is_open(h["hour"], now, grace)
        if is_open and not include_open:
            continue
        tags = json.dumps(h["labels"], sort_keys=True, separators=(",", ":"))
        bp_start, bp_end = _month(h["hour"])
        for meter, (used_col, priced_col, per_unit, price_field, category, subcategory) in METER_COLUMNS.items():
            used, priced = h.get(used_col), h.get(priced_col)
            if used is None or priced is None or (meter in MEASURED_BY and not h.get(MEASURED_BY[meter])):
                continue          # not measured: no cost row for this dimension
            price = getattr(card, price_field)
            nanos = row_cost_nanos(priced, price, per_unit)
            if not used and not nanos:
                continue
            unit, sku, what = METERS[meter]
            c = money(nanos)
            p = unit_price(price)
            rows.append({
                "BilledCost": c, "BillingAccountId": host, "BillingAccountName": host,
                "BillingCurrency": card.currency, "BillingPeriodEnd": bp_end, "BillingPeriodStart": bp_start,
                "ChargeCategory": "Usage", "ChargeClass": None,
                "ChargeDescription": f"{what} of container {h['name']} on {host}",
                "ChargeFrequency": "Usage-Based",
                "ChargePeriodEnd": iso(h["hour"] + HOUR), "ChargePeriodStart": iso(h["hour"]),
                "ConsumedQuantity": quantity(used, per_unit), "ConsumedUnit": unit,
                "ContractedCost": c, "ContractedUnitPrice": p, "EffectiveCost": c,
                "InvoiceIssuerName": SERVICE_NAME, "ListCost": c, "ListUnitPrice": p,
                "PricingCategory": "Standard", "PricingQuantity": quantity(priced, per_unit), "PricingUnit": unit,
                "ProviderName": SERVICE_NAME, "PublisherName": SERVICE_NAME,
                "ResourceId": f"{host}/{h['container_id']}/{h['cgroup_inode']}",
                "ResourceName": h["name"], "ResourceType": RESOURCE_TYPE,
                "ServiceCategory": category, "ServiceName": SERVICE_NAME, "ServiceSubcategory": subcategory,
                "SkuId": sku, "SkuMeter": what, "SkuPriceDetails": None,
                "SkuPriceId": f"{sku}/{card.currency}/{p}", "Tags": tags,
                "x_Host": host, "x_ContainerId": h["container_id"], "x_CgroupInode": h["cgroup_inode"],
                "x_Meter": meter, "x_PricingBasis": card.basis,
                "x_ChargePeriodStatus": "Open" if is_open else "Closed",
            })
    return rows
