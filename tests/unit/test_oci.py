"""OCI runtime-spec linux.resources -> Limits, converted like runc and crun."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from runtime.errors import LimitError
from runtime.limits import (MAX, IoMax, Limits, blkio_weight_to_io_weight,
                            cpu_shares_to_weight, from_oci, parse_limit_files)


@pytest.mark.parametrize("shares,weight", [
    (2, 1), (1, 1), (1024, 100), (262144, 10000), (300000, 10000), (512, 59),
    (2048, 174), (100, 17),
])
def test_cpu_shares_log_scale(shares, weight):
    assert cpu_shares_to_weight(shares) == weight


def test_cpu_shares_zero_is_unset():
    assert cpu_shares_to_weight(0) is None
    assert from_oci({"cpu": {"shares": 0}}).cpu_weight is None


@given(st.integers(2, 262143))
def test_cpu_shares_monotonic_in_range(s):
    a, b = cpu_shares_to_weight(s), cpu_shares_to_weight(s + 1)
    assert 1 <= a <= b <= 10000


@pytest.mark.parametrize("w,expected", [(10, 1), (1000, 10000), (500, 4950), (100, 910)])
def test_blkio_weight(w, expected):
    assert blkio_weight_to_io_weight(w) == expected
    assert from_oci({"blockIO": {"weight": w}}).io_weight == expected


def test_blkio_weight_out_of_range():
    with pytest.raises(LimitError, match=r"^linux\.resources\.blockIO\.weight: "):
        from_oci({"blockIO": {"weight": 5}})


def test_full_resources():
    lim = from_oci({
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 1 << 30, "reservation": 1 << 29, "swap": 3 << 30},
        "blockIO": {"weight": 500,
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2097152}],
                    "throttleReadIOPSDevice": [{"major": 254, "minor": 0, "rate": 100}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]},
        "pids": {"limit": 64},
    })
    assert lim.files() == {
        "cpuset.cpus": "0-1", "cpuset.mems": "0",
        "memory.low": str(1 << 29), "memory.max": str(1 << 30),
        "memory.swap.max": str(2 << 30),
        "cpu.max": "50000 100000", "cpu.weight": "100", "io.weight": "default 4950",
        "io.max": "8:0 rbps=1048576 wbps=2097152 riops=max wiops=max\n"
                  "254:0 rbps=max wbps=max riops=100 wiops=max",
        "pids.max": "64",
    }


@pytest.mark.parametrize("mem,swap_max", [
    ({"limit": -1}, MAX),                       # unlimited memory, swap unset -> both max
    ({"limit": 1000, "swap": -1}, MAX),
    ({"limit": 1000, "swap": 0}, None),         # unset
    ({"limit": 1000}, None),
    ({"limit": 1000, "swap": 1000}, 0),         # no swap at all
    ({"limit": 1000, "swap": 5000}, 4000),
])
def test_swap_is_memory_plus_swap(mem, swap_max):
    assert from_oci({"memory": mem}).memory_swap_max == swap_max


@pytest.mark.parametrize("mem", [{"limit": 2000, "swap": 1000}, {"swap": 1000},
                                 {"limit": -1, "swap": 1000}])
def test_swap_errors(mem):
    with pytest.raises(LimitError, match=r"^linux\.resources\.memory\.swap: "):
        from_oci({"memory": mem})


@pytest.mark.parametrize("quota,period,expected", [
    (50000, None, "50000 100000"), (-1, 100000, "max 100000"), (None, 20000, "max 20000"),
    (200000, 50000, "200000 50000"), (0, 0, None), (None, None, None),
])
def test_quota_period(quota, period, expected):
    cpu = {k: v for k, v in (("quota", quota), ("period", period)) if v is not None}
    assert from_oci({"cpu": cpu}).files().get("cpu.max") == expected


@pytest.mark.parametrize("limit,expected", [(0, MAX), (-1, MAX), (1, 1), (4096, 4096)])
def test_pids(limit, expected):
    assert from_oci({"pids": {"limit": limit}}).pids_max == expected


def test_memory_reservation_and_unset():
    assert from_oci({"memory": {"reservation": 4096}}).memory_low == 4096
    assert from_oci({}) == Limits() and from_oci(None) == Limits()
    assert from_oci({"memory": {"limit": 0}}).memory_max is None


@pytest.mark.parametrize("res,field", [
    ({"cpu": {"shares": "1024"}}, "linux.resources.cpu.shares"),
    ({"cpu": {"quota": 10}}, "linux.resources.cpu.quota"),
    ({"cpu": {"quota": 50000, "period": 10}}, "linux.resources.cpu.period"),
    ({"cpu": {"cpus": "x"}}, "linux.resources.cpu.cpus"),
    ({"memory": {"limit": -2}}, "linux.resources.memory.limit"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8}]}},
     "linux.resources.blockIO.throttleReadBpsDevice[0]"),
])
def test_bad_oci_names_the_field(res, field):
    with pytest.raises(LimitError) as ei:
        from_oci(res)
    assert str(ei.value).startswith(field + ":") or str(ei.value).startswith(field + " ")


# property: any valid OCI resources convert to limits whose files parse back the same

u64 = st.integers(1, 2**40)
devs = st.lists(st.fixed_dictionaries({"major": st.integers(1, 300), "minor": st.integers(0, 255),
                                       "rate": st.integers(0, 2**40)}), max_size=3)


@st.composite
def oci_resources(draw):
    limit = draw(st.one_of(st.none(), st.just(-1), st.just(0), u64))
    swap = None
    if limit and limit > 0:
        swap = draw(st.one_of(st.none(), st.just(-1), st.just(0),
                              st.integers(limit, limit + 2**40)))
    return {
        "cpu": {"shares": draw(st.integers(0, 300000)),
                "quota": draw(st.one_of(st.none(), st.just(-1), st.integers(1000, 10**7))),
                "period": draw(st.one_of(st.none(), st.integers(1000, 10**6)))},
        "memory": {k: v for k, v in (("limit", limit), ("swap", swap),
                                     ("reservation", draw(st.one_of(st.none(), u64))))
                   if v is not None},
        "blockIO": {"weight": draw(st.one_of(st.just(0), st.integers(10, 1000))),
                    "throttleReadBpsDevice": draw(devs), "throttleWriteIOPSDevice": draw(devs)},
        "pids": {"limit": draw(st.integers(-1, 2**20))},
    }


@settings(max_examples=100, deadline=None)
@given(oci_resources())
def test_oci_conversion_properties(res):
    lim = from_oci(res)
    assert parse_limit_files(lim.files()) == lim
    shares = res["cpu"]["shares"]
    if shares:
        assert 1 <= lim.cpu_weight <= 10000
    if res["blockIO"]["weight"]:
        assert 1 <= lim.io_weight <= 10000
    limit = res["memory"].get("limit")
    swap = res["memory"].get("swap")
    if limit and limit > 0 and swap and swap > 0:
        assert lim.memory_swap_max + lim.memory_max == swap
    pids = res["pids"]["limit"]
    assert lim.pids_max == (MAX if pids <= 0 else pids)
    if lim.io_max:
        devnos = [e.devno for e in lim.io_max]
        assert len(devnos) == len(set(devnos))
