"""A steady modelled GPU: plausible, constant-load readings with tiny deterministic noise.

``SteadyDevice`` implements the ``DeviceModel`` protocol (``agent.sim.device``) without
physics: a workload that keeps the GPU ``busy`` of the time, with fixed tensor and DRAM
shares. Power is ``idle + activity x (TDP - idle)``, clocks sit near the maximum, the
temperature near 60 °C under load, energy is the exact integral of the reported power,
and one process holds most of the memory. Tests flip its fault toggles (``lost``,
``hang_until``, ``xids``) and may give it MIG devices (``mig_uuids=``); the physics
simulator provides richer models through the same protocol. Setting any public attribute
bumps ``revision`` so that ``FakeNvml`` serves the change at once, without waiting for the
clock to move; a change of ``xids`` also calls the callbacks given to ``watch_xids`` (the
fake's event wait sleeps until then, or until the next scheduled XID).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import uuid as uuidlib
from collections.abc import Callable, Sequence

from agent.nvml import consts as C
from agent.sim.device import Activity, DeviceSnapshot, SimIdentity
from agent.specs import GIB, GpuSpec

# PCI bus numbers of the eight GPUs on an HGX H100 board.
_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_VIOLATION_IDS = (74, 75, 76, 77, 78, 79, 81, 269, 270, 271)
_NOISE_PERIOD_S = 7.0  # sensor wobble period; the noise integrates to (almost) nothing over it


def steady_identity(spec: GpuSpec, index: int, seed: int = 0) -> SimIdentity:
    """A deterministic identity: UUID, serial and bus id derived from (seed, index)."""
    digest = hashlib.sha256(f"gpulse-{seed}-{spec.key}-{index}".encode()).digest()
    domain, bus = divmod(index, len(_HGX_BUSES))  # one PCI domain per eight GPUs keeps bus ids unique
    major, minor = (int(x) for x in (spec.compute_capability or "0.0").split("."))
    return SimIdentity(
        uuid=f"GPU-{uuidlib.UUID(bytes=digest[:16])}",
        name=spec.name,
        pci_bus_id=f"{domain:08X}:{_HGX_BUSES[bus]:02X}:00.0",
        serial=str(1650000000000 + int.from_bytes(digest[16:20], "big") % 10**9),
        vbios_version="96.00.99.00.01",
        compute_capability=(major, minor),
        minor_number=index,
    )


class SteadyDevice:
    """A ``DeviceModel`` with a constant workload. See the module docstring."""

    revision: int  # bumped on every change of a public attribute

    def __init__(
        self,
        spec: GpuSpec,
        index: int,
        *,
        busy: float = 0.85,
        tensor: float = 0.6,
        dram: float = 0.4,
        seed: int = 0,
        start: float = 0.0,
        fan_speeds_pct: Sequence[float] = (),
        pid: int | None = None,
        mig_uuids: Sequence[str] = (),
    ) -> None:
        object.__setattr__(self, "revision", 0)
        self._xid_watchers: list[Callable[[], None]] = []
        # (revision, value) of what depends on the public attributes only, not on time
        self._activity: tuple[int, Activity] | None = None
        self._snapshot_template: tuple[int, DeviceSnapshot] | None = None
        self.spec = spec
        self.index = index
        identity = steady_identity(spec, index, seed)
        # MIG devices by slot ("" = an empty slot): the fake NVML then reports MIG mode enabled
        self.identity = dataclasses.replace(identity, mig_uuids=tuple(mig_uuids)) if mig_uuids else identity
        self.busy = busy
        self.tensor = tensor
        self.dram = dram
        self.start = start
        self.fan_speeds_pct = list(fan_speeds_pct)
        self.pid = pid if pid is not None else 4100 + index
        # fault toggles, flipped by tests and demos
        self.lost = False
        self.hang_until: float | None = None
        self.xids: list[tuple[float, int]] = []
        self.ecc_corrected = 0
        self.ecc_uncorrected = 0
        self._phase = (
            int.from_bytes(hashlib.sha256(f"{seed}-{index}".encode()).digest()[:4], "big") % 6283
        ) / 1000
        self._energy0_mj = 1_000_000 * (1 + index)  # the counter started when the driver loaded, not at t=0

    def __setattr__(self, name: str, value: object) -> None:
        # every public change (a fault toggle, a new load) bumps `revision`, which tells the fake
        # NVML to drop the snapshot it cached for the current instant
        object.__setattr__(self, name, value)
        if not name.startswith("_") and name != "revision":
            object.__setattr__(self, "revision", getattr(self, "revision", 0) + 1)
            if name == "xids":
                for callback in list(getattr(self, "_xid_watchers", ())):
                    callback()

    def add_xid(self, t: float, xid: int) -> None:
        """Raise ``xid`` at clock time ``t`` (use this rather than appending to ``xids``)."""
        self.xids = sorted([*self.xids, (t, xid)])

    def watch_xids(self, callback: Callable[[], None]) -> None:
        """Have ``callback()`` called whenever ``xids`` is set (``add_xid`` sets it)."""
        self._xid_watchers.append(callback)

    # --------------------------------------------------------------- the load
    @property
    def load(self) -> float:
        """Share of dynamic power drawn: what the kernels do while they run, times how often they run."""
        return self.busy * (0.5 + 0.5 * max(self.tensor, self.dram))

    def _noise(self, t: float, amplitude: float, channel: int = 0) -> float:
        return amplitude * math.sin(2 * math.pi * t / _NOISE_PERIOD_S + self._phase + channel)

    def power_watts(self, t: float) -> float:
        idle = 0.1 * self.spec.tdp_watts
        return idle + self.load * (self.spec.tdp_watts - idle) + self._noise(t, 0.004 * self.spec.tdp_watts)

    def energy_joules(self, t: float) -> float:
        """Exactly the integral of ``power_watts`` since ``start``."""
        idle = 0.1 * self.spec.tdp_watts
        mean = idle + self.load * (self.spec.tdp_watts - idle)
        elapsed = max(0.0, t - self.start)
        amp, w = 0.004 * self.spec.tdp_watts, 2 * math.pi / _NOISE_PERIOD_S
        wobble = (
            amp
            / w
            * (math.cos(w * self.start + self._phase) - math.cos(w * (self.start + elapsed) + self._phase))
        )
        return mean * elapsed + wobble

    # --------------------------------------------------------------- DeviceModel
    def activity(self, t0: float, t1: float) -> Activity:
        # the same for every window until an attribute changes: made once per revision (a
        # read asks for about eight windows, and a frozen dataclass is slow to build)
        revision = self.revision  # read first: a change after this only makes the next call redo it
        cached = self._activity
        if cached is not None and cached[0] == revision:
            return cached[1]
        b = self.busy
        act = Activity(
            busy=b,
            sm_active=0.95 * b,
            sm_occupancy=0.45 * b,
            tensor=self.tensor * b,
            hmma=self.tensor * b,
            imma=0.0,
            dfma=0.0,
            dram=self.dram * b,
            fp16=0.05 * b,
            fp32=0.1 * b,
            fp64=0.0,
            memory_controller=0.9 * self.dram * b,
        )
        self._activity = (revision, act)
        return act

    def snapshot(self, t: float) -> DeviceSnapshot:
        spec = self.spec
        template = self._template()
        elapsed = max(0.0, t - self.start)
        power = self.power_watts(t)
        sm = spec.max_sm_clock_mhz - 15 + self._noise(t, 5, 1) if self.busy > 0 else 345.0
        temp = 32 + 0.055 * power * 700 / spec.tdp_watts + self._noise(t, 0.4, 2)
        nvlink_bytes = int(40e9 * self.busy * elapsed) if spec.has_nvlink else 0
        # a copy of the template with what moves with time replaced: copy.copy's work without its
        # overhead (the 48-argument constructor would cost more than all the arithmetic here)
        snap: DeviceSnapshot = object.__new__(DeviceSnapshot)
        fields = snap.__dict__
        fields.update(template.__dict__)
        fields.update(
            t=t,
            sm_clock_mhz=sm,
            graphics_clock_mhz=sm,
            power_average_mw=power * 1000,
            power_instant_mw=(power + self._noise(t * 3.1, 0.02 * spec.tdp_watts, 3)) * 1000,
            energy_mj=self._energy0_mj + int(self.energy_joules(t) * 1000),
            temperature_gpu_c=temp,
            temperature_memory_c=temp + 4 if template.temperature_memory_c is not None else None,
            pcie_tx_bytes=int(2e9 * self.busy * elapsed),
            pcie_rx_bytes=int(6e9 * self.busy * elapsed),
            nvlink_tx_bytes=nvlink_bytes,
            nvlink_rx_bytes=nvlink_bytes,
            # containers of its own: no two snapshots share mutable state
            thresholds_c=dict(template.thresholds_c),
            fan_speeds_pct=list(self.fan_speeds_pct),
            violation_ns=dict(template.violation_ns),
            processes=list(template.processes),
            process_sm_pct=dict(template.process_sm_pct),
            xids=[x for x in self.xids if x[0] <= t],
        )
        return snap

    def _template(self) -> DeviceSnapshot:
        """What the snapshot holds apart from the time-dependent values, made once per revision."""
        revision = self.revision  # read first, as in activity()
        cached = self._snapshot_template
        if cached is not None and cached[0] == revision:
            return cached[1]
        spec = self.spec
        busy = self.busy > 0
        hbm = spec.memory_bandwidth_bytes_per_second > 1e12
        used = int(0.72 * spec.memory_bytes) if busy else 0
        tdp_mw = spec.tdp_watts * 1000
        template = DeviceSnapshot(
            t=0.0,
            lost=self.lost,
            hang_until=self.hang_until,
            memory_clock_mhz=spec.max_memory_clock_mhz,
            app_sm_clock_mhz=spec.max_sm_clock_mhz,
            app_memory_clock_mhz=spec.max_memory_clock_mhz,
            power_limit_mw=tdp_mw,
            power_default_limit_mw=tdp_mw,
            power_min_limit_mw=spec.min_power_limit_watts * 1000,
            power_max_limit_mw=tdp_mw,
            temperature_memory_c=0.0 if hbm else None,  # HBM reports a memory temperature
            thresholds_c={
                C.THRESHOLD_SHUTDOWN: 92,
                C.THRESHOLD_SLOWDOWN: 89,
                C.THRESHOLD_MEM_MAX: 95,
                C.THRESHOLD_GPU_MAX: 87,
            },
            performance_state=0,
            clock_event_reasons=0 if busy else C.REASON_GPU_IDLE,
            supported_clock_event_reasons=0xFF,
            violation_ns=dict.fromkeys(_VIOLATION_IDS, 0),
            memory_total_bytes=spec.memory_bytes,
            memory_used_bytes=used,
            memory_reserved_bytes=int(0.6 * GIB) if spec.memory_bytes > 32 * GIB else int(0.3 * GIB),
            pcie_replay_count=0,
            ecc_volatile_corrected=self.ecc_corrected,
            ecc_volatile_uncorrected=self.ecc_uncorrected,
            ecc_aggregate_corrected=self.ecc_corrected,
            ecc_aggregate_uncorrected=self.ecc_uncorrected,
            processes=[(self.pid, used - int(0.5 * GIB))] if busy else [],
            process_sm_pct={self.pid: 100.0 * self.busy} if busy else {},
        )
        self._snapshot_template = (revision, template)
        return template


def steady_fleet(spec: GpuSpec, count: int, *, seed: int = 0, **kwargs: float) -> list[SteadyDevice]:
    """``count`` steady GPUs of one model, e.g. the default demo's 8 x H100-SXM."""
    return [SteadyDevice(spec, i, seed=seed, **kwargs) for i in range(count)]  # type: ignore[arg-type]
