"""Device physics: limiters, counters and determinism, read straight off the device models."""

from __future__ import annotations

import dataclasses
import io
import random
import textwrap

import pytest

from agent.sim.fleet import Fleet
from agent.sim.physics import (
    FI_HW_THERMAL,
    FI_LOW_UTIL,
    FI_POWER,
    FI_SW_THERMAL,
    GPU_IDLE,
    HW_THERMAL,
    SW_POWER_CAP,
    SW_THERMAL,
)
from agent.sim.scenario import load_scenario, parse_scenario
from agent.sim.truth import read_truth


def _fleet(text: str, truth: io.StringIO | None = None) -> Fleet:
    return Fleet.from_scenario(parse_scenario(textwrap.dedent(text)), truth=truth)


ONE_TRAINING = """
    seed: 1
    duration_s: 200
    gpus: [{model: H100-SXM, workload: {kind: training, precision: bf16}}]
    events: [{at_s: 10, gpu: 0, kind: %s}]
"""


def test_same_scenario_and_seed_give_the_same_readings_whenever_read() -> None:
    scenario = load_scenario("default").with_overrides(duration_s=100)
    out_a, out_b = io.StringIO(), io.StringIO()
    a = Fleet.from_scenario(scenario, truth=out_a)
    b = Fleet.from_scenario(scenario, truth=out_b)
    rng = random.Random(1)
    for t in sorted(rng.uniform(0, 95) for _ in range(150)):  # a reads often, at odd times
        for m in a.models:
            m.snapshot(t)
    for t in (95.0, 95.37):
        for ma, mb in zip(a.models, b.models, strict=True):
            assert dataclasses.asdict(ma.snapshot(t)) == dataclasses.asdict(mb.snapshot(t))
    a.finish()
    b.finish()
    assert sorted(out_a.getvalue().splitlines()) == sorted(out_b.getvalue().splitlines())
    other = Fleet.from_scenario(scenario.with_overrides(seed=8))
    assert other.models[0].snapshot(95.0).temperature_gpu_c != a.models[0].snapshot(95.0).temperature_gpu_c
    assert other.models[0].identity.uuid != a.models[0].identity.uuid


def test_cooling_failure_reaches_slowdown_and_cuts_clocks() -> None:
    fleet = _fleet(ONE_TRAINING % "cooling_failure")
    gpu = fleet.models[0]
    before = gpu.snapshot(9.9)
    slowdown = before.thresholds_c[1]
    assert before.temperature_gpu_c < 80
    assert before.sm_clock_mhz == gpu.spec.max_sm_clock_mhz
    assert not before.clock_event_reasons & (SW_THERMAL | HW_THERMAL)
    snaps = [gpu.snapshot(10 + 0.25 * i) for i in range(1, 400)]
    assert max(s.temperature_gpu_c for s in snaps) >= slowdown
    assert any(s.clock_event_reasons & HW_THERMAL for s in snaps)
    end = snaps[-1]
    assert end.clock_event_reasons & SW_THERMAL
    assert end.sm_clock_mhz < 0.7 * gpu.spec.max_sm_clock_mhz
    assert slowdown - 5 <= end.temperature_gpu_c <= slowdown  # held under the threshold
    throttled_s = (end.violation_ns[FI_SW_THERMAL] - before.violation_ns[FI_SW_THERMAL]) / 1e9
    assert 80 < throttled_s <= end.t - 10
    assert end.violation_ns[FI_HW_THERMAL] > 0
    fleet.finish()
    summary = fleet.truth_sink.summary()["summary"]["0"]
    assert summary["throttled_thermal"] > 150


