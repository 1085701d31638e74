"""The metric catalog: every series gpulse exports, in one table.

Each entry names the metric, its type, unit, help text, label names, a one-line
account of what it is derived from, and the snapshot field the renderer takes it
from (``feed``). The Prometheus renderer takes HELP/TYPE/UNIT from here and emits
nothing that is not here; the README's metric table is generated from here
(``python -m exporters.catalog --markdown``, or ``--update FILE`` to rewrite the
marked section of a document), and a test fails when they disagree.

Conventions (see docs/metrics.md): prefix ``gpulse_``, base units in the name,
counters end in ``_total``, ``_ratio`` is 0..1, per-GPU series carry ``gpu`` and
``uuid`` only (identity lives in ``gpulse_gpu_info``), and what a device does not
support has no series at all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from agent.model import GPU_STATES
from agent.specs import PRECISIONS

GAUGE = "gauge"
COUNTER = "counter"
INFO = "info"

# Where the renderer finds a family's values in the Snapshot. A family has exactly one feed,
# so two producers can never emit the same family.
IDENTITY = "identity"  # Snapshot.identities
STATUS = "status"  # GpuReading.status of every known GPU
READING = "reading"  # fields of GpuReading (only for GPUs whose status is ok)
GPU_COUNTER = "gpu_counter"  # Snapshot.gpu_counters (the agent's own accumulations)
GPU_GAUGE = "gpu_gauge"  # Snapshot.gpu_gauges (derived levels; only for GPUs whose status is ok)
XID = "xid"  # Snapshot.xid_counts / xid_last_seen
HOST = "host"  # Snapshot.host
PROCESS = "process"  # Snapshot.host.processes
COLLECTOR = "collector"  # Snapshot.collectors
NODE_COUNTER = "node_counter"  # Snapshot.node_counters (labels complete as given)
NODE_GAUGE = "node_gauge"  # Snapshot.node_gauges (labels complete as given)
AGENT = "agent"  # the snapshot itself and the agent's build

FEEDS = (IDENTITY, STATUS, READING, GPU_COUNTER, GPU_GAUGE, XID, HOST, PROCESS, COLLECTOR,
         NODE_COUNTER, NODE_GAUGE, AGENT)

GPU_LABELS: tuple[str, ...] = ("gpu", "uuid")

# Label vocabularies, documented in the table and used by the samplers/renderer.
CLOCK_EVENT_REASONS: tuple[str, ...] = (
    "gpu_idle", "applications_clocks_setting", "sw_power_cap", "hw_slowdown", "sync_boost",
    "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "display_clock_setting",
)
THROTTLE_REASONS: tuple[str, ...] = (
    *CLOCK_EVENT_REASONS, "board_limit", "low_utilization", "reliability", "total_base_clocks",
)
TEMPERATURE_SENSORS: tuple[str, ...] = ("gpu", "memory")
TEMPERATURE_THRESHOLDS: tuple[str, ...] = ("shutdown", "slowdown", "mem_max", "gpu_max")
DEVICE_STATUSES: tuple[str, ...] = ("ok", "lost", "unresponsive", "error")
PIPES: tuple[str, ...] = ("hmma", "imma", "dfma", "fp16", "fp32", "fp64")
ECC_COUNTERS: tuple[str, ...] = ("volatile", "aggregate")
ECC_TYPES: tuple[str, ...] = ("corrected", "uncorrected")
RETIREMENT_CAUSES: tuple[str, ...] = ("single_bit_ecc", "double_bit_ecc")
PROCESS_CPU_MODES: tuple[str, ...] = ("user", "system")
THREAD_STATES: tuple[str, ...] = ("running", "blocked_io", "other")
PRESSURE_RESOURCES: tuple[str, ...] = ("cpu", "io", "memory")
PRESSURE_KINDS: tuple[str, ...] = ("some", "full")
LOAD_WINDOWS: tuple[str, ...] = ("1m", "5m", "15m")
PROFILE_TRIGGERS: tuple[str, ...] = ("manual", "starvation")

LabelValues = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class MetricDef:
    name: str
    type: str  # gauge | counter | info
    unit: str  # the base unit the name ends with ("" when the quantity has none)
    help: str
    labels: tuple[str, ...]  # every label name, gpu/uuid included where they apply
    source: str  # one line: what it is derived from
    feed: str  # where the renderer reads it (one of FEEDS)
    group: str
    values: LabelValues = ()  # documented label vocabularies

    @property
    def om_family(self) -> str:
        """The OpenMetrics family name: counters lose ``_total``, info series lose ``_info``."""
        if self.type == COUNTER:
            return self.name[: -len("_total")]
        if self.type == INFO:
            return self.name[: -len("_info")]
        return self.name

    @property
    def own_labels(self) -> tuple[str, ...]:
        """Labels beyond gpu/uuid (the ones in a ``Snapshot.gpu_counters`` key)."""
        return tuple(label for label in self.labels if label not in GPU_LABELS)


_ENTRIES: list[MetricDef] = []
_GROUP = [""]


def _section(title: str) -> None:
    _GROUP[0] = title


def _m(name: str, type_: str, unit: str, labels: Iterable[str], feed: str, help_: str, source: str,
       values: LabelValues = ()) -> None:
    _ENTRIES.append(MetricDef(name, type_, unit, help_, tuple(labels), source, feed, _GROUP[0], values))


def _gpu(*extra: str) -> tuple[str, ...]:
    return (*GPU_LABELS, *extra)


_section("GPU identity and status")
_m("gpulse_gpu_info", INFO, "",
   _gpu("name", "pci_bus_id", "serial", "vbios_version", "driver_version", "cuda_driver_version",
        "cuda_capability", "mig_mode", "brand"), IDENTITY,
   "Identity of each GPU; join on gpu and uuid to add these labels to any per-GPU series.",
   "NVML device identity at start-up; labels the device does not report are left out")
_m("gpulse_gpu_up", GAUGE, "", _gpu(), STATUS,
   "1 when the GPU's last read succeeded, 0 when it is lost, unresponsive or failed.",
   "status of the latest reading of every known GPU")
_m("gpulse_gpu_status", GAUGE, "", _gpu("status"), STATUS,
   "1 for the GPU's current read status, 0 for the others.",
   "status of the latest reading (GpuIsLost, missed deadline, other error)",
   (("status", DEVICE_STATUSES),))

_section("GPU memory")
_m("gpulse_gpu_memory_total_bytes", GAUGE, "bytes", _gpu(), READING,
   "Total framebuffer memory.",
   "nvmlDeviceGetMemoryInfo total")
_m("gpulse_gpu_memory_used_bytes", GAUGE, "bytes", _gpu(), READING,
   "Framebuffer memory in use.",
   "nvmlDeviceGetMemoryInfo used")
_m("gpulse_gpu_memory_free_bytes", GAUGE, "bytes", _gpu(), READING,
   "Framebuffer memory free.",
   "nvmlDeviceGetMemoryInfo free")
_m("gpulse_gpu_memory_reserved_bytes", GAUGE, "bytes", _gpu(), READING,
   "Framebuffer memory reserved by the driver and firmware.",
   "nvmlDeviceGetMemoryInfo v2 reserved")

_section("GPU activity (integrated)")
_m("gpulse_gpu_busy_seconds_total", COUNTER, "seconds", _gpu(), GPU_COUNTER,
   "Seconds at least one kernel was running; rate() is the mean utilization.gpu over the window.",
   "utilization.gpu ratio x interval, accumulated every sample")
_m("gpulse_gpu_memory_busy_seconds_total", COUNTER, "seconds", _gpu(), GPU_COUNTER,
   "Seconds device memory was being read or written; rate() is the mean utilization.memory.",
   "utilization.memory ratio x interval, accumulated every sample")
_m("gpulse_gpu_sm_active_seconds_total", COUNTER, "seconds", _gpu(), GPU_COUNTER,
   "SM activity integrated over time; rate() is the mean fraction of time the SMs had a warp resident.",
   "GPM SM activity ratio x interval (Hopper and newer)")
_m("gpulse_gpu_sm_occupancy_seconds_total", COUNTER, "seconds", _gpu(), GPU_COUNTER,
   "Warp occupancy integrated over time; rate() is the mean ratio of resident warps to the maximum.",
   "GPM SM occupancy ratio x interval (Hopper and newer)")
_m("gpulse_gpu_tensor_active_seconds_total", COUNTER, "seconds", _gpu(), GPU_COUNTER,
   "Seconds any tensor pipe was active; rate() is the mean tensor-pipe activity.",
   "GPM any-tensor activity ratio x interval (Hopper and newer)")
_m("gpulse_gpu_pipe_active_seconds_total", COUNTER, "seconds", _gpu("pipe"), GPU_COUNTER,
   "Seconds each compute pipe was active; rate() is the mean activity of that pipe.",
   "GPM HMMA/IMMA/DFMA tensor and FP16/FP32/FP64 pipe activity ratios x interval",
   (("pipe", PIPES),))
_m("gpulse_gpu_dram_active_seconds_total", COUNTER, "seconds", _gpu(), GPU_COUNTER,
   "DRAM bandwidth utilization integrated over time; rate() is the mean ratio of used to peak bandwidth.",
   "GPM DRAM bandwidth utilization ratio x interval (Hopper and newer)")

_section("GPU clocks")
_m("gpulse_gpu_sm_clock_hertz", GAUGE, "hertz", _gpu(), READING,
   "Current SM clock.",
   "nvmlDeviceGetClockInfo(SM)")
_m("gpulse_gpu_sm_clock_max_hertz", GAUGE, "hertz", _gpu(), READING,
   "Maximum SM clock.",
   "nvmlDeviceGetMaxClockInfo(SM)")
_m("gpulse_gpu_sm_clock_application_hertz", GAUGE, "hertz", _gpu(), READING,
   "Application (target) SM clock.",
   "nvmlDeviceGetApplicationsClock(SM)")
_m("gpulse_gpu_memory_clock_hertz", GAUGE, "hertz", _gpu(), READING,
   "Current memory clock.",
   "nvmlDeviceGetClockInfo(MEM)")
_m("gpulse_gpu_memory_clock_max_hertz", GAUGE, "hertz", _gpu(), READING,
   "Maximum memory clock.",
   "nvmlDeviceGetMaxClockInfo(MEM)")
_m("gpulse_gpu_memory_clock_application_hertz", GAUGE, "hertz", _gpu(), READING,
   "Application (target) memory clock.",
   "nvmlDeviceGetApplicationsClock(MEM)")
_m("gpulse_gpu_graphics_clock_hertz", GAUGE, "hertz", _gpu(), READING,
   "Current graphics clock.",
   "nvmlDeviceGetClockInfo(GRAPHICS)")
_m("gpulse_gpu_graphics_clock_max_hertz", GAUGE, "hertz", _gpu(), READING,
   "Maximum graphics clock.",
   "nvmlDeviceGetMaxClockInfo(GRAPHICS)")

_section("GPU power")
_m("gpulse_gpu_power_watts", GAUGE, "watts", _gpu(), READING,
   "Power draw (a 1 s average on Ampere and newer except GA100).",
   "nvmlDeviceGetPowerUsage")
_m("gpulse_gpu_power_instant_watts", GAUGE, "watts", _gpu(), READING,
   "Instantaneous power draw.",
   "field value POWER_INSTANT")
_m("gpulse_gpu_power_limit_watts", GAUGE, "watts", _gpu(), READING,
   "Enforced power limit.",
   "nvmlDeviceGetEnforcedPowerLimit")
_m("gpulse_gpu_power_limit_default_watts", GAUGE, "watts", _gpu(), READING,
   "Default power limit.",
   "nvmlDeviceGetPowerManagementDefaultLimit")
_m("gpulse_gpu_power_limit_min_watts", GAUGE, "watts", _gpu(), READING,
   "Lowest power limit that can be set.",
   "nvmlDeviceGetPowerManagementLimitConstraints min")
_m("gpulse_gpu_power_limit_max_watts", GAUGE, "watts", _gpu(), READING,
   "Highest power limit that can be set.",
   "nvmlDeviceGetPowerManagementLimitConstraints max")
_m("gpulse_gpu_energy_joules_total", COUNTER, "joules", _gpu(), GPU_COUNTER,
   "Energy consumed since the agent started.",
   "deltas of nvmlDeviceGetTotalEnergyConsumption (a device reset skips one interval)")

_section("GPU thermals")
_m("gpulse_gpu_temperature_celsius", GAUGE, "celsius", _gpu("sensor"), READING,
   "Temperature per sensor.",
   "nvmlDeviceGetTemperature (gpu), field value MEMORY_TEMP (memory)",
   (("sensor", TEMPERATURE_SENSORS),))
_m("gpulse_gpu_temperature_threshold_celsius", GAUGE, "celsius", _gpu("threshold"), READING,
   "Temperature thresholds of the device.",
   "nvmlDeviceGetTemperatureThreshold",
   (("threshold", TEMPERATURE_THRESHOLDS),))
_m("gpulse_gpu_temperature_margin_celsius", GAUGE, "celsius", _gpu(), READING,
   "Distance to the nearest slowdown threshold as the driver reports it.",
   "nvmlDeviceGetMarginTemperature")
_m("gpulse_gpu_fan_speed_ratio", GAUGE, "ratio", _gpu("fan"), READING,
   "Intended fan speed as a ratio of maximum; may exceed 1.",
   "nvmlDeviceGetFanSpeed_v2 per fan")
_m("gpulse_gpu_performance_state", GAUGE, "", _gpu(), READING,
   "Performance state: 0 is P0 (maximum) to 15 (minimum).",
   "nvmlDeviceGetPerformanceState")

_section("GPU throttling")
_m("gpulse_gpu_clock_event_active", GAUGE, "", _gpu("reason"), READING,
   "1 while the reason holds clocks down, else 0; only reasons the device supports have a series.",
   "nvmlDeviceGetCurrentClocksEventReasons masked by the supported reasons",
   (("reason", CLOCK_EVENT_REASONS),))
_m("gpulse_gpu_throttle_seconds_total", COUNTER, "seconds", _gpu("reason"), GPU_COUNTER,
   "Seconds clocks were held down, per reason.",
   "violation counters (field values 74-81, 269-271), else the reason bitmask x interval",
   (("reason", THROTTLE_REASONS),))
_m("gpulse_gpu_clock_lost_seconds_total", COUNTER, "seconds", _gpu(), GPU_COUNTER,
   "Executing seconds lost to reduced clocks: executing time x (1 - SM clock / max SM clock).",
   "derived signals: executing ratio and SM clock against its maximum")

_section("GPU interconnect")
_m("gpulse_gpu_pcie_transmit_bytes_total", COUNTER, "bytes", _gpu(), GPU_COUNTER,
   "Bytes sent over PCIe since the agent started.",
   "deltas of field value PCIE_TX_BYTES (197)")
_m("gpulse_gpu_pcie_receive_bytes_total", COUNTER, "bytes", _gpu(), GPU_COUNTER,
   "Bytes received over PCIe since the agent started.",
   "deltas of field value PCIE_RX_BYTES (198)")
_m("gpulse_gpu_pcie_replays_total", COUNTER, "", _gpu(), READING,
   "PCIe replays as counted by the device.",
   "nvmlDeviceGetPcieReplayCounter (device counter)")
_m("gpulse_gpu_nvlink_transmit_bytes_total", COUNTER, "bytes", _gpu(), GPU_COUNTER,
   "Bytes sent over NVLink since the agent started.",
   "deltas of the NVLink TX byte counters, all links")
_m("gpulse_gpu_nvlink_receive_bytes_total", COUNTER, "bytes", _gpu(), GPU_COUNTER,
   "Bytes received over NVLink since the agent started.",
   "deltas of the NVLink RX byte counters, all links")

_section("GPU health")
_m("gpulse_gpu_xid_errors_total", COUNTER, "", _gpu("xid"), XID,
   "XID errors seen since the agent started, per XID code.",
   "NVML XID events from the event set (own thread)")
_m("gpulse_gpu_xid_last_seen_timestamp_seconds", GAUGE, "seconds", _gpu(), XID,
   "Unix time of the GPU's last XID error.",
   "NVML XID events")
_m("gpulse_gpu_ecc_errors_total", COUNTER, "", _gpu("counter", "type"), READING,
   "ECC errors as counted by the device.",
   "nvmlDeviceGetTotalEccErrors; volatile counts reset when the driver reloads",
   (("counter", ECC_COUNTERS), ("type", ECC_TYPES)))
_m("gpulse_gpu_retired_pages", GAUGE, "", _gpu("cause"), READING,
   "Memory pages retired, per cause.",
   "nvmlDeviceGetRetiredPages_v2 (pre-Ampere)",
   (("cause", RETIREMENT_CAUSES),))
_m("gpulse_gpu_retired_pages_pending", GAUGE, "", _gpu(), READING,
   "1 when a page retirement waits for the next reset.",
   "nvmlDeviceGetRetiredPagesPendingStatus")
_m("gpulse_gpu_remapped_rows", GAUGE, "", _gpu("type"), READING,
   "Memory rows remapped, per error type.",
   "nvmlDeviceGetRemappedRows (Ampere and newer)",
   (("type", ECC_TYPES),))
_m("gpulse_gpu_row_remap_pending", GAUGE, "", _gpu(), READING,
   "1 when a row remapping waits for the next reset.",
   "nvmlDeviceGetRemappedRows isPending")
_m("gpulse_gpu_row_remap_failure", GAUGE, "", _gpu(), READING,
   "1 when a row remapping failed.",
   "nvmlDeviceGetRemappedRows failureOccurred")

_section("Derived signals")
_m("gpulse_gpu_state_seconds_total", COUNTER, "seconds", _gpu("state"), GPU_COUNTER,
   "GPU time accounting: seconds per state; the increments over any window add up to the window.",
   "each interval split by executing fraction and its cause (see docs/signals.md)",
   (("state", GPU_STATES),))
_m("gpulse_gpu_thermal_headroom_celsius", GAUGE, "celsius", _gpu(), GPU_GAUGE,
   "Slowdown threshold minus GPU temperature.",
   "temperature thresholds and GPU temperature")
_m("gpulse_gpu_power_headroom_watts", GAUGE, "watts", _gpu(), GPU_GAUGE,
   "Enforced power limit minus power draw.",
   "power limit and power draw")
_m("gpulse_gpu_peak_flops", GAUGE, "", _gpu("precision"), GPU_GAUGE,
   "Datasheet dense peak FLOP/s per precision.",
   "spec table by device name, overridable in the config",
   (("precision", PRECISIONS),))
_m("gpulse_gpu_peak_memory_bandwidth_bytes_per_second", GAUGE, "bytes_per_second", _gpu(), GPU_GAUGE,
   "Datasheet peak memory bandwidth.",
   "spec table by device name, overridable in the config")
_m("gpulse_gpu_estimated_flops_total", COUNTER, "", _gpu("precision"), GPU_COUNTER,
   "Estimated FLOPs executed; rate() over gpulse_gpu_peak_flops is the estimated MFU.",
   "tensor-pipe activity x peak at the current SM clock x interval",
   (("precision", PRECISIONS),))
_m("gpulse_gpu_estimated_dram_bytes_total", COUNTER, "bytes", _gpu(), GPU_COUNTER,
   "Estimated DRAM bytes moved; rate() over the peak bandwidth is the MBU.",
   "DRAM bandwidth utilization x peak bandwidth x interval")
_m("gpulse_gpu_reported_flops_total", COUNTER, "", _gpu(), GPU_COUNTER,
   "Model FLOPs reported by the workloads using the GPU.",
   "POST /api/v1/workloads/report, attributed to the GPUs of the reporting process tree")

_section("Attribution")
_m("gpulse_process_info", INFO, "",
   ("pid", "comm", "user", "container_id", "pod", "namespace", "container", "slurm_job"), NODE_GAUGE,
   "Identity and owner of each process using a GPU (and its descendants).",
   "process table, cgroups, kubelet pod-resources, Slurm; the host's process list when attribution is off")
_m("gpulse_process_gpu_memory_bytes", GAUGE, "bytes", _gpu("pid"), READING,
   "GPU memory used by a process on a GPU.",
   "NVML compute process list (polled every few seconds)")
_m("gpulse_process_gpu_sm_utilization_ratio", GAUGE, "ratio", _gpu("pid"), READING,
   "Share of the GPU's time a process had kernels running on the SMs, as NVML samples it.",
   "nvmlDeviceGetProcessUtilization smUtil")
_m("gpulse_process_gpu_memory_utilization_ratio", GAUGE, "ratio", _gpu("pid"), READING,
   "Share of the GPU's time a process read or wrote device memory, as NVML samples it.",
   "nvmlDeviceGetProcessUtilization memUtil")
_m("gpulse_gpu_allocation_info", INFO, "", _gpu("pod", "namespace", "container", "slurm_job"), NODE_GAUGE,
   "Workload a GPU is allocated to; join on gpu and uuid.",
   "kubelet pod-resources device ids, else cgroup pod UID; Slurm cgroup path or environment")
_m("gpulse_attribution_dropped_series_total", COUNTER, "", (), NODE_COUNTER,
   "Per-process series not exported because of the cap.",
   "attribution series cap per node")

_section("Host")
_m("gpulse_host_cpu_seconds_total", COUNTER, "seconds", ("mode",), HOST,
   "CPU seconds of all CPUs, per mode.",
   "/proc/stat")
_m("gpulse_host_cpus", GAUGE, "", (), HOST,
   "Logical CPUs.",
   "/proc/stat cpuN lines")
_m("gpulse_host_load_average", GAUGE, "", ("window",), HOST,
   "Load average.",
   "/proc/loadavg",
   (("window", LOAD_WINDOWS),))
_m("gpulse_host_memory_total_bytes", GAUGE, "bytes", (), HOST,
   "Total memory.",
   "/proc/meminfo MemTotal")
_m("gpulse_host_memory_available_bytes", GAUGE, "bytes", (), HOST,
   "Memory available without swapping.",
   "/proc/meminfo MemAvailable")
_m("gpulse_host_swap_total_bytes", GAUGE, "bytes", (), HOST,
   "Total swap.",
   "/proc/meminfo SwapTotal")
_m("gpulse_host_swap_used_bytes", GAUGE, "bytes", (), HOST,
   "Swap in use.",
   "/proc/meminfo SwapTotal - SwapFree")
_m("gpulse_host_pressure_stall_seconds_total", COUNTER, "seconds", ("resource", "kind"), HOST,
   "Seconds tasks stalled on a resource (some: at least one task, full: all non-idle tasks).",
   "/proc/pressure/{cpu,io,memory} total",
   (("resource", PRESSURE_RESOURCES), ("kind", PRESSURE_KINDS)))
_m("gpulse_host_disk_read_bytes_total", COUNTER, "bytes", (), HOST,
   "Bytes read from block devices.",
   "/proc/diskstats, physical whole disks")
_m("gpulse_host_disk_written_bytes_total", COUNTER, "bytes", (), HOST,
   "Bytes written to block devices.",
   "/proc/diskstats, physical whole disks")
_m("gpulse_host_disk_busy_seconds_total", COUNTER, "seconds", (), HOST,
   "Seconds block devices were busy with I/O.",
   "/proc/diskstats io_ticks")
_m("gpulse_host_network_receive_bytes_total", COUNTER, "bytes", (), HOST,
   "Bytes received by network interfaces.",
   "/proc/net/dev, loopback and virtual interfaces excluded")
_m("gpulse_host_network_transmit_bytes_total", COUNTER, "bytes", (), HOST,
   "Bytes sent by network interfaces.",
   "/proc/net/dev, loopback and virtual interfaces excluded")

_section("Processes")
_m("gpulse_process_cpu_seconds_total", COUNTER, "seconds", ("pid", "mode"), PROCESS,
   "CPU seconds of a GPU process or descendant, per mode.",
   "/proc/PID/stat utime, stime",
   (("mode", PROCESS_CPU_MODES),))
_m("gpulse_process_threads", GAUGE, "", ("pid", "state"), PROCESS,
   "Threads of a process by state (blocked_io: D state).",
   "/proc/PID/task/TID/stat of each thread",
   (("state", THREAD_STATES),))
_m("gpulse_process_resident_memory_bytes", GAUGE, "bytes", ("pid",), PROCESS,
   "Resident memory of a process.",
   "/proc/PID/stat rss")
_m("gpulse_process_io_read_bytes_total", COUNTER, "bytes", ("pid",), PROCESS,
   "Bytes a process read from storage.",
   "/proc/PID/io read_bytes")
_m("gpulse_process_io_written_bytes_total", COUNTER, "bytes", ("pid",), PROCESS,
   "Bytes a process wrote to storage.",
   "/proc/PID/io write_bytes")
_m("gpulse_process_io_delay_seconds_total", COUNTER, "seconds", ("pid",), PROCESS,
   "Seconds a process waited for block I/O.",
   "/proc/PID/stat delayacct_blkio_ticks (needs kernel.task_delayacct)")
_m("gpulse_process_start_time_seconds", GAUGE, "seconds", ("pid",), PROCESS,
   "Unix time the process started.",
   "/proc/PID/stat starttime")
_m("gpulse_process_cgroup_cpu_quota_cores", GAUGE, "", ("pid",), PROCESS,
   "CPU quota of the process's cgroup, in CPUs.",
   "cgroup cpu.max (v2) or cpu.cfs_quota_us / cpu.cfs_period_us (v1)")
_m("gpulse_process_cgroup_cpu_usage_seconds_total", COUNTER, "seconds", ("pid",), PROCESS,
   "CPU seconds of the process's whole cgroup.",
   "cgroup cpu.stat usage_usec (v2) or cpuacct.usage (v1)")
_m("gpulse_process_cgroup_cpu_throttled_seconds_total", COUNTER, "seconds", ("pid",), PROCESS,
   "Seconds the process's cgroup was throttled by its CPU quota.",
   "cgroup cpu.stat throttled_usec (v2) or throttled_time (v1)")

_section("Agent")
_m("gpulse_build_info", INFO, "", ("version", "python_version"), AGENT,
   "Version of the agent and of its Python.",
   "package version and platform.python_version()")
_m("gpulse_nvml_up", GAUGE, "", (), AGENT,
   "1 when the NVIDIA driver answered, 0 when the agent runs host-only.",
   "NVML initialisation and the latest sample")
_m("gpulse_collector_success", GAUGE, "", ("collector",), COLLECTOR,
   "1 when the collector's last run succeeded, else 0.",
   "each collector's last run")
_m("gpulse_collector_duration_seconds", GAUGE, "seconds", ("collector",), COLLECTOR,
   "Duration of the collector's last run.",
   "each collector's last run")
_m("gpulse_collector_last_success_timestamp_seconds", GAUGE, "seconds", ("collector",), COLLECTOR,
   "Unix time of the collector's last success.",
   "each collector's last successful run")
_m("gpulse_last_sample_timestamp_seconds", GAUGE, "seconds", (), AGENT,
   "Unix time of the sample this exposition was rendered from; stale when it stops moving.",
   "the snapshot's time")
_m("gpulse_sampling_interval_seconds", GAUGE, "seconds", (), AGENT,
   "Configured sampling interval.",
   "configuration")
_m("gpulse_sampler_ticks_total", COUNTER, "", (), AGENT,
   "Sampling ticks completed since the agent started.",
   "the sampler loop")
_m("gpulse_agent_resident_memory_bytes", GAUGE, "bytes", (), NODE_GAUGE,
   "Resident memory of the agent itself.",
   "the agent's own /proc/self/statm")
_m("gpulse_agent_cpu_seconds_total", COUNTER, "seconds", (), NODE_COUNTER,
   "CPU seconds used by the agent itself.",
   "the agent's own /proc/self/stat utime + stime")
_m("gpulse_profiles_total", COUNTER, "", ("trigger",), NODE_COUNTER,
   "py-spy profiles captured, per trigger.",
   "the profiling module",
   (("trigger", PROFILE_TRIGGERS),))

CATALOG: tuple[MetricDef, ...] = tuple(_ENTRIES)
BY_NAME: dict[str, MetricDef] = {m.name: m for m in CATALOG}

# Activity ratios of a GpuReading that the sampler integrates (ratio x dt) into counters:
# (reading field, metric name, labels beyond gpu/uuid).
INTEGRATED_RATIOS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("utilization_gpu_ratio", "gpulse_gpu_busy_seconds_total", ()),
    ("utilization_memory_ratio", "gpulse_gpu_memory_busy_seconds_total", ()),
    ("sm_active_ratio", "gpulse_gpu_sm_active_seconds_total", ()),
    ("sm_occupancy_ratio", "gpulse_gpu_sm_occupancy_seconds_total", ()),
    ("tensor_active_ratio", "gpulse_gpu_tensor_active_seconds_total", ()),
    ("hmma_active_ratio", "gpulse_gpu_pipe_active_seconds_total", (("pipe", "hmma"),)),
    ("imma_active_ratio", "gpulse_gpu_pipe_active_seconds_total", (("pipe", "imma"),)),
    ("dfma_active_ratio", "gpulse_gpu_pipe_active_seconds_total", (("pipe", "dfma"),)),
    ("fp16_active_ratio", "gpulse_gpu_pipe_active_seconds_total", (("pipe", "fp16"),)),
    ("fp32_active_ratio", "gpulse_gpu_pipe_active_seconds_total", (("pipe", "fp32"),)),
    ("fp64_active_ratio", "gpulse_gpu_pipe_active_seconds_total", (("pipe", "fp64"),)),
    ("dram_active_ratio", "gpulse_gpu_dram_active_seconds_total", ()),
)

# Raw cumulative device counters of a GpuReading whose deltas the sampler accumulates:
# (reading field, metric name). A negative delta is a device reset: that interval is skipped.
DEVICE_COUNTER_DELTAS: tuple[tuple[str, str], ...] = (
    ("energy_joules", "gpulse_gpu_energy_joules_total"),
    ("pcie_tx_bytes", "gpulse_gpu_pcie_transmit_bytes_total"),
    ("pcie_rx_bytes", "gpulse_gpu_pcie_receive_bytes_total"),
    ("nvlink_tx_bytes", "gpulse_gpu_nvlink_transmit_bytes_total"),
    ("nvlink_rx_bytes", "gpulse_gpu_nvlink_receive_bytes_total"),
)


# --- the README table ----------------------------------------------------------------------
MARKDOWN_BEGIN = "<!-- metrics:begin -->"
MARKDOWN_END = "<!-- metrics:end -->"


def _labels_cell(metric: MetricDef) -> str:
    return ", ".join(f"`{label}`" for label in metric.labels) or "—"


def markdown_table(catalog: Iterable[MetricDef] = CATALOG) -> str:
    """The metric table for the README: one table per group, then the label vocabularies."""
    out: list[str] = []
    group = None
    for metric in catalog:
        if metric.group != group:
            group = metric.group
            if out:
                out.append("")
            out += [f"#### {group}", "", "| Metric | Type | Unit | Labels | Meaning | Derived from |",
                    "|---|---|---|---|---|---|"]
        out.append(f"| `{metric.name}` | {metric.type} | {metric.unit or '—'} | {_labels_cell(metric)} "
                   f"| {metric.help} | {metric.source} |")
    out += ["", "#### Label values", "", "| Metric | Label | Values |", "|---|---|---|"]
    for metric in catalog:
        for label, values in metric.values:
            out.append(f"| `{metric.name}` | `{label}` | {', '.join(f'`{v}`' for v in values)} |")
    return "\n".join(out) + "\n"


def with_table(document: str) -> str:
    """``document`` with the text between the metrics markers replaced by the current table."""
    begin = document.find(MARKDOWN_BEGIN)
    end = document.find(MARKDOWN_END, begin + 1)
    if begin < 0 or end < 0:
        raise ValueError(f"no {MARKDOWN_BEGIN} ... {MARKDOWN_END} section")
    return f"{document[:begin]}{MARKDOWN_BEGIN}\n{markdown_table()}{document[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporters.catalog", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the README metric table")
    parser.add_argument("--update", metavar="FILE", nargs="+", default=[],
                        help=f"rewrite the table between {MARKDOWN_BEGIN} and {MARKDOWN_END} in FILE")
    args = parser.parse_args(argv)
    for path in args.update:
        try:
            with open(path, encoding="utf-8") as f:
                updated = with_table(f.read())
            with open(path, "w", encoding="utf-8") as f:
                f.write(updated)
        except (OSError, ValueError) as exc:
            parser.error(f"{path}: {exc}")
    if args.markdown:
        sys.stdout.write(markdown_table())
    elif not args.update:
        for metric in CATALOG:
            sys.stdout.write(f"{metric.name} {metric.type} {','.join(metric.labels)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
