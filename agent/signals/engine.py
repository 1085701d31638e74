"""The signal engine the sampler calls each tick: one ``IntervalSignals`` per GPU per interval.

It keeps the little state deltas need (the previous host reading per GPU, the pids each GPU
was last seen with, each GPU's spec) and delegates every rule to the small modules beside it.
"""

from __future__ import annotations

import logging

from agent.model import DeviceStatus, GpuIdentity, GpuReading, HostReading, IntervalSignals, ProcessStats
from agent.signals import accounting, mfu, starvation, throttling
from agent.signals.diagnosis import EvidenceProvider
from agent.signals.reported import ReportedFlops, node_peak
from agent.signals.settings import SignalSettings
from agent.snapshot import CounterKey
from agent.specs import GpuSpec, SpecTable

log = logging.getLogger(__name__)

THERMAL_HEADROOM = "gpulse_gpu_thermal_headroom_celsius"
POWER_HEADROOM = "gpulse_gpu_power_headroom_watts"
# One key object for every tick and GPU: the renderer compares a GPU's keys by identity first.
_THERMAL_KEY: CounterKey = (THERMAL_HEADROOM, ())
_POWER_KEY: CounterKey = (POWER_HEADROOM, ())


class _GpuState:
    __slots__ = ("clock_hz", "host", "host_prev", "last_shares", "pids", "verdict")

    def __init__(self) -> None:
        # The last two distinct host readings: the starvation cause is judged between them, and only
        # when an interval has not-executing time (most intervals of a busy GPU have none).
        self.host: HostReading | None = None
        self.host_prev: HostReading | None = None
        self.verdict: starvation.Verdict | None = None  # for (host_prev, host), once computed
        self.pids: frozenset[int] = frozenset()  # compute pids NVML listed at the last reading
        self.clock_hz: float | None = None  # the SM clock kernels last ran at (see mfu.active_clock_hz)
        self.last_shares: dict[str, float] = {}  # state shares of the last interval read OK


# (host_prev, host, {pids of an owner tree: its verdict between those host readings})
_Verdicts = tuple[HostReading | None, HostReading, dict[tuple[int, ...], starvation.Verdict]]
_NOT_STARVED = starvation.Verdict(starvation.STARVED_OTHER)  # never booked: the GPU executed all the time


def _halves(dt: float, shares: dict[str, float]) -> dict[str, float]:
    out = {state: share * dt / 2 for state, share in shares.items() if state != "unavailable"}
    out["unavailable"] = dt - sum(out.values())
    return out


