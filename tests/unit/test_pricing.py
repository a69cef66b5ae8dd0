"""Rate card: Decimal money, the three pricing bases, the rounding rule."""
from decimal import Decimal

import pytest

from agent.config import load_config
from agent.pricing import GIB, RateCard, money, quantity, to_nanos

CARD = RateCard(currency="EUR", basis="usage", cpu_core_hour=Decimal("0.036"),
                memory_gib_hour=Decimal("0.0045"), io_read_gib=Decimal("0.01"), io_write_gib=Decimal("0.02"))


def test_one_core_hour_one_gib_hour_one_gib_each():
    p = CARD.priced(3_600_000_000, 0, False, GIB * 3600, 0, False)
    c = CARD.costs(p, GIB, GIB)
    assert (c.cpu, c.memory, c.io_read, c.io_write) == (36_000_000, 4_500_000, 10_000_000, 20_000_000)
    assert money(c.total) == "0.070500000"


def test_bases():
    used_cpu, reserved_cpu = 1_000_000, 5_000_000
    used_mem, reserved_mem = 9 * GIB, 4 * GIB
    for basis, want in (("usage", (used_cpu, used_mem)), ("reserved", (reserved_cpu, reserved_mem)),
                        ("max", (reserved_cpu, used_mem))):
        card = CARD._replace(basis=basis)
        assert tuple(card.priced(used_cpu, reserved_cpu, True, used_mem, reserved_mem, True)) == want
    # no limit: nothing was reserved, usage is charged whatever the basis
    card = CARD._replace(basis="reserved")
    assert tuple(card.priced(used_cpu, 0, False, used_mem, 0, False)) == (used_cpu, used_mem)


def test_rounding_is_half_even_per_meter_in_nanos():
    assert to_nanos(Decimal("0.0000000025")) == 2
    assert to_nanos(Decimal("0.0000000035")) == 4
    # 1 µs of CPU at 0.036/core-hour is 1e-11: rounds to 0 nanos, never to float noise
    assert CARD.costs(CARD.priced(1, 0, False, 0, 0, False), 0, 0).cpu == 0
    assert quantity(1, 3) == "0.333333333333"


def test_from_config_and_bad_basis():
    cfg = load_config(None, {"billing.price_cpu_core_hour": "0.5", "billing.basis": "max", "billing.currency": "EUR"})
    card = RateCard.from_config(cfg.billing)
    assert card.cpu_core_hour == Decimal("0.5") and card.basis == "max" and card.currency == "EUR"
    with pytest.raises(ValueError, match="billing.basis"):
        CARD._replace(basis="cheap").check()
