"""Device physics: power, clocks, temperature and their limiters, per modelled GPU.

Per step of ``DT`` simulated seconds (advanced lazily, up to the time asked for):

* **power** = idle power (+ a context share while a process holds the GPU at full clocks)
  + busy fraction × (TDP − idle) × (k_sm × (f / f_max)^2.2 + k_mem). ``k_sm``/``k_mem``
  come from the workload (training draws ~90 % of TDP at full clock, decode ~70 %);
  the SM part scales with f·V², close to f^2.2 near the top of the V/f curve.
* **power cap** (``SwPowerCap``): when the power at the demanded clock would exceed the
  enforced limit, the controller solves for the clock that meets it; it drops at once
  and recovers with a 0.3 s time constant.
* **temperature**: first order, ``dT/dt = (ambient + R·P − T) / τ``, integrated exactly
  per step. A cooling fault multiplies R.
* **thermal limiters**: at the GPU max operating temperature (``gpu_max``) the SW thermal
  controller (``SwThermalSlowdown``) holds the temperature one degree under it, using
  the power that balances the cooling plus a proportional correction; it slews at
  400 MHz/s, so a sudden cooling fault overshoots to the HW slowdown threshold
  (``slowdown``), where the clock is halved (``HwThermalSlowdown`` + ``HwSlowdown``)
  until the temperature is 2 °C back under it.
* clocks are quantised to 15 MHz bins (the V/f table's granularity on recent parts).
* violation counters (NVML fields 74, 78, 81, 269, 270, 271) add the step's length in
  ns while their reason holds; energy adds P·dt (mJ); work done adds the pipe's
  activity × dense peak × f / f_peak.

Everything is a deterministic function of the scenario and seed: sensor noise comes
from a counter-based hash of (seed, GPU, step), not from the order of calls.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from agent.sim.device import Activity, DeviceSnapshot, SimIdentity
from agent.sim.scenario import Event, GpuEntry
from agent.sim.truth import GpuTruth
from agent.sim.workload import Segment, Timeline, Workload
from agent.specs import GpuSpec

DT = 0.05  # physics step, simulated seconds
POWER_EXP = 2.2
CLOCK_BIN_MHZ = 15.0
POWER_UP_TAU_S = 0.3
THERMAL_SLEW_MHZ_S = 400.0
THERMAL_RECOVER_MHZ_S = 150.0
THERMAL_KP_W_PER_C = 15.0
HW_RELEASE_C = 2.0
LONG_WAIT_IDLE_S = 1.0  # a wait longer than this drops the clocks to idle (GpuIdle)
HISTORY_S = 30.0  # steps kept for readings that arrive late (other threads, slow callers)

# Clock-event reason bits (nvmlClocksEventReason*).
GPU_IDLE = 0x1
SW_POWER_CAP = 0x4
HW_SLOWDOWN = 0x8
SW_THERMAL = 0x20
HW_THERMAL = 0x40
HW_POWER_BRAKE = 0x80
SUPPORTED_REASONS = 0x1FF
REASON_NAMES: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# NVML field ids of the violation counters (cumulative ns) and the reason bit each follows.
FI_POWER, FI_SYNC_BOOST, FI_BOARD_LIMIT, FI_LOW_UTIL, FI_RELIABILITY, FI_BASE_CLOCKS = 74, 76, 77, 78, 79, 81
FI_SW_THERMAL, FI_HW_THERMAL, FI_HW_POWER_BRAKE = 269, 270, 271
VIOLATION_FIELDS: tuple[int, ...] = (
    FI_POWER,
    FI_SYNC_BOOST,
    FI_BOARD_LIMIT,
    FI_LOW_UTIL,
    FI_RELIABILITY,
    FI_BASE_CLOCKS,
    FI_SW_THERMAL,
    FI_HW_THERMAL,
    FI_HW_POWER_BRAKE,
)
THROTTLE_POWER = SW_POWER_CAP | HW_POWER_BRAKE
THROTTLE_THERMAL = SW_THERMAL | HW_THERMAL


@dataclass(frozen=True)
class SimParams:
    """Simulation-only figures per model (the spec table holds the datasheet ones).

    Idle powers, base/idle clocks and temperature thresholds are typical ``nvidia-smi -q``
    values for these parts as recalled from public output; thermal resistances are chosen
    so that a fully loaded part settles in the 60s-70s °C at 30 °C inlet. Not measured.
    """

    idle_w: float
    context_w: float  # a process holds the GPU at full clocks but runs nothing
    r_c_per_w: float  # thermal resistance to the inlet air, °C/W
    tau_s: float = 25.0
    ambient_c: float = 30.0
    shutdown_c: float = 92.0
    slowdown_c: float = 89.0  # HW slowdown starts
    gpu_max_c: float = 87.0  # SW thermal slowdown holds under this
    mem_max_c: float | None = 95.0  # None: no memory sensor (GDDR parts)
    idle_clock_mhz: float = 345.0
    min_clock_mhz: float = 210.0
    base_clock_mhz: float = 1590.0


SIM_PARAMS: dict[str, SimParams] = {
    "H100-SXM": SimParams(idle_w=72, context_w=45, r_c_per_w=0.065, base_clock_mhz=1590),
    "H200-SXM": SimParams(idle_w=78, context_w=50, r_c_per_w=0.065, base_clock_mhz=1590),
    "H100-PCIE": SimParams(idle_w=48, context_w=30, r_c_per_w=0.13, base_clock_mhz=1125),
    "H100-NVL": SimParams(idle_w=60, context_w=35, r_c_per_w=0.11, base_clock_mhz=1080),
    "B200": SimParams(
        idle_w=140,
        context_w=70,
        r_c_per_w=0.045,
        base_clock_mhz=1665,
        slowdown_c=90,
        shutdown_c=95,
        gpu_max_c=88,
    ),
    "A100-SXM-80GB": SimParams(
        idle_w=58, context_w=30, r_c_per_w=0.10, gpu_max_c=85, idle_clock_mhz=210, base_clock_mhz=1275
    ),
    "A100-SXM-40GB": SimParams(
        idle_w=55, context_w=30, r_c_per_w=0.10, gpu_max_c=85, idle_clock_mhz=210, base_clock_mhz=1095
    ),
    "A100-PCIE-80GB": SimParams(
        idle_w=45, context_w=25, r_c_per_w=0.14, gpu_max_c=85, idle_clock_mhz=210, base_clock_mhz=1065
    ),
    "A100-PCIE-40GB": SimParams(
        idle_w=38, context_w=22, r_c_per_w=0.17, gpu_max_c=85, idle_clock_mhz=210, base_clock_mhz=765
    ),
    "L40S": SimParams(
        idle_w=36,
        context_w=40,
        r_c_per_w=0.12,
        shutdown_c=98,
        slowdown_c=95,
        gpu_max_c=90,
        mem_max_c=None,
        idle_clock_mhz=210,
        base_clock_mhz=1110,
    ),
    "L4": SimParams(
        idle_w=16,
        context_w=10,
        r_c_per_w=0.55,
        shutdown_c=96,
        slowdown_c=93,
        gpu_max_c=90,
        mem_max_c=None,
        idle_clock_mhz=210,
        base_clock_mhz=795,
    ),
    "A10G": SimParams(
        idle_w=25,
        context_w=20,
        r_c_per_w=0.28,
        shutdown_c=98,
        slowdown_c=95,
        gpu_max_c=90,
        mem_max_c=None,
        idle_clock_mhz=210,
        base_clock_mhz=885,
    ),
    "T4": SimParams(
        idle_w=10,
        context_w=15,
        r_c_per_w=0.60,
        shutdown_c=96,
        slowdown_c=93,
        gpu_max_c=88,
        mem_max_c=None,
        idle_clock_mhz=300,
        base_clock_mhz=585,
    ),
    "V100-SXM2": SimParams(
        idle_w=42,
        context_w=20,
        r_c_per_w=0.13,
        shutdown_c=90,
        slowdown_c=87,
        gpu_max_c=83,
        idle_clock_mhz=135,
        base_clock_mhz=1290,
    ),
}


def sim_params(spec: GpuSpec) -> SimParams:
    known = SIM_PARAMS.get(spec.key)
    if known is not None:
        return known
    tdp = spec.tdp_watts or 300.0  # a user-defined model: scale from its TDP
    return SimParams(
        idle_w=0.12 * tdp,
        context_w=0.06 * tdp,
        r_c_per_w=40.0 / (0.85 * tdp),
        base_clock_mhz=0.75 * (spec.max_sm_clock_mhz or 1500),
    )


_MASK = (1 << 64) - 1


def noise(key: int, k: int) -> float:
    """Uniform in [-1, 1), a pure function of (key, k): splitmix64."""
    z = (key + (k + 1) * 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return z / 2.0**63 - 1.0


def mix(*parts: int) -> int:
    key = 0x1234567
    for p in parts:
        key = int(noise(key ^ (p & _MASK), p) * 2**62) & _MASK
    return key


_STEPS_PER_S = round(1.0 / DT)
_NOISE_N = 8192  # sensor noise repeats after this many steps (~7 simulated minutes)


def _noise_table(key: int) -> list[float]:
    return [noise(key, i) for i in range(_NOISE_N)]


class _Step:
    """State over one step [t, t + DT): levels, and counters at the step's start and end."""

    __slots__ = (
        "energy0",
        "flow0",
        "flow1",
        "k",
        "mem_temp",
        "memory",
        "power",
        "power_limit",
        "reasons",
        "segment",
        "sm_clock",
        "sm_pct",
        "temp",
        "viol0",
        "vmask",
    )

    k: int
    sm_clock: float
    power: float
    power_limit: float
    temp: float
    mem_temp: float
    reasons: int
    energy0: float
    viol0: tuple[float, ...]
    vmask: int  # bit j set: VIOLATION_FIELDS[j] grows during this step
    flow0: tuple[float, float, float]
    flow1: tuple[float, float, float]
    segment: Segment | None  # the segment whose process holds the GPU; None: no process
    memory: int
    sm_pct: float


