from __future__ import annotations

import logging

import pytest

from agent.model import DeviceStatus, GpuIdentity, GpuProcess, IntervalSignals
from agent.signals.engine import POWER_HEADROOM, THERMAL_HEADROOM, SignalEngine
from agent.signals.mfu import PEAK_BANDWIDTH, PEAK_FLOPS
from agent.signals.settings import SignalSettings
from agent.specs import SpecTable

H100 = "NVIDIA H100 80GB HBM3"


def _engine(**settings) -> SignalEngine:
    engine = SignalEngine(SignalSettings(**settings), SpecTable())
    for i in range(4):
        engine.set_identity(i, GpuIdentity(index=i, uuid=f"GPU-{i}", name=H100, pci_bus_id=""))
    return engine


def test_lost_or_unresponsive_books_the_whole_interval_unavailable(build) -> None:
    e = _engine()
    for status in (DeviceStatus.LOST, DeviceStatus.UNRESPONSIVE, DeviceStatus.ERROR):
        sig = e.interval(0, None, build.reading(status=status), None, 1.5)
        assert sig.state_seconds == {"unavailable": 1.5}


def test_no_activity_source_is_unavailable_not_a_guess(build) -> None:
    sig = _engine().interval(0, None, build.reading(), None, 1.0)
    assert sig.state_seconds == {"unavailable": 1.0}


def test_idle_gpu(build) -> None:
    sig = _engine().interval(0, None, build.reading(processes=[], sm_active_ratio=0.0), None, 1.0)
    assert sig.state_seconds == {"idle": 1.0}
    assert sig.executing_ratio == 0.0 and sig.executing_source == "gpm_sm_active"


def test_starved_host_split_with_evidence(build) -> None:
    e = _engine()
    p0 = build.proc(100, gpus=(0,), max_thread_cpu_seconds=10.0)
    p1 = build.proc(100, gpus=(0,), max_thread_cpu_seconds=10.99)
    e.interval(0, None, build.reading(t=0.0, sm_active_ratio=0.4), build.host(0.0, p0), 1.0)
    cur = build.reading(t=1.0, sm_active_ratio=0.4)
    sig = e.interval(0, build.reading(t=0.0), cur, build.host(1.0, p1), 1.0)
    assert sig.state_seconds == pytest.approx({"compute_bound": 0.4, "starved_host": 0.6})
    assert sig.starvation_evidence == "a thread of pid 100 (python train.py) ran at 99 % of one core"


def test_fully_executing_gpu_has_no_starvation_evidence(build) -> None:
    e = _engine()
    h = build.host(1.0, build.proc(100, gpus=(0,)))
    sig = e.interval(0, None, build.reading(sm_active_ratio=1.0), h, 1.0)
    assert sig.state_seconds == pytest.approx({"compute_bound": 1.0})
    assert sig.starvation_evidence is None


def test_power_throttling_from_counters_and_clock_lost(build) -> None:
    e = _engine()
    prev = build.reading(t=0.0, violation_ns={"sw_power_cap": 0})
    cur = build.reading(t=1.0, sm_active_ratio=1.0, violation_ns={"sw_power_cap": 700_000_000},
                        sm_clock_hz=1485e6, sm_clock_max_hz=1980e6)
    sig = e.interval(0, prev, cur, None, 1.0)
    assert sig.state_seconds == pytest.approx({"throttled_power": 0.7, "compute_bound": 0.3})
    assert sig.throttle_seconds == pytest.approx({"sw_power_cap": 0.7})
    assert sig.clock_lost_seconds == pytest.approx(0.25)


def test_thermal_bitmask_without_counters_books_the_executing_time(build) -> None:
    cur = build.reading(sm_active_ratio=0.5, clock_event_reasons=0x020)
    sig = _engine().interval(0, None, cur, None, 2.0)
    assert sig.state_seconds == pytest.approx({"throttled_thermal": 1.0, "starved_other": 1.0})
    assert sig.throttle_seconds == {"sw_thermal_slowdown": 2.0}


def test_memory_bound_decode(build) -> None:
    cur = build.reading(sm_active_ratio=1.0, dram_active_ratio=0.8, tensor_active_ratio=0.1)
    sig = _engine().interval(0, None, cur, None, 1.0)
    assert sig.state_seconds == pytest.approx({"memory_bound": 1.0})
    assert sig.estimated_dram_bytes == pytest.approx(0.8 * 3.35e12)


def test_estimated_flops_use_the_spec_of_the_identity(build) -> None:
    cur = build.reading(sm_active_ratio=1.0, tensor_active_ratio=0.5, sm_clock_hz=1830e6)
    sig = _engine(pipe_flops=False).interval(0, None, cur, None, 1.0)
    assert sig.estimated_flops == pytest.approx({"bf16": 0.5 * 989.5e12})


