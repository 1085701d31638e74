"""Deterministic, fully populated snapshots: the render benchmark and the exporter tests use them.

Every field a reading can carry is filled, every counter and gauge the sampler and the
derived signals book is present, so a render of ``full_snapshot(n)`` is the largest
exposition ``n`` H100s can produce. Values vary with the GPU index so that no two
series are alike.
"""

from __future__ import annotations

from agent.model import (
    GPU_STATES,
    GpuIdentity,
    GpuProcess,
    GpuReading,
    HostReading,
    IntervalSignals,
    ProcessStats,
)
from agent.snapshot import CollectorStatus, CounterKey, Snapshot
from agent.specs import PRECISIONS
from exporters.catalog import DEVICE_COUNTER_DELTAS, INTEGRATED_RATIOS, THROTTLE_REASONS

EPOCH = 1_700_000_000.0
GIB = 1024**3
ESTIMATED_PRECISIONS = ("bf16", "fp32", "fp64")  # the training precision plus the FP32/FP64 pipes
PEAKS = {"fp64": 34e12, "fp64_tensor": 67e12, "fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12,
         "fp16": 989.5e12, "fp8": 1979e12, "int8": 1979e12}


def identity(index: int) -> GpuIdentity:
    return GpuIdentity(
        index=index, uuid=f"GPU-{index:08x}-0000-4000-8000-{index:012x}", name="NVIDIA H100 80GB HBM3",
        pci_bus_id=f"00000000:{0x18 + index:02X}:00.0", serial=f"165{index:010d}",
        vbios_version="96.00.74.00.0D", driver_version="550.54.15", cuda_driver_version="12.4",
        compute_capability="9.0", mig_mode=False,
        brand="nvidia",
    )


def reading(index: int, timestamp: float, pids: tuple[int, ...] = ()) -> GpuReading:
    """A healthy, busy H100 with every field filled."""
    f = index / 100.0
    return GpuReading(
        index=index, uuid=identity(index).uuid, timestamp=timestamp,
        memory_total_bytes=80 * GIB, memory_used_bytes=60 * GIB + index, memory_free_bytes=20 * GIB - index,
        memory_reserved_bytes=512 * 1024**2,
        utilization_gpu_ratio=0.97, utilization_memory_ratio=0.41 + f, utilization_samples_ratio=0.95,
        utilization_samples_count=6, sm_active_ratio=0.88 - f, sm_occupancy_ratio=0.35,
        tensor_active_ratio=0.52,
        hmma_active_ratio=0.5, imma_active_ratio=0.0, dfma_active_ratio=0.01, dram_active_ratio=0.44,
        fp16_active_ratio=0.03, fp32_active_ratio=0.12, fp64_active_ratio=0.0, gpm_window_seconds=1.0,
        sm_clock_hz=1_755e6 + index * 15e6, memory_clock_hz=2_619e6, graphics_clock_hz=1_755e6,
        sm_clock_max_hz=1_980e6, memory_clock_max_hz=2_619e6, graphics_clock_max_hz=1_980e6,
        sm_clock_app_hz=1_755e6, memory_clock_app_hz=2_619e6,
        power_watts=612.5 + index, power_instant_watts=640.25 + index, power_limit_watts=700.0,
        power_default_limit_watts=700.0, power_min_limit_watts=200.0, power_max_limit_watts=700.0,
        energy_joules=3.6e9 + index * 1e6,
        temperatures_celsius={"gpu": 71.0 + index % 7, "memory": 78.0 + index % 5},
        temperature_thresholds_celsius={"shutdown": 92.0, "slowdown": 87.0, "mem_max": 95.0, "gpu_max": 85.0},
        temperature_margin_celsius=14.0, fan_speed_ratios={}, performance_state=0,
        clock_event_reasons=0x4 if index % 2 else 0x0, supported_clock_event_reasons=0x1FF,
        violation_ns={reason: 10**9 * (index + 1) for reason in THROTTLE_REASONS},
        pcie_tx_bytes=9 * 10**12 + index, pcie_rx_bytes=7 * 10**12 + index, pcie_replay_count=index % 3,
        nvlink_tx_bytes=4 * 10**14 + index, nvlink_rx_bytes=4 * 10**14 + 2 * index,
        ecc_errors={("volatile", "corrected"): index, ("volatile", "uncorrected"): 0,
                    ("aggregate", "corrected"): 10 + index, ("aggregate", "uncorrected"): 0},
        retired_pages={}, retired_pages_pending=None,
        remapped_rows={"corrected": index % 2, "uncorrected": 0, "pending": 0, "failure": 0},
        processes=[GpuProcess(pid=pid, used_memory_bytes=(30 * GIB) // max(1, len(pids)) + pid,
                              sm_ratio=0.9 / max(1, len(pids)), memory_util_ratio=0.4 / max(1, len(pids)))
                   for pid in pids],
        processes_timestamp=timestamp,
    )