def test_power_cap_holds_power_and_sets_sw_power_cap() -> None:
    truth = io.StringIO()
    fleet = _fleet(
        (ONE_TRAINING % "power_cap").replace("kind: power_cap", "kind: power_cap, watts: 350"), truth
    )
    gpu = fleet.models[0]
    before = gpu.snapshot(9.9)
    assert before.power_average_mw / 1000 > 500
    assert not before.clock_event_reasons & SW_POWER_CAP
    for t in range(12, 200):
        snap = gpu.snapshot(float(t))
        assert snap.power_average_mw == pytest.approx(350_000, rel=0.05), t
        assert snap.clock_event_reasons & SW_POWER_CAP
        assert snap.power_limit_mw == 350_000
        assert snap.sm_clock_mhz < 0.8 * gpu.spec.max_sm_clock_mhz
    end = gpu.snapshot(199.0)
    assert (end.violation_ns[FI_POWER] - before.violation_ns[FI_POWER]) / 1e9 == pytest.approx(189.1, abs=0.2)
    fleet.finish()
    log = read_truth(truth.getvalue().splitlines())
    # throttling costs FLOPs in proportion to the clock
    free, capped = log.executed_flops(0, 2, 8) / 6, log.executed_flops(0, 100, 106) / 6
    assert capped / free == pytest.approx(end.sm_clock_mhz / gpu.spec.max_sm_clock_mhz, rel=0.02)
    assert log.summary[0]["throttled_power"] == pytest.approx(190.0, abs=0.1)


def test_energy_counter_is_the_integral_of_power() -> None:
    fleet = _fleet("""
        duration_s: 200
        gpus:
          - {model: H100-SXM, workload: {kind: training, compute_s: 0.1, wait_s: 0.15, wait_cause: host_cpu}}
          - {model: A100-SXM-80GB, workload: {kind: inference_decode}}
          - {model: L4}
        events:
          - {at_s: 60, gpu: 0, kind: power_cap, watts: 250}
          - {at_s: 80, gpu: 1, kind: cooling_failure}
    """)
    for gpu in fleet.models:
        start = gpu.snapshot(5.0)
        integral = fine = 0.0
        for k in range(1, 3801):
            t = 5.0 + 0.05 * k
            snap = gpu.snapshot(t)
            fine += snap.power_instant_mw / 1000 * 0.05  # instantaneous readings, every step
            if k % 20 == 0:  # the 1 s average sampled once a second
                integral += snap.power_average_mw / 1000.0
        end = gpu.snapshot(195.0)
        energy = (end.energy_mj - start.energy_mj) / 1000.0
        assert energy == pytest.approx(integral, rel=0.02), gpu.spec.key
        assert energy == pytest.approx(fine, rel=0.02), gpu.spec.key


def test_readings_older_than_the_history_are_refused() -> None:
    gpu = _fleet("gpus: [{model: H100-SXM}]").models[0]
    gpu.snapshot(100.0)
    assert gpu.snapshot(75.0).t == 75.0
    with pytest.raises(ValueError, match="older than the 30 s of physics kept"):
        gpu.snapshot(10.0)


def test_idle_gpu_reports_gpu_idle_and_idle_power() -> None:
    fleet = _fleet("gpus: [{model: H100-SXM}]")
    snap = fleet.models[0].snapshot(30.0)
    assert snap.clock_event_reasons & GPU_IDLE
    assert snap.sm_clock_mhz == fleet.models[0].params.idle_clock_mhz
    assert snap.processes == []
    assert 60 < snap.power_average_mw / 1000 < 90
    assert snap.violation_ns[FI_LOW_UTIL] > 25e9
    assert fleet.models[0].activity(0, 30).busy == 0.0