def test_unknown_device_gets_no_peaks_and_one_log_line_naming_the_config_key(build, caplog) -> None:
    e = SignalEngine(SignalSettings(), SpecTable())
    with caplog.at_level(logging.WARNING):
        for i in range(3):
            e.set_identity(i, GpuIdentity(index=i, uuid=f"G{i}", name="NVIDIA Future X1", pci_bus_id=""))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "specs.NVIDIA-Future-X1" in lines[0]
    cur = build.reading(sm_active_ratio=1.0, tensor_active_ratio=0.5)
    assert e.interval(0, None, cur, None, 1.0).estimated_flops == {}
    assert not any(k[0] == PEAK_FLOPS for k in e.gauges(0, cur))


def test_spec_override_in_the_config_is_used(build) -> None:
    specs = SpecTable({"X1": {"match": "Future X1", "peak_clock_mhz": 2000.0, "peak_flops": {"bf16": 2e15},
                              "memory_bandwidth_bytes_per_second": 5e12}})
    e = SignalEngine(SignalSettings(pipe_flops=False), specs)
    e.set_identity(0, GpuIdentity(index=0, uuid="G0", name="NVIDIA Future X1", pci_bus_id=""))
    cur = build.reading(sm_active_ratio=1.0, tensor_active_ratio=0.5, sm_clock_hz=2000e6)
    assert e.interval(0, None, cur, None, 1.0).estimated_flops == pytest.approx({"bf16": 1e15})
    assert e.gauges(0, cur)[(PEAK_BANDWIDTH, ())] == 5e12


def test_gauges_peaks_and_headrooms(build) -> None:
    r = build.reading(temperatures_celsius={"gpu": 70.0}, temperature_thresholds_celsius={"slowdown": 87.0},
                      power_watts=500.0, power_limit_watts=700.0)
    g = _engine().gauges(0, r)
    assert g[(THERMAL_HEADROOM, ())] == 17.0
    assert g[(POWER_HEADROOM, ())] == 200.0
    assert g[(PEAK_FLOPS, (("precision", "bf16"),))] == 989.5e12
    lost = _engine().gauges(0, build.reading(status=DeviceStatus.LOST))
    assert (THERMAL_HEADROOM, ()) not in lost and (PEAK_FLOPS, (("precision", "bf16"),)) in lost


def test_reported_flops_go_to_the_gpus_of_the_process_tree(build) -> None:
    e = _engine()
    e.reports.report(100, 0.0, now=0.0)
    e.reports.report(100, 4e15, now=5.0)
    h = build.host(5.0, build.proc(100, gpus=(0, 1)))
    a = e.interval(0, None, build.reading(index=0, t=5.0, sm_active_ratio=1.0), h, 1.0)
    b = e.interval(1, None, build.reading(index=1, t=5.0, sm_active_ratio=1.0), h, 1.0)
    c = e.interval(2, None, build.reading(index=2, t=5.0, sm_active_ratio=1.0), h, 1.0)
    assert (a.reported_flops, b.reported_flops, c.reported_flops) == pytest.approx((2e15, 2e15, 0.0))


def test_reported_pid_from_inside_a_container_matches_its_namespace_pid(build) -> None:
    e = _engine()
    e.reports.report(7, 0.0, now=0.0)
    e.reports.report(7, 1e15, now=5.0)
    h = build.host(5.0, build.proc(4121, gpus=(2,), nspids=(4121, 7)))
    sig = e.interval(2, None, build.reading(index=2, t=5.0, sm_active_ratio=1.0), h, 1.0)
    assert sig.reported_flops == pytest.approx(1e15)


def test_reported_pid_without_host_uses_nvml_process_lists(build) -> None:
    e = _engine()
    e.reports.report(55, 0.0, now=0.0)
    e.reports.report(55, 3e15, now=5.0)
    r = build.reading(index=3, t=5.0, sm_active_ratio=1.0, processes=[GpuProcess(pid=55)])
    assert e.interval(3, None, r, None, 1.0).reported_flops == pytest.approx(3e15)


def test_host_reading_reused_across_ticks_keeps_the_last_verdict(build) -> None:
    e = _engine()
    p0 = build.proc(100, gpus=(0,), threads_blocked_io=0)
    p1 = build.proc(100, gpus=(0,), threads_blocked_io=2)
    h1 = build.host(1.0, p1)
    e.interval(0, None, build.reading(sm_active_ratio=0.5), build.host(0.0, p0), 1.0)
    first = e.interval(0, None, build.reading(sm_active_ratio=0.5), h1, 1.0)
    again = e.interval(0, None, build.reading(sm_active_ratio=0.5), h1, 1.0)  # host sampler missed a tick
    expected = {"compute_bound": 0.5, "starved_io": 0.5}
    assert first.state_seconds == again.state_seconds == pytest.approx(expected)


def test_failure_inside_an_interval_books_half_of_it_unavailable(build) -> None:
    e = _engine()
    ok = build.reading(t=1.0, sm_active_ratio=1.0)
    e.interval(0, build.reading(t=0.0), ok, None, 1.0)
    lost = build.reading(t=2.0, status=DeviceStatus.LOST)
    assert e.interval(0, ok, lost, None, 1.0).state_seconds == pytest.approx(
        {"compute_bound": 0.5, "unavailable": 0.5})
    still = build.reading(t=3.0, status=DeviceStatus.LOST)
    assert e.interval(0, lost, still, None, 1.0).state_seconds == {"unavailable": 1.0}
    back = build.reading(t=4.0, sm_active_ratio=0.0, processes=[])
    sig = e.interval(0, still, back, None, 1.0)
    assert sig.state_seconds == pytest.approx({"idle": 0.5, "unavailable": 0.5})


