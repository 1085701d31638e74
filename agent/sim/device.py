"""The seam between a modelled GPU and the fake NVML surface that presents it.

A *device model* (the simulated fleet's physics, or a replayed capture) answers two
questions about one GPU at a time ``t`` on the shared clock:

* ``snapshot(t)``: levels and cumulative counters at ``t`` (clocks, power, energy,
  temperatures, reasons, violation time, memory, processes, health, XIDs);
* ``activity(t0, t1)``: time-averaged activity fractions over ``[t0, t1]`` (how much
  of that window a kernel was executing, the tensor pipes were busy, and so on).

The fake NVML surface (``agent.nvml.fake``) turns these into NVML semantics:
``utilization.gpu`` is ``activity(t - period, t).busy``, the high-rate sample buffer
holds ``activity`` over consecutive 1/6 s slots, GPM metrics are ``activity`` between
two GPM sample times, and so on. Keeping the model apart from the surface lets a
second surface (a C library standing in for libnvidia-ml) sit on the same model later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agent.specs import GpuSpec


@dataclass(frozen=True)
class Activity:
    """Fractions of a window (0..1), averaged over the window."""

    busy: float = 0.0  # at least one kernel executing (what utilization.gpu measures)
    sm_active: float = 0.0  # GPM SM_UTIL
    sm_occupancy: float = 0.0
    tensor: float = 0.0  # any tensor pipe
    hmma: float = 0.0
    imma: float = 0.0
    dfma: float = 0.0
    dram: float = 0.0  # DRAM bandwidth utilization
    fp16: float = 0.0
    fp32: float = 0.0
    fp64: float = 0.0
    memory_controller: float = 0.0  # what utilization.memory measures


@dataclass(frozen=True)
class SimIdentity:
    uuid: str
    name: str
    pci_bus_id: str  # "00000000:18:00.0"
    serial: str
    vbios_version: str
    compute_capability: tuple[int, int]
    minor_number: int = 0
    # MIG device UUIDs ("MIG-<uuid>") by MIG slot; "" marks an empty slot. Non-empty: MIG mode enabled.
    mig_uuids: tuple[str, ...] = ()


@dataclass
class DeviceSnapshot:
    t: float
    lost: bool = False  # every call raises NVMLError_GpuIsLost
    hang_until: float | None = None  # a call made before this clock time blocks until it
    sm_clock_mhz: float = 0.0
    memory_clock_mhz: float = 0.0
    graphics_clock_mhz: float = 0.0
    app_sm_clock_mhz: float = 0.0
    app_memory_clock_mhz: float = 0.0
    power_average_mw: float = 0.0  # 1 s average, what nvmlDeviceGetPowerUsage returns on Hopper
    power_instant_mw: float = 0.0
    energy_mj: int = 0  # cumulative
    power_limit_mw: float = 0.0  # enforced
    power_default_limit_mw: float = 0.0
    power_min_limit_mw: float = 0.0
    power_max_limit_mw: float = 0.0
    temperature_gpu_c: float = 0.0
    temperature_memory_c: float | None = None
    thresholds_c: dict[int, float] = field(default_factory=dict)  # NVML_TEMPERATURE_THRESHOLD_* -> degrees C
    fan_speeds_pct: list[float] = field(default_factory=list)  # empty: passively cooled (no fans)
    performance_state: int = 0
    clock_event_reasons: int = 0  # instantaneous bitmask
    supported_clock_event_reasons: int = 0
    violation_ns: dict[int, int] = field(
        default_factory=dict
    )  # NVML field id (74-81, 269-271) -> cumulative ns
    memory_total_bytes: int = 0
    memory_used_bytes: int = 0
    memory_reserved_bytes: int = 0
    pcie_tx_bytes: int = 0
    pcie_rx_bytes: int = 0
    pcie_replay_count: int = 0
    nvlink_tx_bytes: int = 0
    nvlink_rx_bytes: int = 0
    ecc_volatile_corrected: int = 0
    ecc_volatile_uncorrected: int = 0
    ecc_aggregate_corrected: int = 0
    ecc_aggregate_uncorrected: int = 0
    retired_pages_sbe: int = 0
    retired_pages_dbe: int = 0
    retired_pages_pending: bool = False
    remapped_rows_corrected: int = 0
    remapped_rows_uncorrected: int = 0
    remapped_rows_pending: bool = False
    remapped_rows_failure: bool = False
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used GPU memory bytes)
    process_sm_pct: dict[int, float] = field(default_factory=dict)  # pid -> SM share, %
    xids: list[tuple[float, int]] = field(default_factory=list)  # (clock time, xid), all so far


class DeviceModel(Protocol):
    spec: GpuSpec
    identity: SimIdentity

    def snapshot(self, t: float) -> DeviceSnapshot: ...

    def activity(self, t0: float, t1: float) -> Activity: ...
