from __future__ import annotations

import pytest

from agent.signals.accounting import executing_fraction, executing_shares, is_assigned, is_memory_bound, split
from agent.signals.settings import SignalSettings
from agent.signals.throttling import ThrottleFractions

S = SignalSettings()


def test_split_books_executing_fraction_and_rest_to_the_starved_state() -> None:
    out = split(2.0, 0.4, {"compute_bound": 1.0}, "starved_host")
    assert out == pytest.approx({"compute_bound": 0.8, "starved_host": 1.2})
    assert sum(out.values()) == pytest.approx(2.0, abs=1e-12)


def test_split_adds_up_to_dt_for_every_mix() -> None:
    for e in (0.0, 0.13, 0.5, 0.999, 1.0, 1.3, -0.2):
        shares = executing_shares(min(1.0, max(0.0, e)), ThrottleFractions(0.1, 0.3), memory_bound=True)
        out = split(0.7, e, shares, "starved_io")
        assert sum(out.values()) == pytest.approx(0.7, abs=1e-12)
        assert all(v >= 0 for v in out.values())


def test_fully_executing_books_nothing_to_starvation() -> None:
    out = split(1.0, 1.0, {"compute_bound": 1.0}, "starved_other")
    assert out == pytest.approx({"compute_bound": 1.0})


def test_throttled_share_is_violation_time_over_executing_time() -> None:
    # Executing 40 % of the interval, power-capped for all of it: 0.4 violation time.
    shares = executing_shares(0.4, ThrottleFractions(power=0.4, thermal=0.0), memory_bound=False)
    assert shares == pytest.approx({"throttled_power": 1.0})
    # Capped for half of a fully busy interval.
    shares = executing_shares(1.0, ThrottleFractions(power=0.5, thermal=0.0), memory_bound=False)
    assert shares == pytest.approx({"throttled_power": 0.5, "compute_bound": 0.5})


def test_power_takes_priority_over_thermal_and_the_rest_is_memory_bound() -> None:
    shares = executing_shares(1.0, ThrottleFractions(power=0.3, thermal=0.9), memory_bound=True)
    assert shares == pytest.approx({"throttled_power": 0.3, "throttled_thermal": 0.7})
    shares = executing_shares(1.0, ThrottleFractions(power=0.2, thermal=0.3), memory_bound=True)
    assert shares == pytest.approx({"throttled_power": 0.2, "throttled_thermal": 0.3, "memory_bound": 0.5})


def test_assigned_when_a_process_is_listed_even_without_activity(build) -> None:
    assert is_assigned(build.reading(), 0.0, S)


def test_idle_when_no_process_and_no_activity(build) -> None:
    assert not is_assigned(build.reading(processes=[]), 0.01, S)


def test_activity_without_a_listed_process_is_an_unlisted_owner(build) -> None:
    assert is_assigned(build.reading(processes=[]), 0.5, S)


def test_unknown_process_list_falls_back_to_memory_used(build) -> None:
    assert is_assigned(build.reading(processes=None, memory_used_bytes=30 * 1024**3), 0.0, S)
    assert not is_assigned(build.reading(processes=None, memory_used_bytes=500 * 1024**2), 0.0, S)
    # An empty list is trusted: memory held by no listed process does not make it assigned.
    assert not is_assigned(build.reading(processes=[], memory_used_bytes=30 * 1024**3), 0.0, S)


def test_memory_bound_by_roofline_judged_while_executing(build) -> None:
    decode = build.reading(dram_active_ratio=0.7, tensor_active_ratio=0.1, fp32_active_ratio=0.05)
    training = build.reading(dram_active_ratio=0.4, tensor_active_ratio=0.6)
    assert is_memory_bound(decode, 1.0, S)
    assert not is_memory_bound(training, 1.0, S)
    # The same decode executing 40 % of the interval: window averages are 0.4x.
    bursty = build.reading(dram_active_ratio=0.28, tensor_active_ratio=0.04)
    assert is_memory_bound(bursty, 0.4, S)


def test_memory_bound_threshold_is_configurable(build) -> None:
    r = build.reading(dram_active_ratio=0.45, tensor_active_ratio=0.1)
    assert not is_memory_bound(r, 1.0, S)
    assert is_memory_bound(r, 1.0, SignalSettings(memory_bound_dram_ratio=0.4))


def test_memory_bound_fallback_on_utilization_memory_without_gpm(build) -> None:
    r = build.reading(utilization_gpu_ratio=1.0, utilization_memory_ratio=0.8)
    assert is_memory_bound(r, 1.0, S)
    assert not is_memory_bound(build.reading(utilization_gpu_ratio=1.0, utilization_memory_ratio=0.3), 1.0, S)
    assert not is_memory_bound(r, 1.0, SignalSettings(memory_bound_memory_util_ratio=None))


def test_executing_fraction_sources(build) -> None:
    # Kernels ran 40 % of the time and filled the SMs (0.39 SM activity): executing 40 %.
    both = build.reading(utilization_samples_ratio=0.4, sm_active_ratio=0.39)
    assert executing_fraction(both, S) == (pytest.approx(0.4), "utilization_samples")
    # A stream of tiny kernels: busy all the time, 8 % of the SMs. Executing 10 %.
    tiny = build.reading(utilization_samples_ratio=1.0, sm_active_ratio=0.08)
    assert executing_fraction(tiny, S) == (pytest.approx(0.1), "gpm_sm_active")
    assert executing_fraction(build.reading(sm_active_ratio=0.7), S) == (0.7, "gpm_sm_active")
    assert executing_fraction(build.reading(utilization_samples_ratio=0.3, utilization_gpu_ratio=1.0), S) == \
        (0.3, "utilization_samples")
    assert executing_fraction(build.reading(utilization_gpu_ratio=1.2), S) == (1.0, "utilization_gpu")
    assert executing_fraction(build.reading(), S) == (None, None)
