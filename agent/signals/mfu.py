"""Estimated FLOPs and DRAM bytes from activity counters; peak gauges from the spec table.

* Tensor FLOPs = tensor-pipe activity x peak dense FLOP/s of the configured precision at the
  current SM clock x dt. The activity ratio is per elapsed cycle, so the clock factor
  (``GpuSpec.peak_at_clock``) is what makes throttling cost FLOPs. HFU-like: it counts what
  the pipes did (recomputation, padding, optimizer work), not the model's useful FLOPs.
* Non-tensor fp32/fp64 FLOPs (``pipe_flops``) = FP32/FP64 pipe activity x that peak at the
  clock x dt: the peak assumes every instruction is an FMA, so it is an upper bound.
* DRAM bytes = DRAM bandwidth utilization x peak bandwidth x dt (HBM clocks do not throttle).
"""

from __future__ import annotations

from agent.model import GpuReading
from agent.signals.settings import SignalSettings
from agent.snapshot import CounterKey
from agent.specs import GpuSpec

GPU_IDLE_BIT = 0x1  # nvmlClocksEventReasonGpuIdle
PEAK_FLOPS = "gpulse_gpu_peak_flops"
PEAK_BANDWIDTH = "gpulse_gpu_peak_memory_bandwidth_bytes_per_second"


def peak_gauges(spec: GpuSpec) -> dict[CounterKey, float]:
    out: dict[CounterKey, float] = {
        (PEAK_FLOPS, (("precision", precision),)): flops
        for precision, flops in spec.peak_flops.items() if flops > 0
    }
    if spec.memory_bandwidth_bytes_per_second > 0:
        out[(PEAK_BANDWIDTH, ())] = spec.memory_bandwidth_bytes_per_second
    return out


def active_clock_hz(reading: GpuReading, last: float | None) -> float | None:
    """The SM clock kernels run at: the reading's, unless GpuIdle says it dropped to idle clocks.

    A job that waits a while between bursts lets the clock fall to idle; a sample taken then
    says nothing about the clock of the bursts, so the last clock seen while active stands.
    """
    if reading.sm_clock_hz is None:
        return last
    if reading.clock_event_reasons is not None and reading.clock_event_reasons & GPU_IDLE_BIT and last:
        return last
    return reading.sm_clock_hz


def estimate_flops(cur: GpuReading, clock_mhz: float | None, spec: GpuSpec, settings: SignalSettings,
                   dt: float) -> dict[str, float]:
    """FLOPs of the interval from ``cur``'s window-average pipe activity at SM clock ``clock_mhz``."""
    clock = clock_mhz
    if clock is None or dt <= 0 or spec.peak_clock_mhz <= 0:
        return {}
    out: dict[str, float] = {}
    pipes: list[tuple[str, float | None]] = []
    if settings.tensor_precision:
        pipes.append((settings.precision, cur.tensor_active_ratio))
    if settings.pipe_flops or not settings.tensor_precision:
        pipes += [("fp32", cur.fp32_active_ratio), ("fp64", cur.fp64_active_ratio)]
    for precision, activity in pipes:
        if activity is None or precision in out:
            continue
        peak = spec.peak_at_clock(precision, clock)
        if peak is not None and peak > 0:
            out[precision] = activity * peak * dt
    return out


def estimate_dram_bytes(cur: GpuReading, spec: GpuSpec, dt: float) -> float | None:
    if cur.dram_active_ratio is None or spec.memory_bandwidth_bytes_per_second <= 0:
        return None
    return cur.dram_active_ratio * spec.memory_bandwidth_bytes_per_second * dt