@dataclass(frozen=True)
class _Health:
    at: float
    ecc_uncorrected: int = 0
    rows_uncorrected: int = 0
    rows_pending: bool | None = None


class SimDevice:
    """One modelled GPU: a ``DeviceModel`` (``agent.sim.device``) driven by a timeline and events.

    Times in the protocol (``snapshot(t)``, ``activity(t0, t1)``) are clock seconds; the
    scenario started at clock time ``start``.
    """

    def __init__(
        self,
        *,
        index: int,
        spec: GpuSpec,
        identity: SimIdentity,
        entry: GpuEntry,
        timeline: Timeline,
        events: list[Event],
        seed: int,
        start: float = 0.0,
        truth: GpuTruth | None = None,
        pid_for: Callable[[Segment], int] | None = None,
        params: SimParams | None = None,
    ) -> None:
        self.index = index
        self.spec = spec
        self.identity = identity
        self.timeline = timeline
        self.start = start
        self.truth = truth
        self.params = params or sim_params(spec)
        if entry.ambient_c is not None:
            self.params = replace(self.params, ambient_c=entry.ambient_c)
        self._pid_for = pid_for or (lambda seg: 1000 + 100 * index + seg.number)
        self._lock = threading.Lock()

        p = self.params
        self._f_max = spec.max_sm_clock_mhz
        self._dyn_w = max(1.0, spec.tdp_watts - p.idle_w)
        self._limit_w = entry.power_limit_w if entry.power_limit_w is not None else spec.tdp_watts
        self._r = p.r_c_per_w
        self._decay = math.exp(-DT / p.tau_s)
        self._power_up = 1.0 - math.exp(-DT / POWER_UP_TAU_S)
        self._noise_t = _noise_table(mix(seed, index, 1))
        self._noise_p = _noise_table(mix(seed, index, 2))
        self._energy_offset_j = (
            5.0e5 + (noise(mix(seed, index, 3), 0) + 1.0) * 5.0e6
        )  # driver loaded a while ago
        self._events = [e for e in events if e.gpu == index and e.kind in _PARAMETER_EVENTS]
        self._event_i = 0
        self._brakes = [
            (e.at_s, e.at_s + (e.seconds or 0.0))
            for e in events
            if e.gpu == index and e.kind == "power_brake"
        ]
        self._xids = sorted((e.at_s, e.xid) for e in events if e.gpu == index and e.kind == "xid" and e.xid)
        self._xid_times = [a for a, _ in self._xids]
        # the schedule in clock time, published so the fake's event wait sleeps until the next one
        self.xids: list[tuple[float, int]] = [(a + self.start, x) for a, x in self._xids]
        self._health = _health_steps([e for e in events if e.gpu == index])
        self._health_times = [h.at for h in self._health]
        self._unavailable = sorted(timeline.lost + timeline.hangs)

        # Controller and thermal state, carried from step to step.
        t_eq = p.ambient_c + self._r * p.idle_w
        self._temp = t_eq
        self._f_power = self._f_max
        self._f_thermal = self._f_max
        self._sw_thermal = False
        self._hw_thermal = False
        self._energy = 0.0
        self._viol_t: tuple[float, ...] = (0.0,) * len(VIOLATION_FIELDS)
        self._flow = (0.0, 0.0, 0.0)
        self._next_k = 0
        self._steps: deque[_Step] = deque(maxlen=int(HISTORY_S / DT))
        self._seg = timeline.segments[0]

    # -- DeviceModel --------------------------------------------------------------------------

    def activity(self, t0: float, t1: float) -> Activity:
        return self.timeline.activity(t0 - self.start, t1 - self.start)

    def snapshot(self, t: float) -> DeviceSnapshot:
        ts = t - self.start
        with self._lock:
            st = self._step_at(ts)
            last = st.k - self._steps[0].k
            recent = [self._steps[j] for j in range(max(0, last - _STEPS_PER_S), last + 1)]
        frac = max(0.0, ts - st.k * DT)
        energy = st.energy0 + st.power * frac
        x = frac / DT
        flows = [a + (b - a) * x for a, b in zip(st.flow0, st.flow1, strict=True)]
        violations = {
            fid: int(v0 + (frac * 1e9 if st.vmask >> j & 1 else 0.0))
            for j, (fid, v0) in enumerate(zip(VIOLATION_FIELDS, st.viol0, strict=True))
        }
        p = self.params
        thresholds = {0: p.shutdown_c, 1: p.slowdown_c, 3: p.gpu_max_c}
        if p.mem_max_c is not None:
            thresholds[2] = p.mem_max_c
        health = self._health_at(ts)
        xid_n = bisect.bisect_right(self._xid_times, ts)
        pids = [(self._pid_for(st.segment), st.memory)] if st.segment is not None else []
        return DeviceSnapshot(
            t=t,
            lost=self.timeline.is_lost(ts),
            hang_until=_abs(self.timeline.hang_until(ts), self.start),
            sm_clock_mhz=st.sm_clock,
            graphics_clock_mhz=st.sm_clock,
            memory_clock_mhz=self.spec.max_memory_clock_mhz,
            app_sm_clock_mhz=self._f_max,
            app_memory_clock_mhz=self.spec.max_memory_clock_mhz,
            power_average_mw=self._average_power(recent, ts) * 1000.0,
            power_instant_mw=st.power * 1000.0,
            energy_mj=int((self._energy_offset_j + energy) * 1000.0),
            power_limit_mw=st.power_limit * 1000.0,
            power_default_limit_mw=self.spec.tdp_watts * 1000.0,
            power_min_limit_mw=self.spec.min_power_limit_watts * 1000.0,
            power_max_limit_mw=self.spec.tdp_watts * 1000.0,
            temperature_gpu_c=st.temp,
            temperature_memory_c=st.mem_temp if p.mem_max_c is not None else None,
            thresholds_c=thresholds,
            fan_speeds_pct=[],  # data-centre parts are passively cooled: NVML reports no fans
            performance_state=0,
            clock_event_reasons=st.reasons,
            supported_clock_event_reasons=SUPPORTED_REASONS,
            violation_ns=violations,
            memory_total_bytes=self.spec.memory_bytes,
            memory_used_bytes=st.memory,
            memory_reserved_bytes=int(self.spec.memory_bytes * 0.006),
            pcie_tx_bytes=int(flows[0]),
            pcie_rx_bytes=int(flows[1]),
            nvlink_tx_bytes=int(flows[2]),
            nvlink_rx_bytes=int(flows[2]),
            ecc_volatile_uncorrected=health.ecc_uncorrected,
            ecc_aggregate_uncorrected=health.ecc_uncorrected,
            remapped_rows_uncorrected=health.rows_uncorrected,
            remapped_rows_pending=bool(health.rows_pending),
            processes=pids,
            process_sm_pct={pid: st.sm_pct for pid, _ in pids},
            xids=[(a + self.start, x) for a, x in self._xids[:xid_n]],
        )

    # -- stepping -----------------------------------------------------------------------------

    def advance_to(self, t: float) -> None:
        """Run the physics through clock time ``t`` (readings do this themselves)."""
        with self._lock:
            self._step_at(t - self.start - 1e-9)

    @property
    def stepped_until(self) -> float:
        """Scenario time up to which the physics (and truth) has run."""
        return self._next_k * DT

    def finish(self, end_s: float) -> None:
        """Run to scenario time ``end_s`` and close the truth there."""
        with self._lock:
            if end_s > 0:
                self._step_at(end_s - 1e-9)
            if self.truth is not None:
                self.truth.close()

    def _step_at(self, ts: float) -> _Step:
        k = max(0, math.floor(ts / DT + 1e-9))
        while self._next_k <= k:
            self._steps.append(self._step(self._next_k))
            self._next_k += 1
        first = self._steps[0].k
        if k < first:
            raise ValueError(
                f"GPU {self.index}: a reading at {ts:.3f} s is older than the "
                f"{HISTORY_S:.0f} s of physics kept (now at {self.stepped_until:.3f} s)"
            )
        return self._steps[k - first]

    def _step(self, k: int) -> _Step:
        p = self.params
        t0 = k * DT
        t1 = t0 + DT
        if self._event_i < len(self._events):
            self._apply_events(t0)
        seg = self._seg
        if not seg.start <= t0 < seg.end:
            seg = self._seg = self.timeline.segment_at(t0)
        wl = seg.workload
        lost = bool(self.timeline.lost) and self.timeline.is_lost(t0)

        # Work inside the step: compute seconds per workload (one, unless a segment ends inside it).
        works: list[tuple[Workload, float]]
        if wl is not None and seg.end >= t1:
            ct = wl.compute_time(seg.start, t1) - wl.compute_time(seg.start, t0)
            works = [(wl, ct)] if ct > 0 else []
        elif wl is None and seg.end >= t1:
            works = []
        else:
            works = self.timeline.compute_seconds(t0, t1)
        if len(works) == 1:
            w0, c0 = works[0]
            x = c0 / DT
            k_sm, k_mem, dram, sm_pct = (
                w0.k_sm * x,
                w0.k_mem * x,
                w0.levels.dram * x,
                100.0 * w0.levels.sm_active * x,
            )
        else:
            k_sm = sum(w.k_sm * c for w, c in works) / DT
            k_mem = sum(w.k_mem * c for w, c in works) / DT
            dram = sum(w.levels.dram * c for w, c in works) / DT
            sm_pct = 100.0 * sum(w.levels.sm_active * c for w, c in works) / DT

        has_process = wl is not None and not lost
        idle_clocks = (
            wl is None
            or lost
            or (wl.spec.wait_s >= LONG_WAIT_IDLE_S and wl.wait_elapsed(seg.start, t0) >= LONG_WAIT_IDLE_S)
        )
        f_max = self._f_max
        f_dem = p.idle_clock_mhz if idle_clocks else f_max
        base_w = p.idle_w + (0.0 if idle_clocks else p.context_w)
        if k == 0:  # the job has been running a while: start at its thermal equilibrium
            self._temp = p.ambient_c + self._r * min(self._limit_w, base_w + self._dyn_w * (k_sm + k_mem))

        # Power cap: the clock at which this step's power meets the enforced limit.
        f_cap = self._clock_for_power(self._limit_w, base_w, k_sm, k_mem)
        if f_cap < self._f_power:
            self._f_power = f_cap
        elif self._f_power < f_max:
            self._f_power += (min(f_cap, f_max) - self._f_power) * self._power_up

        # SW thermal: engage at gpu_max, hold one degree under it.
        temp = self._temp
        if temp >= p.gpu_max_c:
            self._sw_thermal = True
        if self._sw_thermal:
            target = p.gpu_max_c - 1.0
            hold_w = (target - p.ambient_c) / self._r - THERMAL_KP_W_PER_C * (temp - target)
            f_hold = self._clock_for_power(hold_w, base_w, k_sm, k_mem)
            self._f_thermal = max(
                self._f_thermal - THERMAL_SLEW_MHZ_S * DT,
                min(self._f_thermal + THERMAL_RECOVER_MHZ_S * DT, f_hold),
            )
            if self._f_thermal >= f_max and temp < target:
                self._sw_thermal = False
                self._f_thermal = f_max
        # HW thermal slowdown with hysteresis.
        if temp >= p.slowdown_c:
            self._hw_thermal = True
        elif self._hw_thermal and temp < p.slowdown_c - HW_RELEASE_C:
            self._hw_thermal = False
        brake = bool(self._brakes) and any(a <= t0 < b for a, b in self._brakes)

        f = min(f_dem, self._f_power)
        reasons = GPU_IDLE if idle_clocks else 0
        if self._f_power < f_dem - 1e-6:
            reasons |= SW_POWER_CAP
        if self._sw_thermal and self._f_thermal < f_dem - 1e-6:
            reasons |= SW_THERMAL
            f = min(f, self._f_thermal)
        if self._hw_thermal:
            reasons |= HW_THERMAL | HW_SLOWDOWN
        if brake:
            reasons |= HW_POWER_BRAKE | HW_SLOWDOWN
        if self._hw_thermal or brake:
            f *= 0.5
        if f < f_max:  # the V/f table's bins, counted down from the top
            f = max(p.min_clock_mhz, f_max - math.ceil((f_max - f) / CLOCK_BIN_MHZ - 1e-9) * CLOCK_BIN_MHZ)

        i = k % _NOISE_N
        power = base_w + self._dyn_w * (k_sm * (f / f_max) ** POWER_EXP + k_mem)
        power = power * (1.0 + 0.004 * self._noise_p[i]) + 0.5 * self._noise_p[-1 - i]
        temp_noise = 0.35 * self._noise_t[i]

        st = _Step()
        st.k = k
        st.sm_clock = f
        st.power = power
        st.power_limit = self._limit_w
        st.temp = temp + temp_noise
        st.mem_temp = temp + 3.0 + 6.0 * dram + temp_noise
        st.reasons = reasons
        st.energy0 = self._energy
        st.segment = seg if has_process else None
        st.memory = wl.memory_bytes if has_process and wl is not None else 0
        st.sm_pct = sm_pct

        # Integrate to the step's end.
        self._energy += power * DT
        vmask = _REASON_VIOLATIONS.get(reasons & _VIOLATION_BITS, 0) | (
            _BASE_BIT if not idle_clocks and f < p.base_clock_mhz else 0
        )
        st.viol0 = self._viol_t
        st.vmask = vmask
        if vmask:
            viol = list(self._viol_t)
            for j in range(len(viol)):
                if vmask >> j & 1:
                    viol[j] += DT * 1e9
            self._viol_t = tuple(viol)
        st.flow0 = self._flow
        if works:
            tx, rx, nv = self._flow
            for w, c in works:
                tx += w.pcie_tx_bps * c
                rx += w.pcie_rx_bps * c
                nv += w.nvlink_bps * c
            self._flow = (tx, rx, nv)
        st.flow1 = self._flow
        t_eq = p.ambient_c + self._r * power
        self._temp = t_eq + (temp - t_eq) * self._decay

        if self.truth is not None:
            self._record_truth(t0, t1, seg, reasons, f, works, lost)
        return st

    def _clock_for_power(self, limit_w: float, base_w: float, k_sm: float, k_mem: float) -> float:
        """The highest clock at which this step's power stays within ``limit_w``."""
        if k_sm <= 0:
            return self._f_max
        x = ((limit_w - base_w) / self._dyn_w - k_mem) / k_sm
        if x >= 1.0:
            return self._f_max
        if x <= 0:
            return self.params.min_clock_mhz
        return max(self.params.min_clock_mhz, self._f_max * x ** (1.0 / POWER_EXP))

    def _apply_events(self, t0: float) -> None:
        while self._event_i < len(self._events) and self._events[self._event_i].at_s <= t0 + 1e-9:
            ev = self._events[self._event_i]
            self._event_i += 1
            if ev.kind == "power_cap" and ev.watts is not None:
                self._limit_w = ev.watts
            elif ev.kind == "cooling_failure":
                self._r = self.params.r_c_per_w * ev.factor
            elif ev.kind == "cooling_restored":
                self._r = self.params.r_c_per_w

    def _average_power(self, recent: list[_Step], ts: float) -> float:
        """Mean power over the last second before ``ts`` (what nvmlDeviceGetPowerUsage reports on Hopper)."""
        lo = ts - 1.0
        total = span = 0.0
        for s in recent:
            a, b = max(lo, s.k * DT), min(ts, s.k * DT + DT)
            if b > a:
                total += s.power * (b - a)
                span += b - a
        return total / span if span > 0 else (recent[-1].power if recent else 0.0)

    def _health_at(self, ts: float) -> _Health:
        i = bisect.bisect_right(self._health_times, ts)
        return self._health[i - 1] if i else _Health(at=0.0)

    # -- truth --------------------------------------------------------------------------------

    def _record_truth(
        self,
        t0: float,
        t1: float,
        seg: Segment,
        reasons: int,
        f: float,
        works: list[tuple[Workload, float]],
        lost: bool,
    ) -> None:
        truth = self.truth
        assert truth is not None
        if reasons & THROTTLE_POWER:
            busy_state = "throttled_power"
        elif reasons & THROTTLE_THERMAL:
            busy_state = "throttled_thermal"
        else:
            busy_state = ""
        wl = seg.workload
        down = self._down_intervals(t0, t1) if self._unavailable else []
        if not down and seg.end >= t1 and (wl is None or wl.spec.wait_s <= 0):
            truth.state(t0, t1, "idle" if wl is None else (busy_state or wl.executing_state))
        elif not down and seg.end >= t1 and wl is not None:
            for a, b, computing in wl.phases(seg.start, t0, t1):
                truth.state(a, b, (busy_state or wl.executing_state) if computing else wl.starved_state)
        else:
            for a, b, piece, computing in self.timeline.phases(t0, t1):
                for lo, hi, unavailable in _split(a, b, down):
                    pw = piece.workload
                    if unavailable:
                        state = "unavailable"
                    elif pw is None:
                        state = "idle"
                    elif not computing:
                        state = pw.starved_state
                    else:
                        state = busy_state or pw.executing_state
                    truth.state(lo, hi, state)
        if not lost:
            names = _REASON_TUPLES.get(reasons)
            if names is None:
                names = _REASON_TUPLES[reasons] = tuple(n for bit, n in REASON_NAMES.items() if reasons & bit)
            truth.reasons(t0, t1, names)
        window = int(t0 / truth.window_s + 1e-9)
        flops = 0.0
        precision = peak = None
        for w, ct in works:
            peak = self.spec.peak_flops.get(w.precision)
            if peak:
                flops += w.pipe * ct * peak * f / self.spec.peak_clock_mhz
                precision = w.precision
        if precision is None and wl is not None and not lost:
            precision = wl.precision
            peak = self.spec.peak_flops.get(precision)
        truth.flops(window, flops, precision, peak)

    def _down_intervals(self, t0: float, t1: float) -> list[tuple[float, float]]:
        return [(a, b) for a, b in self._unavailable if a < t1 and b > t0]


