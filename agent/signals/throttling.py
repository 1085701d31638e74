"""Throttling: seconds per clock-event reason, the clock lost to it, thermal and power headroom.

Seconds come from the device's violation counters (cumulative ns) where it has them, else
from the instantaneous reason bitmask held for the whole interval. The power and thermal
fractions feed the time accounting: which share of the executing time ran with clocks held
down by the power cap / brake, or by a thermal slowdown.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.model import DeviceStatus, GpuReading

# NVML clock-event reason bits (NVML_REFERENCE §4) and their metric label values.
REASON_BITS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# GpuIdle says clocks drop because nothing runs: informational, not a throttle.
NOT_THROTTLES = frozenset({"gpu_idle"})
POWER_REASONS = ("sw_power_cap", "hw_power_brake_slowdown")
THERMAL_REASONS = ("sw_thermal_slowdown", "hw_thermal_slowdown")
AMBIGUOUS_REASON = "hw_slowdown"  # thermal, power brake or fast power trigger: no cause given
HW_COUNTED = ("hw_thermal_slowdown", "hw_power_brake_slowdown")


def active_reasons(bitmask: int | None) -> list[str]:
    if not bitmask:
        return []
    return [name for bit, name in REASON_BITS.items() if bitmask & bit]


def _usable_prev(prev: GpuReading | None) -> GpuReading | None:
    return prev if prev is not None and prev.status is DeviceStatus.OK else None


def counter_seconds(prev: GpuReading | None, cur: GpuReading, dt: float) -> dict[str, float]:
    """Seconds per reason from violation-counter deltas, clipped to [0, dt]; a reset skips that reason."""
    prev = _usable_prev(prev)
    if prev is None or dt <= 0:
        return {}
    out: dict[str, float] = {}
    before_ns = prev.violation_ns
    for reason, ns in cur.violation_ns.items():
        before = before_ns.get(reason)
        if before is None or ns < before:
            continue
        seconds = (ns - before) / 1e9
        out[reason] = seconds if seconds < dt else dt  # min(dt, seconds), without the call
    return out


def throttle_seconds(prev: GpuReading | None, cur: GpuReading, dt: float) -> dict[str, float]:
    """Per reason: the counter delta where the device has that counter, else bit x dt (not GpuIdle)."""
    out = counter_seconds(prev, cur, dt)
    has_counter = set(cur.violation_ns)
    for name in active_reasons(cur.clock_event_reasons):
        if name in NOT_THROTTLES or name in has_counter:
            continue
        out[name] = dt
    return out


@dataclass(frozen=True)
class ThrottleFractions:
    """Share of the interval (0..1) with clocks held down by power and by temperature."""

    power: float
    thermal: float


def throttle_fractions(seconds: dict[str, float], dt: float, cur: GpuReading,
                       hw_slowdown_thermal_margin_celsius: float) -> ThrottleFractions:
    if dt <= 0:
        return ThrottleFractions(0.0, 0.0)
    power = sum(seconds.get(r, 0.0) for r in POWER_REASONS)
    thermal = sum(seconds.get(r, 0.0) for r in THERMAL_REASONS)
    ambiguous = seconds.get(AMBIGUOUS_REASON, 0.0)
    # HwSlowdown comes with HwThermalSlowdown or HwPowerBrakeSlowdown; where the device counts
    # those in ns, they already hold the exact time and the instantaneous bit would count it twice.
    if ambiguous and not any(r in cur.violation_ns for r in HW_COUNTED):
        headroom = thermal_headroom(cur)
        if headroom is not None and headroom <= hw_slowdown_thermal_margin_celsius:
            thermal += ambiguous
        else:
            power += ambiguous
    return ThrottleFractions(min(1.0, power / dt), min(1.0, thermal / dt))


def clock_lost_seconds(executing_seconds: float, sm_clock_hz: float | None,
                       sm_clock_max_hz: float | None) -> float:
    """Executing seconds x (1 - SM clock / max SM clock): the work a slower clock cost."""
    if not sm_clock_hz or not sm_clock_max_hz or executing_seconds <= 0:
        return 0.0
    return executing_seconds * max(0.0, 1.0 - sm_clock_hz / sm_clock_max_hz)


def thermal_headroom(reading: GpuReading) -> float | None:
    """Degrees under the slowdown threshold; NVML's own margin where the threshold is not readable."""
    temp = reading.temperatures_celsius.get("gpu")
    slowdown = reading.temperature_thresholds_celsius.get("slowdown")
    if temp is not None and slowdown is not None:
        return slowdown - temp
    return reading.temperature_margin_celsius


def power_headroom(reading: GpuReading) -> float | None:
    if reading.power_limit_watts is None or reading.power_watts is None:
        return None
    return reading.power_limit_watts - reading.power_watts
