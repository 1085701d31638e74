"""Thresholds and rules of the derived signals; every one documented in docs/signals.md.

Config keys are ``signals.<field>`` (YAML) or ``GPULSE_SIGNALS__<FIELD>`` (environment).
Ratios are 0..1. "While executing" means the value divided by the interval's executing
fraction, so a GPU that works 40 % of a second is judged on what it did in that 40 %.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from agent.specs import PRECISIONS

TENSOR_PRECISIONS = ("tf32", "bf16", "fp16", "fp8", "int8", "fp64_tensor")


class SignalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # --- MFU / MBU -------------------------------------------------------------------
    # The training precision the estimated MFU is computed for.
    precision: str = "bf16"
    # Also estimate non-tensor fp32/fp64 FLOPs from the GPM FP32/FP64 pipe activity.
    pipe_flops: bool = True

    # --- executing fraction ----------------------------------------------------------
    # With both the high-rate utilization samples (time with a kernel running) and GPM SM activity
    # (how much of the chip those kernels fill), the executing fraction is
    # min(samples, SM activity / executing_full_sm_ratio): kernels that keep at least this share of
    # the SMs busy count as fully executing (NVIDIA: SM activity >= 0.8 is needed to use the chip);
    # below it, idle SMs count as not executing (tiny kernels, launch-bound loops). With one source
    # only: GPM SM activity, else the samples, else utilization.gpu.
    executing_full_sm_ratio: float = Field(default=0.8, gt=0, le=1)

    # --- idle ------------------------------------------------------------------------
    # With no compute process listed, activity above this means a process NVML cannot list
    # (a container without the host PID namespace): the GPU is assigned, not idle.
    idle_max_executing_ratio: float = Field(default=0.05, ge=0, le=1)
    # Only when the process list is unknown (not read yet / unsupported): memory used above this
    # means something holds the GPU. A bare CUDA context takes about 0.5 GiB.
    idle_max_memory_used_bytes: int = Field(default=1024**3, ge=0)

    # --- throttling ------------------------------------------------------------------
    # HwSlowdown (0x8) names no cause and has no counter. Where the device has no HW thermal / power
    # brake counters, it counts as thermal when the GPU is within this many degrees of its slowdown
    # threshold, else as power (brake / fast trigger).
    hw_slowdown_thermal_margin_celsius: float = Field(default=5.0, ge=0)

    # --- memory-bound (roofline) -----------------------------------------------------
    # Executing time is memory-bound when DRAM bandwidth utilization while executing is at or
    # above memory_bound_dram_ratio (the practical ceiling is about 0.8) and the busiest compute
    # pipe (tensor, FP16, FP32, FP64) while executing is below memory_bound_compute_ratio.
    memory_bound_dram_ratio: float = Field(default=0.5, ge=0, le=1)
    memory_bound_compute_ratio: float = Field(default=0.35, ge=0, le=1)
    # Devices without the GPM DRAM metric (pre-Hopper): utilization.memory (memory-controller busy
    # time) over utilization.gpu at or above this counts as memory-bound. null disables the fallback.
    memory_bound_memory_util_ratio: float | None = Field(default=0.6, ge=0, le=1)

    # --- starvation: host CPU (first rule that holds → starved_host) -----------------
    # The tree's cgroup CPU use over its quota.
    host_quota_used_ratio: float = Field(default=0.9, gt=0)
    # The tree's cgroup throttled seconds per second.
    host_cgroup_throttled_ratio: float = Field(default=0.05, gt=0)
    # The tree's CPU use over the host's CPU count.
    host_cores_used_ratio: float = Field(default=0.9, gt=0)
    # The busiest thread of the tree, CPU seconds per second (a thread pinned at one core).
    host_pinned_thread_ratio: float = Field(default=0.9, gt=0)
    # Host PSI is shared by every GPU of the node, so it never blames a tree alone: CPU pressure
    # ("some" stall seconds per second) at or above host_cpu_pressure_ratio counts while at least
    # host_pressure_min_running_threads of the tree's threads are runnable.
    host_cpu_pressure_ratio: float = Field(default=0.2, gt=0)
    host_pressure_min_running_threads: int = Field(default=2, ge=1)

    # --- starvation: I/O (first rule that holds → starved_io) ------------------------
    # Threads of the tree in D state (uninterruptible, usually block I/O) at the sample.
    io_blocked_threads: int = Field(default=1, ge=1)
    # The tree's block-I/O delay seconds per second (delay accounting, where the kernel has it on).
    io_delay_ratio: float = Field(default=0.1, gt=0)
    # Host I/O pressure ("some" seconds per second), counted while the tree's own I/O delay grew.
    io_pressure_ratio: float = Field(default=0.2, gt=0)

    # --- workload-reported FLOPs ----------------------------------------------------
    # Bearer token POST /api/v1/workloads/report requires, when set.
    report_token: SecretStr | None = None
    # A report whose increase exceeds this many times the node's peak FLOP/s x elapsed time is refused.
    report_absurd_factor: float = Field(default=10.0, gt=1)
    # A pid silent this long is forgotten (its baseline too).
    report_ttl_seconds: float = Field(default=900.0, gt=0)

    # --- diagnosis -------------------------------------------------------------------
    # A problem state must hold this share of the window to be named.
    diagnosis_min_share: float = Field(default=0.1, ge=0, le=1)
    # The window of GET /api/v1/diagnosis without ?minutes=.
    diagnosis_default_minutes: float = Field(default=5.0, gt=0)

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"unknown precision {value!r}; one of {', '.join(PRECISIONS)}")
        return value

    @property
    def tensor_precision(self) -> bool:
        return self.precision in TENSOR_PRECISIONS
