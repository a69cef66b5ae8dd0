"""Accounting: readings -> the open period's accumulators -> record rows.

One reading of one container (``Accounting.advance``) goes through named
steps: find its instance, take the reading interval (from the last accounted
reading to this one), the counter increases since the committed counters, the
memory/swap integrals, the periods the interval covers, the split of every
dimension across them in proportion to time (closing each period but the
last into a record), the peaks, and finally the new committed readings.
Nothing here touches the database: the ledger commits what this produces.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from agent.ledger.instance import FROZEN, IDLE, RUNNING, Instance, io_encode
from agent.records import ALL_MEASURED_COLS, MEAS_DISK, MEAS_IO, MEAS_MEMORY, MEAS_NET, MEAS_PIDS, MEAS_SWAP, \
    SUM_COLS, labels_json, record_id

GC_AFTER = 86400          # forget idle, unseen instances after this long
FINISHED_GC_AFTER = 30.0  # a finished instance (final reading taken) is remembered only so that
                          # a collector pass that raced the final reading is recognised as older
                          # (advance) instead of billing the container again; such a pass arrives
                          # within seconds (the supervisor forgets the container right after its
                          # final reading). Longer grew RSS under churn by ~1.5 kB per container.

# the integer accumulators, in the order of Accounting._increases
INT_ACC = ("a_cpu", "a_user", "a_system", "a_throttled", "a_rbytes", "a_wbytes", "a_rios", "a_wios", "a_log",
           "a_net_rx", "a_net_tx")
# ``disk`` argument of advance(): the instance's last disk reading stands for
# this one (the final reading: the upper dir is still there, not walked again)
LAST_DISK = object()


class Span(NamedTuple):
    """A reading interval: wall-clock positions (w0, wall], ``dt`` its
    CLOCK_MONOTONIC length, ``prev`` the container's state during it."""
    w0: float
    wall: float
    dt: float
    prev: int
    continued: bool    # it starts at an accounted reading (not the instance's first)


class Integrals(NamedTuple):
    mem_bs: float      # trapezoid of memory.current over the interval
    swap_bs: float
    meas: int          # MEAS_* bits of what this reading measured
    disk_bs: float = 0.0   # trapezoid of the upper dir's bytes


def delta(cur, last):
    """(increase, new last) of a cumulative counter; decrease = reset, count from zero."""
    if cur is None:
        return 0, last
    if last is None or cur < last:
        return cur, cur
    return cur - last, cur


def overlaps(w0: float, w1: float, first: int, n: int, period: int) -> list[int]:
    """Microseconds of (w0, w1] in each of the n periods from ``first`` on; the
    first period also takes what lies before it, the last what lies after it."""
    a, b = round(w0 * 1e6), round(w1 * 1e6)
    out = []
    for k in range(n):
        lo = a if k == 0 else max(a, (first + k * period) * 1_000_000)
        hi = b if k == n - 1 else min(b, (first + (k + 1) * period) * 1_000_000)
        out.append(max(0, hi - lo))
    if not any(out):
        out[-1] = 1
    return out


def split_int(total: int, weights: list[int], wsum: int) -> list[int]:
    """Split an integer in proportion to weights, exactly: floors, then the
    remainder one by one to the largest fractional parts (ties: the earlier)."""
    if not total:
        return [0] * len(weights)
    if len(weights) == 1:
        return [total]
    q = [total * w // wsum for w in weights]
    rem = total - sum(q)
    if rem:
        order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % wsum), i))
        for i in order[:rem]:
            q[i] += 1
    return q


def limit_cores(limits) -> float | None:
    """cpu.max quota/period in cores; None when unlimited ("max") or unset."""
    quota = getattr(limits, "cpu_quota_us", None)
    if not isinstance(quota, int) or isinstance(quota, bool) or quota <= 0:
        return None
    period = getattr(limits, "cpu_period_us", None)
    if not isinstance(period, int) or period <= 0:
        period = 100000
    return quota / period


def limit_bytes(limits) -> int | None:
    """memory.max in bytes; None when unlimited ("max") or unset."""
    v = getattr(limits, "memory_max", None)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def sample_state(info, sample) -> int:
    ev = getattr(sample, "events", None)
    if ev is not None:
        if not ev.populated:
            return IDLE
        return FROZEN if ev.frozen else RUNNING
    state = getattr(info, "state", "")
    return RUNNING if state == "running" else FROZEN if state == "paused" else IDLE