class SignalEngine:
    def __init__(self, settings: SignalSettings, specs: SpecTable) -> None:
        self.settings = settings
        self.specs = specs
        self._specs: dict[int, GpuSpec] = {}
        self._peaks: dict[int, dict[CounterKey, float]] = {}  # static per GPU: built once, not per tick
        self._names: dict[int, str] = {}
        self._warned: set[str] = set()
        self._gpus: dict[int, _GpuState] = {}
        self._trees: tuple[HostReading, dict[int, dict[int, ProcessStats]]] | None = None  # per host reading
        # (host_prev, host, {pids of an owner tree, in order: its verdict}): GPUs driven by one process
        # tree (one job on all of a node's GPUs) share one judgement of that tree per host reading.
        self._verdicts: _Verdicts | None = None
        # (host reading, pid -> gpus), rebuilt once per host reading
        self._pid_map: tuple[HostReading, dict[int, tuple[int, ...]]] | None = None
        # Other features append (gpu index, window seconds) -> evidence text for the diagnosis,
        # e.g. the profiler's hottest function of a starved GPU's workers.
        self.evidence_providers: list[EvidenceProvider] = []
        self.reports = ReportedFlops(settings.report_absurd_factor, settings.report_ttl_seconds,
                                     self._node_peak)

    # --- identity and specs ----------------------------------------------------------
    def set_identity(self, index: int, identity: GpuIdentity) -> None:
        """Called once per GPU (and again if it changes): the device name selects its spec."""
        self._names[index] = identity.name
        spec = self.specs.for_device(identity.name)
        if spec is not None:
            self._specs[index] = spec
            self._peaks[index] = mfu.peak_gauges(spec)
            return
        self._specs.pop(index, None)
        self._peaks.pop(index, None)
        if identity.name not in self._warned:
            self._warned.add(identity.name)
            key = identity.name.replace(" ", "-")
            log.warning(
                "GPU %d (%r) is not in the spec table: no peak FLOP/s, estimated FLOPs or MFU for it. "
                "Add it under the config key specs.%s with match, peak_clock_mhz, peak_flops "
                "{precision: FLOP/s} and memory_bandwidth_bytes_per_second.", index, identity.name, key)

    def spec(self, index: int) -> GpuSpec | None:
        return self._specs.get(index)

    def _node_peak(self) -> float:
        return node_peak([max(s.peak_flops.values(), default=0.0) if (s := self._specs.get(i)) else None
                          for i in self._names])

    # --- per interval ----------------------------------------------------------------
    def interval(self, index: int, prev: GpuReading | None, cur: GpuReading, host: HostReading | None,
                 dt: float) -> IntervalSignals:
        gpu = self._gpus.get(index)
        if gpu is None:
            gpu = self._gpus[index] = _GpuState()
        sig = IntervalSignals(dt=dt)
        self._observe_host(gpu, host)
        if dt <= 0:
            return sig
        was_ok = prev is not None and prev.status is DeviceStatus.OK
        if cur.status is not DeviceStatus.OK:
            # It failed somewhere in the interval: half to what it was doing, half unavailable
            # (the least expected error without knowing when). A longer outage is all unavailable.
            if was_ok and gpu.last_shares:
                sig.state_seconds = _halves(dt, gpu.last_shares)
            else:
                sig.state_seconds = accounting.whole(dt, "unavailable")
            gpu.last_shares = {}
            return sig
        if cur.processes is not None:
            gpu.pids = frozenset(p.pid for p in cur.processes)
        sig.throttle_seconds = throttling.throttle_seconds(prev, cur, dt)
        if self.reports.active:
            sig.reported_flops = self.reports.take(index, lambda pid: self._gpus_of(pid, host), cur.timestamp)
        before = gpu.clock_hz
        gpu.clock_hz = mfu.active_clock_hz(cur, before)
        clock = gpu.clock_hz if before is None or gpu.clock_hz is None else (before + gpu.clock_hz) / 2
        spec = self._specs.get(index)
        if spec is not None:
            clock_mhz = clock / 1e6 if clock else None
            sig.estimated_flops = mfu.estimate_flops(cur, clock_mhz, spec, self.settings, dt)
            sig.estimated_dram_bytes = mfu.estimate_dram_bytes(cur, spec, dt)
        self._book(index, gpu, sig, cur, dt, clock)
        gpu.last_shares = {state: seconds / dt for state, seconds in sig.state_seconds.items()}
        if prev is not None and not was_ok:  # it came back within the interval
            sig.state_seconds = _halves(dt, gpu.last_shares)
        return sig

    def _book(self, index: int, gpu: _GpuState, sig: IntervalSignals, cur: GpuReading, dt: float,
              clock_hz: float | None) -> None:
        """State seconds, starvation evidence and clock lost of one interval read OK."""
        e, source = accounting.executing_fraction(cur, self.settings)
        if e is None:  # no activity source at all: we cannot say what it did
            sig.state_seconds = accounting.whole(dt, "unavailable")
            return
        sig.executing_ratio, sig.executing_source = e, source
        if not accounting.is_assigned(cur, e, self.settings):
            sig.state_seconds = accounting.whole(dt, "idle")
            return
        fractions = throttling.throttle_fractions(sig.throttle_seconds, dt, cur,
                                                  self.settings.hw_slowdown_thermal_margin_celsius)
        shares = accounting.executing_shares(e, fractions, accounting.is_memory_bound(cur, e, self.settings))
        cause = self._cause(index, gpu) if e < 1.0 else _NOT_STARVED
        sig.state_seconds = accounting.split(dt, e, shares, cause.state)
        if sig.state_seconds.get(cause.state, 0.0) > 0:
            sig.starvation_evidence = cause.evidence
        sig.clock_lost_seconds = throttling.clock_lost_seconds(e * dt, clock_hz, cur.sm_clock_max_hz)

    def _observe_host(self, gpu: _GpuState, host: HostReading | None) -> None:
        last = gpu.host
        if host is None or host is last or (last is not None and host.timestamp <= last.timestamp):
            return  # no new host reading this tick: the last cause stands
        gpu.host_prev, gpu.host, gpu.verdict = gpu.host, host, None

    def _cause(self, index: int, gpu: _GpuState) -> starvation.Verdict:
        """Why GPU ``index`` is not executing, between its last two host readings (computed once)."""
        if gpu.host is None:
            return starvation.Verdict(starvation.STARVED_OTHER, "no host reading")
        if gpu.verdict is None:
            if self._trees is None or self._trees[0] is not gpu.host:
                self._trees = (gpu.host, starvation.owner_trees(gpu.host))
            tree = self._trees[1].get(index, {})
            verdicts = self._verdicts
            if verdicts is None or verdicts[0] is not gpu.host_prev or verdicts[1] is not gpu.host:
                verdicts = self._verdicts = (gpu.host_prev, gpu.host, {})
            # The verdict depends on the tree's processes (the same objects for the same pids within
            # one host reading) and their order (the CPU sums), not on the GPU.
            key = tuple(tree)
            verdict = verdicts[2].get(key)
            if verdict is None:
                verdict = starvation.classify(index, gpu.host_prev, gpu.host, self.settings, tree)
                verdicts[2][key] = verdict
            gpu.verdict = verdict
        return gpu.verdict

    def _gpus_of(self, pid: int, host: HostReading | None) -> tuple[int, ...]:
        """GPUs a reported pid uses: its host process (host pid or innermost nspid), else NVML's lists."""
        if host is not None:
            if self._pid_map is None or self._pid_map[0] is not host:
                mapping: dict[int, tuple[int, ...]] = {}
                for p in host.processes.values():
                    if p.gpu_indices:
                        mapping[p.pid] = p.gpu_indices
                        if p.nspids and p.nspids[-1] != p.pid:
                            mapping.setdefault(p.nspids[-1], p.gpu_indices)
                self._pid_map = (host, mapping)
            found = self._pid_map[1].get(pid)
            if found:
                return found
        return tuple(sorted(i for i, g in self._gpus.items() if pid in g.pids))

    # --- gauges ----------------------------------------------------------------------
    def gauges(self, index: int, reading: GpuReading) -> dict[CounterKey, float]:
        out = dict(self._peaks.get(index, {}))
        if reading.status is DeviceStatus.OK:
            thermal = throttling.thermal_headroom(reading)
            if thermal is not None:
                out[_THERMAL_KEY] = thermal
            power = throttling.power_headroom(reading)
            if power is not None:
                out[_POWER_KEY] = power
        return out
