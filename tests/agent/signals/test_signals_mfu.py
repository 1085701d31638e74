from __future__ import annotations

import pytest

from agent.signals.mfu import (
    PEAK_BANDWIDTH,
    PEAK_FLOPS,
    active_clock_hz,
    estimate_dram_bytes,
    estimate_flops,
    peak_gauges,
)
from agent.signals.settings import SignalSettings
from agent.specs import SPECS

H100 = SPECS["H100-SXM"]


def test_tensor_flops_scale_with_activity_and_clock(build) -> None:
    r = build.reading(tensor_active_ratio=0.5)
    out = estimate_flops(r, 1830.0, H100, SignalSettings(pipe_flops=False), 2.0)
    assert out == pytest.approx({"bf16": 0.5 * 989.5e12 * 2.0})
    out = estimate_flops(r, 915.0, H100, SignalSettings(pipe_flops=False), 2.0)
    assert out["bf16"] == pytest.approx(0.5 * 989.5e12 * 2.0 / 2)


def test_active_clock_ignores_idle_clocks_of_a_waiting_job(build) -> None:
    waiting = build.reading(sm_clock_hz=345e6, clock_event_reasons=0x1)
    assert active_clock_hz(waiting, 1980e6) == 1980e6
    assert active_clock_hz(waiting, None) == 345e6  # nothing better known yet
    assert active_clock_hz(build.reading(sm_clock_hz=1500e6, clock_event_reasons=0x4), 1980e6) == 1500e6
    assert active_clock_hz(build.reading(sm_clock_hz=None), 1700e6) == 1700e6


def test_configured_precision_and_pipe_flops(build) -> None:
    r = build.reading(tensor_active_ratio=0.5, fp32_active_ratio=0.2)
    out = estimate_flops(r, 1830.0, H100, SignalSettings(precision="fp8"), 1.0)
    assert out == pytest.approx({"fp8": 0.5 * 1979e12, "fp32": 0.2 * 67e12})
    fp32_only = estimate_flops(r, 1830.0, H100, SignalSettings(precision="fp32", pipe_flops=False), 1.0)
    assert fp32_only == pytest.approx({"fp32": 0.2 * 67e12})


def test_no_activity_counter_or_clock_no_estimate(build) -> None:
    assert estimate_flops(build.reading(), 1830.0, H100, SignalSettings(), 1.0) == {}
    assert estimate_flops(build.reading(tensor_active_ratio=0.5), None, H100, SignalSettings(), 1.0) == {}
    assert estimate_dram_bytes(build.reading(), H100, 1.0) is None


def test_dram_bytes(build) -> None:
    out = estimate_dram_bytes(build.reading(dram_active_ratio=0.6), H100, 5.0)
    assert out == pytest.approx(0.6 * 3.35e12 * 5)


def test_peak_gauges_cover_every_precision_and_bandwidth() -> None:
    g = peak_gauges(H100)
    assert g[(PEAK_FLOPS, (("precision", "bf16"),))] == 989.5e12
    assert g[(PEAK_BANDWIDTH, ())] == 3.35e12
    assert len([k for k in g if k[0] == PEAK_FLOPS]) == len(H100.peak_flops)


def test_unknown_precision_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="precision"):
        SignalSettings(precision="bf17")
