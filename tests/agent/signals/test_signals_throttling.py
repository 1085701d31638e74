from __future__ import annotations

import pytest

from agent.model import DeviceStatus
from agent.signals.throttling import (
    active_reasons,
    clock_lost_seconds,
    power_headroom,
    thermal_headroom,
    throttle_fractions,
    throttle_seconds,
)


def test_counter_deltas_give_seconds_per_reason(build) -> None:
    prev = build.reading(violation_ns={"sw_power_cap": 10_000_000_000, "sw_thermal_slowdown": 0})
    cur = build.reading(violation_ns={"sw_power_cap": 10_600_000_000, "sw_thermal_slowdown": 0})
    out = throttle_seconds(prev, cur, 1.0)
    assert out == pytest.approx({"sw_power_cap": 0.6, "sw_thermal_slowdown": 0.0})


def test_counter_wins_over_bitmask_and_bitmask_covers_reasons_without_counter(build) -> None:
    prev = build.reading(violation_ns={"sw_power_cap": 0})
    cur = build.reading(violation_ns={"sw_power_cap": 250_000_000}, clock_event_reasons=0x004 | 0x008 | 0x001)
    out = throttle_seconds(prev, cur, 2.0)
    # sw_power_cap from its counter (0.25 s, not 2 s); hw_slowdown from the bit; gpu_idle is not a throttle.
    assert out == pytest.approx({"sw_power_cap": 0.25, "hw_slowdown": 2.0})


def test_counter_reset_or_missing_prev_skips_the_counter(build) -> None:
    prev = build.reading(violation_ns={"sw_power_cap": 9_000_000_000})
    cur = build.reading(violation_ns={"sw_power_cap": 1_000})
    assert throttle_seconds(prev, cur, 1.0) == {}
    assert throttle_seconds(None, cur, 1.0) == {}
    lost = build.reading(status=DeviceStatus.LOST, violation_ns={})
    assert throttle_seconds(lost, cur, 1.0) == {}


def test_counter_delta_is_clipped_to_the_interval(build) -> None:
    prev = build.reading(violation_ns={"sw_thermal_slowdown": 0})
    cur = build.reading(violation_ns={"sw_thermal_slowdown": 3_000_000_000})
    assert throttle_seconds(prev, cur, 1.0) == {"sw_thermal_slowdown": 1.0}


def test_reason_names_from_bits() -> None:
    assert active_reasons(0x004 | 0x040) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert active_reasons(None) == []


def test_fractions_add_power_and_brake_and_thermal_counters(build) -> None:
    cur = build.reading()
    f = throttle_fractions({"sw_power_cap": 0.3, "hw_power_brake_slowdown": 0.1, "hw_thermal_slowdown": 0.2,
                            "sync_boost": 1.0}, 1.0, cur, 5.0)
    assert (f.power, f.thermal) == pytest.approx((0.4, 0.2))


def test_hw_slowdown_counts_as_thermal_near_the_threshold_else_power(build) -> None:
    limits = {"slowdown": 88.0}
    hot = build.reading(temperatures_celsius={"gpu": 86.0}, temperature_thresholds_celsius=limits)
    cool = build.reading(temperatures_celsius={"gpu": 50.0}, temperature_thresholds_celsius=limits)
    assert throttle_fractions({"hw_slowdown": 1.0}, 1.0, hot, 5.0).thermal == 1.0
    assert throttle_fractions({"hw_slowdown": 1.0}, 1.0, cool, 5.0).power == 1.0


def test_clock_lost_is_executing_time_times_missing_clock() -> None:
    assert clock_lost_seconds(0.8, 990e6, 1980e6) == pytest.approx(0.4)
    assert clock_lost_seconds(0.8, None, 1980e6) == 0.0
    assert clock_lost_seconds(0.8, 1980e6, 1980e6) == 0.0


def test_hw_slowdown_bit_is_not_counted_twice_where_hw_counters_exist(build) -> None:
    # A power brake held 0.5 s of a 5 s interval; the HwSlowdown bit seen at the sample says nothing more.
    prev = build.reading(violation_ns={"hw_power_brake_slowdown": 0, "hw_thermal_slowdown": 0})
    cur = build.reading(violation_ns={"hw_power_brake_slowdown": 500_000_000, "hw_thermal_slowdown": 0},
                        clock_event_reasons=0x080 | 0x008)
    seconds = throttle_seconds(prev, cur, 5.0)
    assert seconds["hw_slowdown"] == 5.0  # still exported as a reason with its bitmask time
    assert throttle_fractions(seconds, 5.0, cur, 5.0).power == pytest.approx(0.1)


def test_headrooms(build) -> None:
    r = build.reading(temperatures_celsius={"gpu": 85.0}, temperature_thresholds_celsius={"slowdown": 88.0},
                      power_watts=380.0, power_limit_watts=400.0)
    assert thermal_headroom(r) == 3.0
    assert power_headroom(r) == 20.0
    only_margin = build.reading(temperature_margin_celsius=12.0)
    assert thermal_headroom(only_margin) == 12.0
    assert power_headroom(build.reading()) is None
