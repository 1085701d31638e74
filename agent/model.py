"""Vendor-neutral readings: what the backends hand to the rest of the agent.

Everything past the NVML and host backends sees only these types. A field that is
``None`` (or a key missing from a dict) means *not supported or not read*: it never
becomes a series, never a fake zero (see "Absent, not zero" in the design).

Units are base units throughout: bytes, seconds, watts, joules, hertz, degrees
Celsius, and ratios in 0..1. Raw device counters (energy, violation time, PCIe and
NVLink bytes, ECC counts) are passed as the device reports them, cumulative; the
store turns their deltas into the agent's own counters.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DeviceStatus(str, enum.Enum):
    OK = "ok"
    LOST = "lost"  # GpuIsLost / ResetRequired: fallen off the bus until it comes back
    UNRESPONSIVE = "unresponsive"  # a call missed its deadline; at most one call stays outstanding
    ERROR = "error"  # the read failed for another reason (message in GpuReading.error)


@dataclass(frozen=True)
class GpuIdentity:
    index: int
    uuid: str
    name: str
    pci_bus_id: str
    serial: str | None = None
    vbios_version: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # e.g. "12.4"
    compute_capability: str | None = None  # e.g. "9.0"
    mig_mode: bool | None = None
    brand: str | None = None
    # MIG device UUIDs ("MIG-<uuid>", as NVML and the kubelet name them), in slot order;
    # empty when MIG is off, unsupported, or no instance is configured
    mig_devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory_bytes: int | None = None
    sm_ratio: float | None = None  # per-process SM share from nvmlDeviceGetProcessUtilization, 0..1
    memory_util_ratio: float | None = None


@dataclass
class GpuReading:
    """One sample of one GPU. Every measurement is optional: None = not supported / not read."""

    index: int
    uuid: str
    timestamp: float  # agent clock (monotonic seconds; simulated seconds in the demo)
    status: DeviceStatus = DeviceStatus.OK
    error: str | None = None

    # memory (bytes)
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_reserved_bytes: int | None = None

    # activity (0..1)
    utilization_gpu_ratio: float | None = None  # nvmlDeviceGetUtilizationRates().gpu, last sample period only
    utilization_memory_ratio: float | None = None
    utilization_samples_ratio: float | None = (
        None  # mean of high-rate GPU_UTILIZATION samples since last read
    )
    utilization_samples_count: int | None = None
    # GPM (Hopper+), averages over the window since the previous GPM sample
    sm_active_ratio: float | None = None
    sm_occupancy_ratio: float | None = None
    tensor_active_ratio: float | None = None  # any tensor pipe
    hmma_active_ratio: float | None = None
    imma_active_ratio: float | None = None
    dfma_active_ratio: float | None = None
    dram_active_ratio: float | None = None  # DRAM bandwidth utilization
    fp16_active_ratio: float | None = None
    fp32_active_ratio: float | None = None
    fp64_active_ratio: float | None = None
    gpm_window_seconds: float | None = None

    # clocks (Hz)
    sm_clock_hz: float | None = None
    memory_clock_hz: float | None = None
    graphics_clock_hz: float | None = None
    sm_clock_max_hz: float | None = None
    memory_clock_max_hz: float | None = None
    graphics_clock_max_hz: float | None = None
    sm_clock_app_hz: float | None = None
    memory_clock_app_hz: float | None = None

    # power
    power_watts: float | None = None  # nvmlDeviceGetPowerUsage (1 s average on Ampere+ except GA100)
    power_instant_watts: float | None = None
    power_limit_watts: float | None = None  # enforced
    power_default_limit_watts: float | None = None
    power_min_limit_watts: float | None = None
    power_max_limit_watts: float | None = None
    energy_joules: float | None = None  # raw device counter (cumulative since driver load)

    # thermals
    temperatures_celsius: dict[str, float] = field(default_factory=dict)  # sensor: "gpu", "memory"
    temperature_thresholds_celsius: dict[str, float] = field(
        default_factory=dict
    )  # shutdown, slowdown, mem_max, gpu_max
    temperature_margin_celsius: float | None = None
    fan_speed_ratios: dict[int, float] = field(
        default_factory=dict
    )  # fan index -> intended speed (may exceed 1)
    performance_state: int | None = None

    # throttling
    clock_event_reasons: int | None = None  # instantaneous bitmask (NVML clock-event reasons)
    supported_clock_event_reasons: int | None = None
    violation_ns: dict[str, int] = field(default_factory=dict)  # reason (snake case) -> cumulative ns (raw)

    # interconnect (raw cumulative device counters)
    pcie_tx_bytes: int | None = None
    pcie_rx_bytes: int | None = None
    pcie_replay_count: int | None = None
    nvlink_tx_bytes: int | None = None
    nvlink_rx_bytes: int | None = None

    # health (raw cumulative device counters)
    ecc_errors: dict[tuple[str, str], int] = field(
        default_factory=dict
    )  # (volatile|aggregate, corrected|uncorrected)
    retired_pages: dict[str, int] = field(default_factory=dict)  # cause: single_bit_ecc | double_bit_ecc
    retired_pages_pending: bool | None = None
    remapped_rows: dict[str, int] = field(
        default_factory=dict
    )  # corrected, uncorrected, pending (0/1), failure (0/1)

    # processes (polled at a lower rate; the last list is carried between polls)
    processes: list[GpuProcess] | None = None
    processes_timestamp: float | None = None

    def executing_ratio(self) -> tuple[float | None, str | None]:
        """The best activity source: GPM SM activity, else the high-rate samples, else utilization.gpu."""
        if self.sm_active_ratio is not None:
            return self.sm_active_ratio, "gpm_sm_active"
        if self.utilization_samples_ratio is not None:
            return self.utilization_samples_ratio, "utilization_samples"
        if self.utilization_gpu_ratio is not None:
            return self.utilization_gpu_ratio, "utilization_gpu"
        return None, None


@dataclass(frozen=True)
class XidEvent:
    index: int
    uuid: str
    xid: int
    timestamp: float  # agent clock


@dataclass
class ProcessStats:
    """Host view of one process that uses a GPU (or descends from one)."""

    pid: int
    ppid: int
    comm: str
    cmdline: str = ""
    user: str | None = None
    create_time: float | None = None  # seconds since the epoch
    cpu_user_seconds: float = 0.0  # cumulative
    cpu_system_seconds: float = 0.0  # cumulative
    threads_total: int = 0
    threads_running: int = 0  # state R
    threads_blocked_io: int = 0  # state D (uninterruptible, usually I/O)
    max_thread_cpu_seconds: float | None = (
        None  # cumulative CPU of its busiest thread (a thread pinned at one core)
    )
    rss_bytes: int | None = None
    io_read_bytes: int | None = None  # cumulative
    io_write_bytes: int | None = None  # cumulative
    io_delay_seconds: float | None = (
        None  # cumulative block-I/O delay (delayacct_blkio_ticks), where readable
    )
    cgroup_path: str | None = None
    cgroup_cpu_quota_cores: float | None = None  # cpu.max quota / period
    cgroup_cpu_throttled_seconds: float | None = None  # cumulative
    cgroup_cpu_usage_seconds: float | None = None  # cumulative, the whole cgroup
    nspids: tuple[int, ...] = ()  # NSpid from /proc/<pid>/status: host pid first, innermost last
    gpu_indices: tuple[int, ...] = ()  # GPUs whose compute process list names this pid or an ancestor


@dataclass
class HostReading:
    timestamp: float  # agent clock
    cpu_count: int | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # mode -> cumulative seconds, all CPUs
    load_average: tuple[float, float, float] | None = None
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    swap_total_bytes: int | None = None
    swap_used_bytes: int | None = None
    # PSI: resource (cpu|io|memory) -> kind (some|full) -> cumulative stall seconds
    pressure_stall_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    disk_busy_seconds: float | None = None
    network_receive_bytes: int | None = None
    network_transmit_bytes: int | None = None
    processes: dict[int, ProcessStats] = field(default_factory=dict)  # GPU processes and their descendants
    errors: dict[str, str] = field(default_factory=dict)  # part -> message, for parts that failed


# The nine GPU time-accounting states, in priority order (see the README).
GPU_STATES: tuple[str, ...] = (
    "unavailable",
    "idle",
    "starved_host",
    "starved_io",
    "starved_other",
    "throttled_power",
    "throttled_thermal",
    "memory_bound",
    "compute_bound",
)


@dataclass
class IntervalSignals:
    """What the derived signals book for one GPU over one sampling interval of length ``dt``."""

    dt: float
    state_seconds: dict[str, float] = field(default_factory=dict)  # state -> seconds, sums to dt
    executing_ratio: float | None = None
    executing_source: str | None = None
    throttle_seconds: dict[str, float] = field(default_factory=dict)  # reason -> seconds
    clock_lost_seconds: float = 0.0
    estimated_flops: dict[str, float] = field(default_factory=dict)  # precision -> FLOPs in the interval
    estimated_dram_bytes: float | None = None
    reported_flops: float = 0.0  # FLOPs the workload itself reported for this GPU in the interval
    starvation_evidence: str | None = (
        None  # short words for the diagnosis, e.g. "pid 4121 at 100 % of 1 core"
    )