def gpu_counters(index: int, uptime: float) -> dict[CounterKey, float]:
    """What the sampler and the derived signals have booked for one GPU after ``uptime`` seconds."""
    counters: dict[CounterKey, float] = {}
    for i, (_, name, labels) in enumerate(INTEGRATED_RATIOS):
        counters[(name, labels)] = uptime * (0.9 - i * 0.05) + index
    for i, (_, name) in enumerate(DEVICE_COUNTER_DELTAS):
        counters[(name, ())] = 1.25e9 * (i + 1) + index
    for i, state in enumerate(GPU_STATES):
        counters[("gpulse_gpu_state_seconds_total", (("state", state),))] = uptime / len(GPU_STATES) + i
    for i, reason in enumerate(THROTTLE_REASONS):
        counters[("gpulse_gpu_throttle_seconds_total", (("reason", reason),))] = i * 1.5 + index
    counters[("gpulse_gpu_clock_lost_seconds_total", ())] = 42.125 + index
    for precision in ESTIMATED_PRECISIONS:
        flops = PEAKS[precision] * uptime * 0.4
        counters[("gpulse_gpu_estimated_flops_total", (("precision", precision),))] = flops
    counters[("gpulse_gpu_estimated_dram_bytes_total", ())] = 3.35e12 * uptime * 0.44
    counters[("gpulse_gpu_reported_flops_total", ())] = 1.2e18 + index
    return counters


def gpu_gauges(index: int) -> dict[CounterKey, float]:
    gauges: dict[CounterKey, float] = {
        ("gpulse_gpu_thermal_headroom_celsius", ()): 16.0 - index % 7,
        ("gpulse_gpu_power_headroom_watts", ()): 87.5 - index,
        ("gpulse_gpu_peak_memory_bandwidth_bytes_per_second", ()): 3.35e12,
    }
    for precision in PRECISIONS:
        gauges[("gpulse_gpu_peak_flops", (("precision", precision),))] = PEAKS[precision]
    return gauges


def process(pid: int, ppid: int, gpu: int, comm: str = "python") -> ProcessStats:
    return ProcessStats(
        pid=pid, ppid=ppid, comm=comm, cmdline=f"{comm} train.py --rank {gpu}", user="alice",
        create_time=EPOCH - 3600, cpu_user_seconds=1234.5 + pid, cpu_system_seconds=56.25, threads_total=24,
        threads_running=2, threads_blocked_io=1, max_thread_cpu_seconds=900.0, rss_bytes=8 * GIB + pid,
        io_read_bytes=10**11 + pid, io_write_bytes=10**9, io_delay_seconds=12.5,
        cgroup_path=f"/kubepods.slice/pod-{gpu}", cgroup_cpu_quota_cores=8.0,
        cgroup_cpu_throttled_seconds=3.5,
        cgroup_cpu_usage_seconds=5000.0 + pid, nspids=(pid,), gpu_indices=(gpu,),
    )


