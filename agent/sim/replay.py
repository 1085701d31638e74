"""Replaying a capture: a ``DeviceModel`` per recorded GPU, piecewise constant between readings.

Levels (clocks, power, temperatures, reasons, memory, processes) hold the value of the
latest reading at or before the time asked; cumulative counters (energy, violation
time, PCIe/NVLink bytes) are interpolated between readings so that their rates stay
those of the capture. Activity ratios apply to the window that ended at their reading,
so ``activity(t0, t1)`` is the time-weighted mean of the captured windows it overlaps.
With ``loop`` (the default) the capture repeats; counters keep growing across loops.

What the capture does not hold is presented as not supported where the device model
allows it (no GPM, NVLink, ECC or row-remapping readings: the fake NVML says
``NotSupported``); other absent levels read 0.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.clock import Clock
from agent.model import DeviceStatus, GpuReading, HostReading
from agent.nvml import consts as C
from agent.sim.capture import Capture, read_capture
from agent.sim.device import Activity, DeviceSnapshot, SimIdentity
from agent.specs import SPECS, GpuSpec, SpecTable

_THRESHOLD_IDS = {name: tid for tid, name in C.THRESHOLD_NAMES.items()}
_VIOLATION_IDS = {name: fid for fid, name in C.VIOLATION_FIELDS.items()}
_ACTIVITY = (
    "busy",
    "sm_active",
    "sm_occupancy",
    "tensor",
    "hmma",
    "imma",
    "dfma",
    "dram",
    "fp16",
    "fp32",
    "fp64",
    "memory_controller",
)


def _activity_values(r: GpuReading) -> tuple[float, ...]:
    busy = r.utilization_samples_ratio
    if busy is None:
        busy = r.utilization_gpu_ratio
    if busy is None:
        busy = r.sm_active_ratio or 0.0
    sm = r.sm_active_ratio if r.sm_active_ratio is not None else busy
    dram = r.dram_active_ratio if r.dram_active_ratio is not None else (r.utilization_memory_ratio or 0.0)
    mc = r.utilization_memory_ratio if r.utilization_memory_ratio is not None else dram
    return (
        busy,
        sm,
        r.sm_occupancy_ratio or 0.0,
        r.tensor_active_ratio or 0.0,
        r.hmma_active_ratio or 0.0,
        r.imma_active_ratio or 0.0,
        r.dfma_active_ratio or 0.0,
        dram,
        r.fp16_active_ratio or 0.0,
        r.fp32_active_ratio or 0.0,
        r.fp64_active_ratio or 0.0,
        mc,
    )


def _counters(r: GpuReading) -> tuple[float, ...]:
    """Cumulative counters in the order the snapshot uses: energy mJ, violations, pcie tx/rx, nvlink tx/rx."""
    base = [(r.energy_joules or 0.0) * 1000.0]
    base += [float(r.violation_ns.get(name, 0)) for name in _VIOLATION_IDS]
    base += [
        float(r.pcie_tx_bytes or 0),
        float(r.pcie_rx_bytes or 0),
        float(r.nvlink_tx_bytes or 0),
        float(r.nvlink_rx_bytes or 0),
    ]
    return tuple(base)


def _spec_for(gpu: dict[str, Any], readings: Sequence[GpuReading], specs: SpecTable) -> GpuSpec:
    spec = SPECS.get(gpu.get("spec") or "") or specs.for_device(str(gpu.get("name", "")))
    if spec is None:
        name = str(gpu.get("name", "unknown GPU"))
        max_clock = max((r.sm_clock_max_hz or r.sm_clock_hz or 0.0) for r in readings) / 1e6
        spec = GpuSpec(
            key=name,
            name=name,
            match=re.escape(name),
            architecture="unknown",
            compute_capability=str(gpu.get("compute_capability") or ""),
            sms=0,
            max_sm_clock_mhz=max_clock or 1000.0,
            peak_clock_mhz=max_clock or 1000.0,
            max_memory_clock_mhz=max((r.memory_clock_max_hz or r.memory_clock_hz or 0.0) for r in readings)
            / 1e6,
            memory_bytes=max((r.memory_total_bytes or 0) for r in readings),
            memory_bandwidth_bytes_per_second=0.0,
            tdp_watts=max((r.power_max_limit_watts or r.power_limit_watts or 0.0) for r in readings),
            min_power_limit_watts=min((r.power_min_limit_watts or 0.0) for r in readings),
        )
    # present what the capture holds: no GPM / NVLink / ECC / remapping readings -> not supported
    return replace(
        spec,
        has_gpm=any(r.sm_active_ratio is not None for r in readings),
        has_nvlink=any(r.nvlink_tx_bytes is not None for r in readings),
        has_ecc=any(r.ecc_errors for r in readings),
        has_row_remapping=any(r.remapped_rows for r in readings),
    )


def _identity(gpu: dict[str, Any]) -> SimIdentity:
    cc = str(gpu.get("compute_capability") or "0.0")
    major, _, minor = cc.partition(".")
    return SimIdentity(
        uuid=str(gpu.get("uuid", "")),
        name=str(gpu.get("name", "")),
        pci_bus_id=str(gpu.get("pci_bus_id", "00000000:00:00.0")),
        serial=str(gpu.get("serial") or ""),
        vbios_version=str(gpu.get("vbios_version") or ""),
        compute_capability=(int(major or 0), int(minor or 0)),
        minor_number=int(gpu.get("index", 0)),
    )


class ReplayDevice:
    """``DeviceModel`` over one GPU's captured readings.

    Times are clock seconds; the replay starts at clock time ``start``.
    """

    def __init__(
        self,
        gpu: dict[str, Any],
        readings: Sequence[GpuReading],
        xids: Sequence[tuple[float, int]] = (),
        *,
        interval_s: float = 1.0,
        start: float = 0.0,
        loop: bool = True,
        specs: SpecTable | None = None,
    ) -> None:
        if not readings:
            raise ValueError(f"GPU {gpu.get('index')}: no readings to replay")
        self.readings = list(readings)
        self.spec = _spec_for(gpu, self.readings, specs or SpecTable())
        self.identity = _identity(gpu)
        self.start = start
        self.loop = loop
        self._times = [r.timestamp for r in self.readings]
        self._t0 = self._times[0]
        self._interval = interval_s
        self._period = self._times[-1] - self._t0 + interval_s
        self._xids = sorted(xids)
        # the schedule in clock time, published so the fake's event wait sleeps until the next one
        self.xids: list[tuple[float, int]] = [(start + x_t - self._t0, xid) for x_t, xid in self._xids]
        # activity windows: reading i covers (times[i-1], times[i]]; the first one covers one interval
        self._bounds = [self._t0 - interval_s, *self._times]
        values = [_activity_values(r) for r in self.readings]
        cum = [[0.0] * len(_ACTIVITY)]
        for i, v in enumerate(values):
            width = self._bounds[i + 1] - self._bounds[i]
            cum.append([c + x * width for c, x in zip(cum[-1], v, strict=True)])
        self._cum = cum
        self._values = values
        self._counter_values = [_counters(r) for r in self.readings]
        first, last = self._counter_values[0], self._counter_values[-1]
        self._counter_gain = tuple(b - a for a, b in zip(first, last, strict=True))  # growth per loop

    # -- time mapping -------------------------------------------------------------------------

    def _local(self, t: float) -> tuple[int, float]:
        """(loop number, capture time) for clock time ``t``."""
        u = max(0.0, t - self.start)
        if not self.loop:
            return 0, self._t0 + min(u, self._period - self._interval)
        n = math.floor(u / self._period)
        return n, self._t0 + (u - n * self._period)

    def _index(self, v: float) -> int:
        return max(0, bisect.bisect_right(self._times, v + 1e-9) - 1)

    # -- DeviceModel --------------------------------------------------------------------------

    def snapshot(self, t: float) -> DeviceSnapshot:
        n, v = self._local(t)
        i = self._index(v)
        r = self.readings[i]
        counters = self._counter_at(n, v, i)
        energy, rest = counters[0], counters[1:]
        violations = {
            _VIOLATION_IDS[name]: int(rest[j])
            for j, name in enumerate(_VIOLATION_IDS)
            if name in r.violation_ns
        }
        flows = rest[len(_VIOLATION_IDS) :]
        processes = [(p.pid, int(p.used_memory_bytes or 0)) for p in r.processes or []]
        return DeviceSnapshot(
            t=t,
            lost=r.status == DeviceStatus.LOST,
            sm_clock_mhz=(r.sm_clock_hz or 0.0) / 1e6,
            memory_clock_mhz=(r.memory_clock_hz or 0.0) / 1e6,
            graphics_clock_mhz=(r.graphics_clock_hz or r.sm_clock_hz or 0.0) / 1e6,
            app_sm_clock_mhz=(r.sm_clock_app_hz or 0.0) / 1e6,
            app_memory_clock_mhz=(r.memory_clock_app_hz or 0.0) / 1e6,
            power_average_mw=(r.power_watts or 0.0) * 1000.0,
            power_instant_mw=(
                r.power_instant_watts if r.power_instant_watts is not None else r.power_watts or 0.0
            )
            * 1000.0,
            energy_mj=int(energy),
            power_limit_mw=(r.power_limit_watts or 0.0) * 1000.0,
            power_default_limit_mw=(r.power_default_limit_watts or r.power_limit_watts or 0.0) * 1000.0,
            power_min_limit_mw=(r.power_min_limit_watts or 0.0) * 1000.0,
            power_max_limit_mw=(r.power_max_limit_watts or r.power_limit_watts or 0.0) * 1000.0,
            temperature_gpu_c=r.temperatures_celsius.get("gpu", 0.0),
            temperature_memory_c=r.temperatures_celsius.get("memory"),
            thresholds_c={
                _THRESHOLD_IDS[k]: v
                for k, v in r.temperature_thresholds_celsius.items()
                if k in _THRESHOLD_IDS
            },
            fan_speeds_pct=[100.0 * r.fan_speed_ratios[k] for k in sorted(r.fan_speed_ratios)],
            performance_state=r.performance_state if r.performance_state is not None else 32,
            clock_event_reasons=r.clock_event_reasons or 0,
            supported_clock_event_reasons=r.supported_clock_event_reasons or 0,
            violation_ns=violations,
            memory_total_bytes=r.memory_total_bytes or self.spec.memory_bytes,
            memory_used_bytes=r.memory_used_bytes or 0,
            memory_reserved_bytes=r.memory_reserved_bytes or 0,
            pcie_tx_bytes=int(flows[0]),
            pcie_rx_bytes=int(flows[1]),
            pcie_replay_count=r.pcie_replay_count or 0,
            nvlink_tx_bytes=int(flows[2]),
            nvlink_rx_bytes=int(flows[3]),
            ecc_volatile_corrected=r.ecc_errors.get(("volatile", "corrected"), 0),
            ecc_volatile_uncorrected=r.ecc_errors.get(("volatile", "uncorrected"), 0),
            ecc_aggregate_corrected=r.ecc_errors.get(("aggregate", "corrected"), 0),
            ecc_aggregate_uncorrected=r.ecc_errors.get(("aggregate", "uncorrected"), 0),
            retired_pages_sbe=r.retired_pages.get("single_bit_ecc", 0),
            retired_pages_dbe=r.retired_pages.get("double_bit_ecc", 0),
            retired_pages_pending=bool(r.retired_pages_pending),
            remapped_rows_corrected=r.remapped_rows.get("corrected", 0),
            remapped_rows_uncorrected=r.remapped_rows.get("uncorrected", 0),
            remapped_rows_pending=bool(r.remapped_rows.get("pending", 0)),
            remapped_rows_failure=bool(r.remapped_rows.get("failure", 0)),
            processes=processes,
            process_sm_pct={p.pid: 100.0 * p.sm_ratio for p in r.processes or [] if p.sm_ratio is not None},
            xids=[(self.start + x_t - self._t0, xid) for x_t, xid in self._xids if n > 0 or x_t <= v],
        )

    def activity(self, t0: float, t1: float) -> Activity:
        if t1 <= t0:
            _, v = self._local(t0)
            return Activity(*self._values[self._index(v)])
        a = self._integral(t0)
        b = self._integral(t1)
        span = t1 - t0
        return Activity(*[min(1.0, max(0.0, (y - x) / span)) for x, y in zip(a, b, strict=True)])

    # -- helpers ------------------------------------------------------------------------------

    def _counter_at(self, n: int, v: float, i: int) -> tuple[float, ...]:
        cur = self._counter_values[i]
        if i + 1 < len(self.readings):
            nxt = self._counter_values[i + 1]
            t_a, t_b = self._times[i], self._times[i + 1]
            x = (v - t_a) / (t_b - t_a) if t_b > t_a else 0.0
            cur = tuple(c + (d - c) * max(0.0, min(1.0, x)) for c, d in zip(cur, nxt, strict=True))
        return tuple(c + n * g for c, g in zip(cur, self._counter_gain, strict=True))

    def _integral(self, t: float) -> list[float]:
        """Activity-seconds up to clock time ``t``, per field (only differences matter).

        Replay time 0 is the capture's first reading, whose window lies one interval before it,
        hence the shift by one interval."""
        u = t - self.start + self._interval
        full = self._cum[-1]
        span = self._bounds[-1] - self._bounds[0]
        if u <= 0:
            return [0.0] * len(_ACTIVITY)
        if self.loop:
            n = math.floor(u / span)
            rem = u - n * span
        else:
            n, rem = 0, min(u, span)
        v = self._bounds[0] + rem
        j = max(0, min(len(self._values) - 1, bisect.bisect_right(self._bounds, v) - 1))
        part = [c + x * (v - self._bounds[j]) for c, x in zip(self._cum[j], self._values[j], strict=True)]
        return [n * f + p for f, p in zip(full, part, strict=True)]


def replay_models(
    capture: Capture | str | Path, *, start: float = 0.0, loop: bool = True, specs: SpecTable | None = None
) -> list[ReplayDevice]:
    cap = capture if isinstance(capture, Capture) else read_capture(capture)
    interval = float(cap.header.get("interval_s") or 1.0)
    models = []
    for gpu in sorted(cap.identities, key=lambda g: int(g["index"])):
        index = int(gpu["index"])
        models.append(
            ReplayDevice(
                gpu,
                cap.readings[index],
                cap.xids.get(index, ()),
                interval_s=interval,
                start=start,
                loop=loop,
                specs=specs,
            )
        )
    return models


class ReplayHostSource:
    """A replay holds no host side: host readings carry only the time (host series stay absent)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def read(self, gpu_pids: dict[int, tuple[int, ...]]) -> HostReading:
        return HostReading(timestamp=self.clock.now())