def test_flops_of_a_waiting_job_use_the_clock_its_kernels_ran_at(build) -> None:
    e = _engine(pipe_flops=False)
    busy = build.reading(t=1.0, sm_active_ratio=1.0, tensor_active_ratio=0.5, sm_clock_hz=1830e6)
    e.interval(0, build.reading(t=0.0), busy, None, 1.0)
    # Sampled in a long wait: idle clocks (GpuIdle); the bursts in this interval ran at 1830 MHz.
    waiting = build.reading(t=2.0, sm_active_ratio=0.3, tensor_active_ratio=0.15, sm_clock_hz=345e6,
                            clock_event_reasons=0x1)
    sig = e.interval(0, busy, waiting, None, 1.0)
    assert sig.estimated_flops["bf16"] == pytest.approx(0.15 * 989.5e12)
    assert sig.clock_lost_seconds == pytest.approx(0.3 * (1 - 1830 / 1980))


def _starved_step(e: SignalEngine, build, index: int, t: float, host) -> IntervalSignals:
    return e.interval(index, build.reading(index, t=t - 1.0), build.reading(index, t=t, sm_active_ratio=0.4),
                      host, 1.0)


def test_gpus_of_one_process_tree_share_its_verdict_and_other_trees_get_their_own(build, monkeypatch) -> None:
    from agent.signals import starvation

    calls: list[int] = []
    classify = starvation.classify

    def counting(index, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(index)
        return classify(index, *args, **kwargs)

    monkeypatch.setattr(starvation, "classify", counting)
    e = _engine()
    # pid 100 drives GPUs 0 and 1 with a thread pinned at one core; pid 200 (GPU 2) waits on I/O.
    before = build.host(0.0, build.proc(100, gpus=(0, 1), max_thread_cpu_seconds=10.0),
                        build.proc(200, gpus=(2,), threads_blocked_io=0))
    after = build.host(1.0, build.proc(100, gpus=(0, 1), max_thread_cpu_seconds=11.0),
                       build.proc(200, gpus=(2,), threads_blocked_io=3))
    for index in range(3):
        _starved_step(e, build, index, 1.0, before)
    calls.clear()
    sigs = [_starved_step(e, build, index, 2.0, after) for index in range(3)]
    assert sorted(calls) == [0, 2]  # one judgement per tree, not per GPU
    assert sigs[0].starvation_evidence == sigs[1].starvation_evidence == \
        "a thread of pid 100 (python train.py) ran at 100 % of one core"
    assert sigs[2].state_seconds == pytest.approx({"compute_bound": 0.4, "starved_io": 0.6})
    assert sigs[2].starvation_evidence == "3 threads of pid 200 (python train.py) in D state (waiting on I/O)"


def test_a_shared_verdict_is_judged_again_for_a_new_host_reading(build) -> None:
    e = _engine()
    quiet = build.proc(100, gpus=(0, 1), threads_blocked_io=0)
    blocked = build.proc(100, gpus=(0, 1), threads_blocked_io=2)
    worker = build.proc(101, ppid=100, threads_blocked_io=0)
    _starved_step(e, build, 0, 1.0, build.host(0.0, quiet))
    first = _starved_step(e, build, 0, 2.0, build.host(1.0, blocked))
    # the next host reading: a data-loader worker appeared in the tree, the I/O wait is over
    second = _starved_step(e, build, 0, 3.0, build.host(2.0, quiet, worker))
    assert first.state_seconds == pytest.approx({"compute_bound": 0.4, "starved_io": 0.6})
    assert first.starvation_evidence == "2 threads of pid 100 (python train.py) in D state (waiting on I/O)"
    assert second.state_seconds == pytest.approx({"compute_bound": 0.4, "starved_other": 0.6})
    assert second.starvation_evidence == "pid 100 (python train.py) and 1 worker used 0.0 CPUs"


def test_a_gpu_that_saw_other_host_readings_gets_its_own_verdict(build) -> None:
    e = _engine()
    first = build.host(0.0, build.proc(100, gpus=(0, 1), max_thread_cpu_seconds=10.0))
    second = build.host(1.0, build.proc(100, gpus=(0, 1), max_thread_cpu_seconds=11.0))
    _starved_step(e, build, 0, 1.0, first)
    pinned = _starved_step(e, build, 0, 2.0, second)
    # GPU 1 saw no host reading before this one: no rates, so no pinned thread can be judged
    fresh = _starved_step(e, build, 1, 2.0, second)
    assert pinned.state_seconds == pytest.approx({"compute_bound": 0.4, "starved_host": 0.6})
    assert fresh.state_seconds == pytest.approx({"compute_bound": 0.4, "starved_other": 0.6})