def host(timestamp: float, processes: dict[int, ProcessStats]) -> HostReading:
    return HostReading(
        timestamp=timestamp, cpu_count=64,
        cpu_seconds={"user": 123456.5, "nice": 12.0, "system": 23456.25, "idle": 987654.0, "iowait": 345.5,
                     "irq": 1.5, "softirq": 22.0, "steal": 0.0},
        load_average=(12.5, 11.25, 10.0), memory_total_bytes=2048 * GIB, memory_available_bytes=1500 * GIB,
        swap_total_bytes=0, swap_used_bytes=0,
        pressure_stall_seconds={"cpu": {"some": 120.5}, "io": {"some": 30.25, "full": 10.125},
                                "memory": {"some": 0.5, "full": 0.25}},
        disk_read_bytes=5 * 10**12, disk_write_bytes=10**12, disk_busy_seconds=8000.5,
        network_receive_bytes=3 * 10**13, network_transmit_bytes=2 * 10**13, processes=processes,
    )


def full_snapshot(gpus: int = 8, processes_per_gpu: int = 2, uptime: float = 3600.0) -> Snapshot:
    """``gpus`` fully populated H100s, each with a training process and ``processes_per_gpu - 1`` workers."""
    timestamp = uptime
    identities = {i: identity(i) for i in range(gpus)}
    processes: dict[int, ProcessStats] = {}
    readings: dict[int, GpuReading] = {}
    node_gauges: dict[CounterKey, float] = {("gpulse_agent_resident_memory_bytes", ()): 61_000_000.0}
    for i in range(gpus):
        main = 4000 + i * 10
        pids = tuple(main + k for k in range(max(1, processes_per_gpu)))
        for k, pid in enumerate(pids):
            processes[pid] = process(pid, main if k else 1, i, "python" if k == 0 else "pt_data_worker")
            node_gauges[("gpulse_process_info", (
                ("pid", str(pid)), ("comm", processes[pid].comm), ("user", "alice"),
                ("container_id", f"{i:064x}"), ("pod", f"train-{i}"), ("namespace", "ml"),
                ("container", "trainer"), ("slurm_job", "")))] = 1.0
        readings[i] = reading(i, timestamp, pids[:1])
        node_gauges[("gpulse_gpu_allocation_info", (
            ("gpu", str(i)), ("uuid", identities[i].uuid), ("pod", f"train-{i}"), ("namespace", "ml"),
            ("container", "trainer"), ("slurm_job", "")))] = 1.0
    return Snapshot(
        timestamp=timestamp, epoch=EPOCH + timestamp, interval_seconds=1.0, nvml_up=True,
        nvml_message=f"NVML 12.550.54.15, {gpus} GPUs", identities=identities, readings=readings,
        signals={i: IntervalSignals(dt=1.0) for i in range(gpus)},
        gpu_counters={i: gpu_counters(i, uptime) for i in range(gpus)},
        gpu_gauges={i: gpu_gauges(i) for i in range(gpus)},
        node_counters={("gpulse_agent_cpu_seconds_total", ()): 12.75,
                       ("gpulse_profiles_total", (("trigger", "manual"),)): 2.0,
                       ("gpulse_profiles_total", (("trigger", "starvation"),)): 1.0,
                       ("gpulse_attribution_dropped_series_total", ()): 0.0},
        node_gauges=node_gauges,
        xid_counts={(i, 13): 1 for i in range(0, gpus, 4)} | {(i, 31): 2 for i in range(1, gpus, 4)},
        xid_last_seen={i: EPOCH + 1000.0 + i for i in range(0, gpus, 4)},
        host=host(timestamp, processes),
        collectors={"nvml": CollectorStatus(True, 0.0042, last_success=timestamp),
                    "host": CollectorStatus(True, 0.0031, last_success=timestamp),
                    "processes": CollectorStatus(True, 0.0012, last_success=timestamp - 4.0)},
        ticks=int(uptime),
    )