class Accounting:
    """The accounting rules over the ledger's in-memory instances (``instances``:
    (container id, cgroup inode) -> Instance, owned by the ledger)."""

    def __init__(self, period: int, gap: float, host: str, card, instances: dict):
        self.period = period
        self.gap = gap            # a reading interval longer than this is flagged interpolated
        self.host = host
        self.card = card
        self.instances = instances

    def period_of(self, wall: float) -> int:
        return int(math.floor(wall / self.period)) * self.period

    # ------------------------------------------------------------ one reading

    def advance(self, info, sample, wall, mono, records, final=False, disk=None) -> Instance:
        """Account one reading of one container. The reading interval (from the
        last accounted reading to this one) is split across the wall-clock
        periods it covers in proportion to time: every dimension, so that no
        record holds more than its own period's share. A period the interval
        passes without any reading of its own (agentd was down) gets its
        share as a record of its own; the records made from an interval longer
        than ``self.gap`` are flagged interpolated. Closed periods' rows are
        appended to ``records``. ``disk``: bytes in the container's upper dir
        (None: not measured; LAST_DISK: as last read). Network bytes come
        with the sample (net_rx_bytes/net_tx_bytes: the counters of the
        container's own network namespace, None: not measured)."""
        inst, new = self._instance(info, sample)
        if not new and inst.last_mono is not None and mono < inst.last_mono:
            # a sample older than what is already accounted for (a collector pass
            # that started before the supervisor's final reading): its counters
            # would look like a reset. Ignore it.
            return inst
        self._identify(inst, info)
        state = sample_state(info, sample)
        limits = info.limits
        cores = limit_cores(limits) if limits is not None else None
        mem_limit = limit_bytes(limits) if limits is not None else None
        span = self._interval(inst, info, state, wall, mono, new, final)
        rx, tx = sample.net_rx_bytes, sample.net_tx_bytes
        net = None if rx is None or tx is None else (rx, tx)
        inc = self._increases(inst, info, sample, net)
        if disk is LAST_DISK:
            disk = inst.last_disk
        # memory and pids of a cgroup with no process (an exited container whose
        # cgroup is kept for a restart) are not billed: no time, no peak
        active = span.prev != IDLE or state != IDLE
        integrals = self._integrals(inst, sample, span, active, disk, net is not None)
        weights, first, n = self._periods(inst, span, inc, records)
        mem = sample.memory_current
        line = n > 1 and mem is not None and inst.last_mem is not None and active
        self._spread(inst, span, weights, first, self._parts(inc, weights, n), integrals,
                     cores, mem_limit, mem if line else None, records)
        self._peaks(inst, sample, active)
        self._remember(inst, sample, span, mono, state, cores, mem_limit)
        inst.last_disk = disk
        return inst

    def _instance(self, info, sample) -> tuple[Instance, bool]:
        inode = sample.inode or 0
        key = (info.id, inode)
        inst = self.instances.get(key)
        if inst is not None:
            return inst, False
        inst = self.instances[key] = Instance.new(info.id, inode, info.name, labels_json(info.labels))
        return inst, True

    @staticmethod
    def _identify(inst: Instance, info) -> None:
        inst.name = info.name
        if info.labels is not inst.labels_src:
            inst.labels = labels_json(info.labels)
            inst.labels_src = info.labels

    @staticmethod
    def _interval(inst: Instance, info, state: int, wall: float, mono: float, new: bool, final: bool) -> Span:
        last_mono = inst.last_mono
        if last_mono is not None:
            dt = max(0.0, mono - last_mono)
            prev = inst.last_state
        else:
            dt, prev = 0.0, IDLE
        if inst.last_wall is not None and wall < inst.last_wall:
            # the wall clock was set back: this instance's timeline goes on from
            # its last reading at the monotonic pace (no period is re-opened)
            wall = inst.last_wall + dt
        w0 = inst.last_wall if inst.last_wall is not None else wall
        if last_mono is None:
            started = info.started_at
            if new and started:
                end = info.finished_at if final else None
                dt = max(0.0, (end or wall) - started)
                prev = FROZEN if state == FROZEN else RUNNING
                w0 = min(started, wall)
        return Span(w0, wall, dt, prev, last_mono is not None)

    @staticmethod
    def _increases(inst: Instance, info, sample, net) -> list[int]:
        """Counter increases since the committed counters, in INT_ACC order;
        the committed counters move on to this reading's."""
        inc = [0] * len(INT_ACC)
        cpu = sample.cpu
        if cpu is not None:
            inc[0], inst.c_usage = delta(cpu.usage_usec, inst.c_usage)
            inc[1], inst.c_user = delta(cpu.user_usec, inst.c_user)
            inc[2], inst.c_system = delta(cpu.system_usec, inst.c_system)
            inc[3], inst.c_throttled = delta(cpu.throttled_usec, inst.c_throttled)
        io = sample.io
        if io:
            last_io = inst.io
            for dev, st in io.items():
                dkey = f"{dev[0]}:{dev[1]}" if isinstance(dev, tuple) else str(dev)
                last = last_io.get(dkey)
                if last is None:
                    last = last_io[dkey] = [None, None, None, None]
                for i, cur in enumerate((st.rbytes, st.wbytes, st.rios, st.wios)):
                    d, last[i] = delta(cur, last[i])
                    inc[4 + i] += d
            inst.c_io = io_encode(last_io)
        log_bytes = getattr(info, "log_bytes", None)
        if log_bytes is not None:
            inc[8], inst.c_log = delta(log_bytes, inst.c_log)
        if net is not None:   # a new network namespace (a restart) counts from zero
            inc[9], inst.c_net_rx = delta(net[0], inst.c_net_rx)
            inc[10], inst.c_net_tx = delta(net[1], inst.c_net_tx)
        return inc

    @staticmethod
    def _integrals(inst: Instance, sample, span: Span, active: bool, disk, net_measured: bool) -> Integrals:
        """Trapezoids of the gauges over the interval (a running or paused
        container only) and what this reading measured."""
        mem = sample.memory_current
        swap = sample.memory_swap_current
        mem_bs = swap_bs = disk_bs = 0.0
        if span.dt > 0 and span.continued and active:
            if mem is not None and inst.last_mem is not None:
                mem_bs = (inst.last_mem + mem) / 2.0 * span.dt
            if swap is not None and inst.last_swap is not None:
                swap_bs = (inst.last_swap + swap) / 2.0 * span.dt
            if disk is not None and inst.last_disk is not None:
                disk_bs = (inst.last_disk + disk) / 2.0 * span.dt
        meas = ((MEAS_MEMORY if mem is not None else 0) | (MEAS_SWAP if swap is not None else 0)
                | (MEAS_IO if sample.io is not None else 0)
                | (MEAS_PIDS if sample.pids_current is not None else 0)
                | (MEAS_DISK if disk is not None else 0) | (MEAS_NET if net_measured else 0))
        return Integrals(mem_bs, swap_bs, meas, disk_bs)

    def _periods(self, inst: Instance, span: Span, inc: list[int], records: list) -> tuple[list[int], int, int]:
        """(weights, first period, number of periods) the interval is split over:
        from the open one (or the first one not closed yet) to the one of this
        reading. When it is split over one period only, an open period before
        it is closed first."""
        first = inst.open_start if inst.open_start is not None else max(self.period_of(span.w0), inst.next_min)
        last_p = max(first, self.period_of(span.wall))
        n = (last_p - first) // self.period + 1
        if n > 1 and (span.dt > 0 or any(inc)):
            return overlaps(span.w0, span.wall, first, n, self.period), first, n
        if inst.open_start is not None and last_p > inst.open_start:
            records.append(self.close(inst))
        return [1], last_p, 1

    @staticmethod
    def _parts(inc: list[int], weights: list[int], n: int) -> list[tuple[str, tuple]]:
        """[(accumulator, its share in each period)] of the non-zero increases."""
        if n == 1:      # the common case: the whole increase goes to one period
            return [(acc, (v,)) for acc, v in zip(INT_ACC, inc) if v]
        wsum = sum(weights)
        parts = [split_int(v, weights, wsum) for v in inc]
        if inc[1] + inc[2] == inc[0] and inc[0]:
            # keep user + system = usage in every record when the kernel's do
            parts[1] = split_int(inc[1], parts[0], inc[0])
            parts[2] = [c - u for c, u in zip(parts[0], parts[1])]
        return [(acc, vals) for acc, vals, v in zip(INT_ACC, parts, inc) if v]

    def _spread(self, inst: Instance, span: Span, weights, first: int, parts, integrals: Integrals,
                cores, mem_limit, line_mem, records: list) -> None:
        """Add each period's share to the accumulators, closing every period but the last."""
        n = len(weights)
        wsum = sum(weights)
        gap = span.dt > self.gap
        for k in range(n):
            if inst.open_start is None:
                inst.open_start = max(first + k * self.period, inst.next_min)
            f = weights[k] / wsum
            share = span.dt * f
            prev = span.prev
            if prev == RUNNING:
                inst.a_running += share
            elif prev == FROZEN:
                inst.a_frozen += share
            if prev != IDLE:
                if cores:
                    inst.a_res_cpu += cores * share
                if mem_limit:
                    inst.a_res_mem += mem_limit * share
            for acc, vals in parts:
                setattr(inst, acc, getattr(inst, acc) + vals[k])
            inst.a_mem_bs += integrals.mem_bs * f
            inst.a_swap_bs += integrals.swap_bs * f
            if integrals.disk_bs:
                inst.a_disk_bs += integrals.disk_bs * f
            inst.a_meas |= integrals.meas
            if gap:
                inst.a_interp = 1
            if line_mem is not None:
                self._line_peak(inst, span, first + k * self.period, line_mem)
            if k < n - 1:
                records.append(self.close(inst))

    def _line_peak(self, inst: Instance, span: Span, start: int, mem: int) -> None:
        """A period's peak within the interval: the straight line between the
        two readings, at the period's start and end."""
        for t in (start, start + self.period):
            if span.w0 < t < span.wall:
                v = round(inst.last_mem + (mem - inst.last_mem) * (t - span.w0) / (span.wall - span.w0))
                if v > inst.a_mem_peak:
                    inst.a_mem_peak = v

    @staticmethod
    def _peaks(inst: Instance, sample, active: bool) -> None:
        mem = sample.memory_current
        if mem is not None and active and mem > inst.a_mem_peak:
            inst.a_mem_peak = mem
        peak = sample.memory_peak
        if peak is not None:
            if peak != inst.last_mem_peak and active:  # a new lifetime peak (or a reset) since the last sample
                if peak > inst.a_mem_peak:
                    inst.a_mem_peak = peak
            inst.last_mem_peak = peak
        pids = sample.pids_current
        if pids is not None and pids > inst.a_pids_peak:
            inst.a_pids_peak = pids

    @staticmethod
    def _remember(inst: Instance, sample, span: Span, mono: float, state: int, cores, mem_limit) -> None:
        """This reading becomes the instance's last accounted one."""
        inst.last_mem = sample.memory_current
        inst.last_swap = sample.memory_swap_current
        inst.last_wall = span.wall
        inst.last_mono = mono
        inst.last_state = state
        inst.cpu_limit = cores
        inst.mem_limit = mem_limit
        inst.a_samples += 1

    # ------------------------------------------------------------ periods ending

    def finish(self, inst: Instance, records: list) -> None:
        """After the final reading: close the instance's open period now."""
        if inst.finished and not (inst.a_cpu or inst.a_rbytes or inst.a_wbytes
                                  or inst.a_rios or inst.a_wios or inst.a_log or inst.a_net_rx or inst.a_net_tx):
            # a repeated final reading with nothing new: no empty record
            inst.reset_accumulators()
            inst.open_start = None
        elif inst.open_start is not None:
            records.append(self.close(inst))
        inst.finished = 1

    def close_unseen(self, seen: set, wall: float, pw: int, records: list, closed: dict) -> list[tuple]:
        """Instances without a reading this pass: close an open period that
        ended; return the keys of idle ones to forget."""
        gone = []
        for key, inst in self.instances.items():
            if key in seen:
                continue
            if inst.open_start is not None and pw > inst.open_start:
                records.append(self.close(inst))
                closed[key] = inst
            elif inst.open_start is None and \
                    (inst.last_wall or 0) < wall - (FINISHED_GC_AFTER if inst.finished else GC_AFTER):
                gone.append(key)
        return gone

    def close(self, inst: Instance) -> tuple | None:
        """Turn the open accumulators into a record row (None: an idle period,
        no record); reset them."""
        start = inst.open_start
        period_us = self.period * 1_000_000
        # durations come from CLOCK_MONOTONIC, the period from the wall clock:
        # a slewed clock must not make a record longer than its period
        running = min(round(inst.a_running * 1e6), period_us)
        frozen = min(round(inst.a_frozen * 1e6), period_us - running)
        res_cpu = round(inst.a_res_cpu * 1e6)
        mem_bs = round(inst.a_mem_bs)
        res_mem = round(inst.a_res_mem)
        meas = inst.a_meas or 0
        mem_measured = bool(meas & MEAS_MEMORY)
        disk_bs = round(inst.a_disk_bs or 0)
        net_rx, net_tx = inst.a_net_rx or 0, inst.a_net_tx or 0
        priced = self.card.priced(inst.a_cpu, res_cpu, inst.cpu_limit is not None,
                                  mem_bs, res_mem, inst.mem_limit is not None)
        costs = self.card.costs(priced, inst.a_rbytes, inst.a_wbytes,
                                memory_measured=mem_measured, io_measured=bool(meas & MEAS_IO),
                                disk_byte_seconds=disk_bs if meas & MEAS_DISK else None,
                                net_tx_bytes=net_tx if meas & MEAS_NET else None)
        sums = {
            "running_usec": running, "frozen_usec": frozen,
            "cpu_usec": inst.a_cpu, "cpu_user_usec": inst.a_user, "cpu_system_usec": inst.a_system,
            "cpu_throttled_usec": inst.a_throttled, "memory_byte_seconds": mem_bs,
            "swap_byte_seconds": round(inst.a_swap_bs),
            "io_read_bytes": inst.a_rbytes, "io_write_bytes": inst.a_wbytes,
            "io_read_ops": inst.a_rios, "io_write_ops": inst.a_wios,
            "reserved_cpu_usec": res_cpu, "reserved_memory_byte_seconds": res_mem,
            "priced_cpu_usec": priced.cpu_usec, "priced_memory_byte_seconds": priced.memory_byte_seconds,
            "cost_cpu_nanos": costs.cpu, "cost_memory_nanos": costs.memory,
            "cost_io_read_nanos": costs.io_read, "cost_io_write_nanos": costs.io_write,
            "cost_nanos": costs.total, "log_bytes": inst.a_log or 0,
            "disk_byte_seconds": disk_bs, "net_rx_bytes": net_rx, "net_tx_bytes": net_tx,
            "cost_disk_nanos": costs.disk, "cost_net_nanos": costs.net_tx,
        }
        flags = {"interpolated": 1 if inst.a_interp else 0,
                 **{c: 1 if meas & bit else 0 for c, bit in ALL_MEASURED_COLS},
                 "disk_unpriced": 1 if not meas & MEAS_DISK and self.card.disk_gib_hour else 0,
                 "net_unpriced": 1 if not meas & MEAS_NET and self.card.net_gib else 0}
        peaks = (inst.a_mem_peak, inst.a_pids_peak)
        inst.reset_accumulators()
        inst.next_min = start + self.period
        inst.open_start = None
        if not any(sums.values()) and not any(peaks):
            return None   # an idle period (e.g. an exited container's cgroup): no record
        sums.update(flags)
        return (record_id(self.host, inst.container_id, inst.cgroup_inode, start), self.host,
                inst.container_id, inst.name, inst.labels, inst.cgroup_inode, start, start + self.period,
                *(sums[c] for c in SUM_COLS), *peaks,
                inst.cpu_limit, inst.mem_limit, self.card.currency)

    def open_cost(self, inst: Instance) -> int:
        """Nano-units the open period of ``inst`` would cost if it closed now."""
        meas = inst.a_meas or 0
        priced = self.card.priced(inst.a_cpu, round(inst.a_res_cpu * 1e6), inst.cpu_limit is not None,
                                  round(inst.a_mem_bs), round(inst.a_res_mem), inst.mem_limit is not None)
        return self.card.costs(priced, inst.a_rbytes, inst.a_wbytes, memory_measured=bool(meas & MEAS_MEMORY),
                               io_measured=bool(meas & MEAS_IO),
                               disk_byte_seconds=round(inst.a_disk_bs or 0) if meas & MEAS_DISK else None,
                               net_tx_bytes=(inst.a_net_tx or 0) if meas & MEAS_NET else None).total