_PARAMETER_EVENTS = {"power_cap", "cooling_failure", "cooling_restored"}


# Which violation counter follows which reason bit; the base-clock counter follows the clock itself.
_FIELD_REASON = {
    FI_POWER: SW_POWER_CAP,
    FI_SW_THERMAL: SW_THERMAL,
    FI_HW_THERMAL: HW_THERMAL,
    FI_HW_POWER_BRAKE: HW_POWER_BRAKE,
    FI_LOW_UTIL: GPU_IDLE,
}
_VIOLATION_BITS = SW_POWER_CAP | SW_THERMAL | HW_THERMAL | HW_POWER_BRAKE | GPU_IDLE
_BASE_BIT = 1 << VIOLATION_FIELDS.index(FI_BASE_CLOCKS)


def _violation_mask(reasons: int) -> int:
    mask = 0
    for j, fid in enumerate(VIOLATION_FIELDS):
        if _FIELD_REASON.get(fid, 0) & reasons:
            mask |= 1 << j
    return mask


_REASON_VIOLATIONS = {r: _violation_mask(r) for r in range(_VIOLATION_BITS + 1) if r & ~_VIOLATION_BITS == 0}
_REASON_TUPLES: dict[int, tuple[str, ...]] = {}


def _health_steps(events: list[Event]) -> list[_Health]:
    """Cumulative health counters after each ECC / row-remap event."""
    out: list[_Health] = []
    cur = _Health(at=0.0)
    for ev in sorted(events, key=lambda e: e.at_s):
        if ev.kind == "ecc_uncorrectable":
            cur = replace(cur, at=ev.at_s, ecc_uncorrected=cur.ecc_uncorrected + ev.count)
        elif ev.kind == "row_remap_pending":
            cur = replace(cur, at=ev.at_s, rows_uncorrected=cur.rows_uncorrected + 1, rows_pending=True)
        else:
            continue
        out.append(cur)
    return out


def _split(a: float, b: float, down: list[tuple[float, float]]) -> list[tuple[float, float, bool]]:
    """[a, b] cut into pieces flagged unavailable where they overlap ``down``."""
    if not down:
        return [(a, b, False)]
    pieces: list[tuple[float, float, bool]] = []
    t = a
    for lo, hi in sorted(down):
        lo, hi = max(lo, a), min(hi, b)
        if hi <= lo or hi <= t:
            continue
        if lo > t:
            pieces.append((t, lo, False))
        pieces.append((max(t, lo), hi, True))
        t = hi
    if t < b:
        pieces.append((t, b, False))
    return pieces


def _abs(ts: float | None, start: float) -> float | None:
    return None if ts is None else ts + start
