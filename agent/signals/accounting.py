"""GPU time accounting: split one interval ``dt`` among the nine states of GPU_STATES.

* ``unavailable`` — the reading failed (lost, unresponsive, error) or gave no activity at all;
* ``idle`` — no compute process holds the GPU (see ``is_assigned``);
* otherwise the executing fraction ``e`` (``executing_fraction``) books ``e·dt`` to executing
  states and ``(1-e)·dt`` to the starvation cause. The executing time is split: the share with
  clocks held down by the power cap/brake → ``throttled_power``, then by thermal slowdown →
  ``throttled_thermal``; the rest is ``memory_bound`` when the roofline rule holds, else
  ``compute_bound``.

The increments of one interval always add up to ``dt``.
"""

from __future__ import annotations

from agent.model import GpuReading
from agent.signals.settings import SignalSettings
from agent.signals.throttling import ThrottleFractions

EXECUTING_STATES = ("throttled_power", "throttled_thermal", "memory_bound", "compute_bound")


def executing_fraction(reading: GpuReading, settings: SignalSettings) -> tuple[float | None, str | None]:
    """The share of the interval the GPU executed, and where it came from.

    The high-rate samples say how long a kernel ran; GPM SM activity says how much of the chip
    it filled. Both known: ``min(samples, sm_active / executing_full_sm_ratio)``, so a job that
    keeps the SMs busy while its kernels run counts as executing all that time, and a stream of
    tiny kernels (a launch-bound loop) does not. Otherwise the best single source
    (``GpuReading.executing_ratio``: GPM, samples, utilization.gpu).
    """
    sm, samples = reading.sm_active_ratio, reading.utilization_samples_ratio
    if sm is not None and samples is not None:
        filled = sm / settings.executing_full_sm_ratio
        if samples <= filled:
            return min(1.0, max(0.0, samples)), "utilization_samples"
        return min(1.0, max(0.0, filled)), "gpm_sm_active"
    ratio, source = reading.executing_ratio()
    if ratio is None:
        return None, None
    return min(1.0, max(0.0, ratio)), source


def is_assigned(reading: GpuReading, executing: float, settings: SignalSettings) -> bool:
    """A compute process holds the GPU.

    With a process list: any listed process, or activity above ``idle_max_executing_ratio``
    (NVML lists nothing for processes in another PID namespace, yet their kernels run).
    Without one (not polled yet, unsupported): that activity rule, or memory used above
    ``idle_max_memory_used_bytes`` (a waiting process still holds its memory).
    """
    if reading.processes:
        return True
    if executing > settings.idle_max_executing_ratio:
        return True
    if reading.processes is None and reading.memory_used_bytes is not None:
        return reading.memory_used_bytes > settings.idle_max_memory_used_bytes
    return False


def _while_executing(value: float | None, executing: float) -> float | None:
    if value is None or executing <= 0:
        return None
    return min(1.0, value / executing)


def is_memory_bound(reading: GpuReading, executing: float, settings: SignalSettings) -> bool:
    """Roofline: DRAM near its ceiling while the compute pipes are well below theirs.

    Window averages are divided by the executing fraction: they are judged on the time a
    kernel ran. Without the GPM DRAM metric, utilization.memory stands in (weaker).
    """
    dram = _while_executing(reading.dram_active_ratio, executing)
    if dram is not None:
        pipes = [reading.tensor_active_ratio, reading.fp16_active_ratio, reading.fp32_active_ratio,
                 reading.fp64_active_ratio]
        busiest = max((p for p in pipes if p is not None), default=None)
        compute = _while_executing(busiest, executing) if busiest is not None else 0.0
        return (dram >= settings.memory_bound_dram_ratio
                and (compute or 0.0) < settings.memory_bound_compute_ratio)
    threshold = settings.memory_bound_memory_util_ratio
    if threshold is None or reading.utilization_memory_ratio is None or not reading.utilization_gpu_ratio:
        return False
    # Both are last-sample-period figures: judge memory-controller time against kernel time.
    return reading.utilization_memory_ratio / reading.utilization_gpu_ratio >= threshold


def executing_shares(executing: float, throttled: ThrottleFractions, memory_bound: bool) -> dict[str, float]:
    """Shares (summing to 1) of the executing time per executing state.

    Violation time is interval time; power throttling happens while kernels run, so the
    throttled share of executing time is ``fraction / e`` (capped at 1): a job executing 40 %
    of the interval and capped for all of it shows 0.4 violation time and is 100 % throttled.
    Power first, then thermal, by the states' priority.
    """
    if executing <= 0:
        return {}
    power = min(1.0, throttled.power / executing)
    thermal = min(1.0 - power, throttled.thermal / executing)
    rest = 1.0 - power - thermal
    shares = {"throttled_power": power, "throttled_thermal": thermal,
              "memory_bound" if memory_bound else "compute_bound": rest}
    return {k: v for k, v in shares.items() if v > 0}


def split(dt: float, executing: float, shares: dict[str, float], starved_state: str) -> dict[str, float]:
    """``executing·dt`` by ``shares``, the rest to ``starved_state``; the parts add up to ``dt``."""
    e = min(1.0, max(0.0, executing))
    out: dict[str, float] = {}
    for state, share in shares.items():
        out[state] = out.get(state, 0.0) + e * dt * share
    booked = sum(out.values())
    if booked < dt:
        out[starved_state] = out.get(starved_state, 0.0) + (dt - booked)
    return {k: v for k, v in out.items() if v > 0} or {starved_state: dt}


def whole(dt: float, state: str) -> dict[str, float]:
    return {state: dt}