def test_long_waits_drop_to_idle_clocks_short_ones_do_not() -> None:
    fleet = _fleet("""
        gpus:
          - {model: H100-SXM, workload: {kind: training, compute_s: 1.0, wait_s: 3.0, wait_cause: other}}
          - {model: H100-SXM, workload: {kind: training, compute_s: 0.1, wait_s: 0.15, wait_cause: io}}
    """)
    long_wait, short_wait = fleet.models
    assert long_wait.snapshot(1.5).sm_clock_mhz == long_wait.spec.max_sm_clock_mhz  # 0.5 s into the wait
    late = long_wait.snapshot(3.2)  # 2.2 s into the wait
    assert late.clock_event_reasons & GPU_IDLE and late.sm_clock_mhz < 500
    assert late.processes  # still assigned
    assert not any(short_wait.snapshot(t / 10).clock_event_reasons & GPU_IDLE for t in range(10, 100))


def test_faults_and_health_events() -> None:
    fleet = _fleet("""
        gpus: [{model: H100-SXM, count: 2, workload: {kind: training}}]
        events:
          - {at_s: 5, gpu: 0, kind: xid, xid: 79}
          - {at_s: 6, gpu: 0, kind: gpu_lost}
          - {at_s: 20, gpu: 0, kind: gpu_recovered}
          - {at_s: 10, gpu: 1, kind: nvml_hang, seconds: 30}
          - {at_s: 12, gpu: 1, kind: ecc_uncorrectable, count: 2}
          - {at_s: 13, gpu: 1, kind: row_remap_pending}
    """)
    g0, g1 = fleet.models
    # the schedule is published up front (the fake's event wait sleeps until the next XID)
    assert g0.xids == [(5.0, 79)] and g1.xids == []
    assert g0.snapshot(4.9).xids == [] and not g0.snapshot(4.9).lost
    assert g0.snapshot(5.5).xids == [(5.0, 79)]
    assert g0.snapshot(6.0).lost and g0.snapshot(19.9).lost
    back = g0.snapshot(20.0)
    assert not back.lost and back.processes == []  # its job died with the GPU
    assert g1.snapshot(9.9).hang_until is None
    assert g1.snapshot(10.0).hang_until == 40.0 and g1.snapshot(39.9).hang_until == 40.0
    assert g1.snapshot(40.0).hang_until is None
    assert g0.snapshot(15.0).hang_until is None  # the hang is on one device only
    assert g1.snapshot(11.9).ecc_volatile_uncorrected == 0
    after = g1.snapshot(13.5)
    assert after.ecc_volatile_uncorrected == after.ecc_aggregate_uncorrected == 2
    assert after.remapped_rows_pending and after.remapped_rows_uncorrected == 1


def test_process_list_and_memory_follow_the_workload() -> None:
    fleet = _fleet("""
        gpus: [{model: H100-SXM, workload: {kind: training, memory_gib: 40}}]
        events:
          - {at_s: 10, gpu: 0, kind: workload, workload: {kind: inference_decode}}
          - {at_s: 20, gpu: 0, kind: process_exit}
    """)
    gpu = fleet.models[0]
    first, second, gone = gpu.snapshot(5.0), gpu.snapshot(15.0), gpu.snapshot(25.0)
    assert first.processes[0][1] == 40 * 1024**3 == first.memory_used_bytes
    assert second.processes[0][0] != first.processes[0][0]  # a new process
    assert gone.processes == [] and gone.memory_used_bytes == 0
    assert first.process_sm_pct[first.processes[0][0]] > 90


def test_readings_are_plausible_for_every_model() -> None:
    from agent.specs import SPECS

    text = "gpus:\n" + "".join(
        f"  - {{model: {key}, workload: {{kind: training, precision: {next(iter(spec.peak_flops))}}}}}\n"
        for key, spec in SPECS.items()
    )
    fleet = _fleet(text)
    for gpu in fleet.models:
        snap = gpu.snapshot(60.0)
        watts = snap.power_average_mw / 1000
        assert 0.4 * gpu.spec.tdp_watts < watts <= gpu.spec.tdp_watts * 1.01, gpu.spec.key
        assert 40 < snap.temperature_gpu_c < snap.thresholds_c[3], gpu.spec.key
        assert snap.memory_used_bytes <= snap.memory_total_bytes
