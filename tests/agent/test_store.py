from __future__ import annotations

import dataclasses
import gc
import itertools
import threading

import pytest

from agent.model import (
    GPU_STATES,
    DeviceStatus,
    GpuProcess,
    GpuReading,
    HostReading,
    IntervalSignals,
    ProcessStats,
    XidEvent,
)
from agent.snapshot import Snapshot
from agent.store import Accumulator, Store


def reading(t: float, index: int = 0, **fields: object) -> GpuReading:
    return GpuReading(index, f"GPU-{index}", t, **fields)  # type: ignore[arg-type]


def test_ring_buffer_is_bounded_by_history_over_interval() -> None:
    store = Store(interval_seconds=1.0, history_seconds=10)
    for t in range(100):
        store.add_reading(reading(float(t)))
        store.add_host(HostReading(float(t)))
    assert store.maxlen == 11
    assert len(store.history(0, 1e9)) == 11
    assert [r.timestamp for r in store.history(0, 3)] == [96.0, 97.0, 98.0, 99.0]
    assert [h.timestamp for h in store.host_history(2)] == [97.0, 98.0, 99.0]
    assert store.history(7, 10) == []


def test_add_reading_returns_the_previous_one() -> None:
    store = Store(1.0, 60)
    first = reading(1.0)
    assert store.add_reading(first) is None
    assert store.add_reading(reading(2.0)) is first


def test_activity_ratios_integrate_over_the_interval() -> None:
    acc = Accumulator()
    prev = None
    for t in range(5):  # 4 intervals of 2 s at utilization 0.5, SM 0.25, tensor 0.1, DRAM 0.4
        cur = reading(
            2.0 * t,
            utilization_gpu_ratio=0.5,
            sm_active_ratio=0.25,
            tensor_active_ratio=0.1,
            dram_active_ratio=0.4,
        )
        acc.integrate(prev, cur)
        prev = cur
    c = acc.counters(0)
    assert c[("gpulse_gpu_busy_seconds_total", ())] == pytest.approx(4.0)
    assert c[("gpulse_gpu_sm_active_seconds_total", ())] == pytest.approx(2.0)
    assert c[("gpulse_gpu_tensor_active_seconds_total", ())] == pytest.approx(0.8)
    assert c[("gpulse_gpu_dram_active_seconds_total", ())] == pytest.approx(3.2)


def test_every_catalog_ratio_and_device_counter_is_integrated() -> None:
    from exporters.catalog import DEVICE_COUNTER_DELTAS, INTEGRATED_RATIOS

    acc = Accumulator()
    ratios = {attr: 0.05 * (i + 1) for i, (attr, _, _) in enumerate(INTEGRATED_RATIOS)}
    prev = None
    for t in range(3):  # 2 intervals of 1.5 s; each device counter grows by 100 per reading
        counters = {attr: 1000 + 100 * t for attr, _ in DEVICE_COUNTER_DELTAS}
        cur = GpuReading(0, "GPU-0", 1.5 * t, **ratios, **counters)  # type: ignore[arg-type]
        acc.integrate(prev, cur)
        prev = cur
    c = acc.counters(0)
    for attr, name, labels in INTEGRATED_RATIOS:
        assert c[(name, labels)] == pytest.approx(ratios[attr] * 3.0), (attr, name, labels)
    for _, name in DEVICE_COUNTER_DELTAS:
        assert c[(name, ())] == pytest.approx(200.0), name
    assert c[("gpulse_gpu_pipe_active_seconds_total", (("pipe", "hmma"),))] > 0
    assert c[("gpulse_gpu_memory_busy_seconds_total", ())] > 0
    assert len(c) == len(INTEGRATED_RATIOS) + len(DEVICE_COUNTER_DELTAS)


def test_busy_prefers_the_high_rate_samples_and_ratios_are_clamped() -> None:
    acc = Accumulator()
    acc.integrate(None, reading(0.0, utilization_gpu_ratio=1.0, utilization_samples_ratio=0.2))
    acc.integrate(
        reading(0.0),
        reading(1.0, utilization_gpu_ratio=1.0, utilization_samples_ratio=0.2, sm_active_ratio=1.7),
    )
    c = acc.counters(0)
    assert c[("gpulse_gpu_busy_seconds_total", ())] == pytest.approx(0.2)
    assert c[("gpulse_gpu_sm_active_seconds_total", ())] == pytest.approx(1.0)


def test_unsupported_fields_make_no_counter() -> None:
    acc = Accumulator()
    acc.integrate(None, reading(0.0, utilization_gpu_ratio=0.5))
    acc.integrate(reading(0.0), reading(1.0, utilization_gpu_ratio=0.5))
    names = {name for name, _ in acc.counters(0)}
    assert names == {"gpulse_gpu_busy_seconds_total"}


def test_raw_counters_become_deltas_and_a_reset_skips_one_interval() -> None:
    acc = Accumulator()
    values = [1000.0, 1100.0, 1250.0, 5.0, 55.0]  # reset between 1250 and 5
    prev = None
    for t, energy in enumerate(values):
        cur = reading(float(t), energy_joules=energy, pcie_tx_bytes=int(energy * 10), nvlink_rx_bytes=7)
        acc.integrate(prev, cur)
        prev = cur
    c = acc.counters(0)
    assert c[("gpulse_gpu_energy_joules_total", ())] == pytest.approx(250.0 + 50.0)
    assert c[("gpulse_gpu_pcie_transmit_bytes_total", ())] == pytest.approx(3000.0)
    assert c[("gpulse_gpu_nvlink_receive_bytes_total", ())] == 0.0


def test_a_gap_of_unavailability_books_no_activity_but_keeps_energy() -> None:
    acc = Accumulator()
    r0 = reading(0.0, utilization_gpu_ratio=1.0, energy_joules=100.0)
    lost = reading(1.0, status=DeviceStatus.LOST)
    r2 = reading(5.0, utilization_gpu_ratio=1.0, energy_joules=600.0)
    r3 = reading(6.0, utilization_gpu_ratio=1.0, energy_joules=700.0)
    acc.integrate(None, r0)
    acc.integrate(r0, lost)
    acc.integrate(lost, r2)  # previous reading not ok: the interval is the signal engine's "unavailable"
    acc.integrate(r2, r3)
    c = acc.counters(0)
    assert c[("gpulse_gpu_busy_seconds_total", ())] == pytest.approx(1.0)
    assert c[("gpulse_gpu_energy_joules_total", ())] == pytest.approx(600.0)


def test_interval_signals_are_booked_under_the_contract_names() -> None:
    acc = Accumulator()
    sig = IntervalSignals(
        dt=1.0,
        state_seconds={"compute_bound": 0.6, "throttled_power": 0.4},
        throttle_seconds={"sw_power_cap": 0.4},
        clock_lost_seconds=0.1,
        estimated_flops={"bf16": 5e14},
        estimated_dram_bytes=2e12,
    )
    acc.book(0, sig)
    acc.book(0, sig)
    c = acc.counters(0)
    states = {labels[0][1]: v for (name, labels), v in c.items() if name == "gpulse_gpu_state_seconds_total"}
    assert set(states) == set(GPU_STATES)  # every state has a series from the first interval
    assert states["compute_bound"] == pytest.approx(1.2)
    assert states["idle"] == 0.0
    assert c[("gpulse_gpu_throttle_seconds_total", (("reason", "sw_power_cap"),))] == pytest.approx(0.8)
    assert c[("gpulse_gpu_clock_lost_seconds_total", ())] == pytest.approx(0.2)
    assert c[("gpulse_gpu_estimated_flops_total", (("precision", "bf16"),))] == pytest.approx(1e15)
    assert c[("gpulse_gpu_estimated_dram_bytes_total", ())] == pytest.approx(4e12)
    assert ("gpulse_gpu_reported_flops_total", ()) not in c  # absent until a workload reports
    acc.book(0, IntervalSignals(dt=1.0, reported_flops=3e14))
    acc.book(0, IntervalSignals(dt=1.0))
    assert acc.counters(0)[("gpulse_gpu_reported_flops_total", ())] == pytest.approx(3e14)


def test_counters_are_copies() -> None:
    acc = Accumulator()
    acc.integrate(None, reading(0.0, energy_joules=1.0))
    copy = acc.counters(0)
    copy[("x", ())] = 1.0
    assert ("x", ()) not in acc.counters(0)


def test_signal_history_and_xids() -> None:
    store = Store(1.0, 60)
    for t in range(5):
        store.add_signals(0, float(t), IntervalSignals(dt=1.0, state_seconds={"idle": 1.0}))
    assert [t for t, _ in store.signal_history(0, 2)] == [2.0, 3.0, 4.0]
    store.add_xid(XidEvent(1, "GPU-1", 79, 3.0), epoch=1_700_000_003.0)
    store.add_xid(XidEvent(1, "GPU-1", 79, 4.0), epoch=1_700_000_004.0)
    counts, last = store.xids()
    assert counts == {(1, 79): 2}
    assert last == {1: 1_700_000_004.0}


def test_publish_makes_snapshot_and_exposition_visible_together() -> None:
    store = Store(1.0, 60)
    assert store.latest() is None and store.exposition() is None
    snap = Snapshot(timestamp=1.0, epoch=2.0, interval_seconds=1.0, nvml_up=False, nvml_message="x")
    store.publish(snap, "rendered")
    assert store.latest() is snap and store.exposition() == "rendered"
    store.publish(snap, None)  # a failed render keeps serving the last good exposition
    assert store.exposition() == "rendered"


def test_reads_are_safe_while_the_sampler_appends() -> None:
    store = Store(0.1, 10)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        t = 0.0
        while not stop.is_set():
            t += 0.1
            store.add_reading(reading(t))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            try:
                items = store.history(0, 5)
                assert all(a.timestamp < b.timestamp for a, b in itertools.pairwise(items))
            except BaseException as exc:  # "deque mutated during iteration" would land here
                errors.append(exc)
                break
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_history_round_trips_readings_and_shares_unchanged_values() -> None:
    store = Store(1.0, 60)
    originals = []
    for t in range(5):
        r = reading(
            float(t),
            power_watts=300.0 + t,
            power_limit_watts=700.0,
            temperature_thresholds_celsius={"slowdown": 87.0, "shutdown": 92.0},
            ecc_errors={("volatile", "corrected"): 0},
            processes=[GpuProcess(4121, 2**30)],
        )
        originals.append(r)
        store.add_reading(r)
    history = store.history(0, 60)
    assert history == originals  # every field survives the compact storage
    assert history[0] is not originals[0]
    assert (
        history[0].temperature_thresholds_celsius is not history[4].temperature_thresholds_celsius
    )  # own copies
    # stored once: the previous record's equal value is reused
    entries = store._readings[0].entries()
    names = [f.name for f in dataclasses.fields(GpuReading)]
    for name in ("temperature_thresholds_celsius", "ecc_errors", "processes", "power_limit_watts"):
        i = names.index(name)
        assert entries[0][1][i] is entries[4][1][i]
    # plain values only: the garbage collector does not have to walk the history
    for _ in range(3):  # nested tuples are untracked from the inside out, one collection per level
        gc.collect()
    assert not any(gc.is_tracked(values) for _, values in entries)


def test_signal_history_round_trips() -> None:
    store = Store(1.0, 60)
    sigs = [IntervalSignals(dt=1.0, state_seconds={"idle": 1.0}, executing_ratio=0.1 * i) for i in range(3)]
    for i, sig in enumerate(sigs):
        store.add_signals(0, float(i), sig)
    assert store.signal_history(0, 60) == [(float(i), sig) for i, sig in enumerate(sigs)]


def test_host_history_keeps_per_process_stats_for_the_last_minute_only() -> None:
    store = Store(interval_seconds=1.0, history_seconds=300)
    for t in range(200):
        store.add_host(
            HostReading(float(t), cpu_seconds={"user": float(t)}, processes={1: ProcessStats(1, 0, "x")})
        )
    history = store.host_history(300)
    assert len(history) == 200
    with_processes = [h.timestamp for h in history if h.processes]
    assert with_processes[0] >= 199 - Store.HOST_PROCESS_SECONDS and with_processes[-1] == 199.0
    assert all(h.cpu_seconds for h in history)  # node-level figures stay for the whole history


def test_adding_zero_creates_a_missing_series_and_leaves_an_existing_one_as_it_is() -> None:
    acc = Accumulator()
    key = ("gpulse_gpu_throttle_seconds_total", (("reason", "sw_power_cap"),))
    acc.book(0, IntervalSignals(dt=1.0, throttle_seconds={"sw_power_cap": 0.0}))
    assert acc.counters(0)[key] == 0.0  # the series exists from its first interval
    acc.book(0, IntervalSignals(dt=1.0, throttle_seconds={"sw_power_cap": 2.5}))
    before = acc.counters(0)[key]
    acc.book(0, IntervalSignals(dt=1.0, throttle_seconds={"sw_power_cap": 0.0}))
    # the very same float: the renderer sees an unchanged counter without comparing values
    assert acc.counters(0)[key] is before and before == 2.5
    acc.book(0, IntervalSignals(dt=1.0, throttle_seconds={"sw_power_cap": 1.0}))
    assert acc.counters(0)[key] == 3.5


def test_a_process_list_carried_between_readings_is_stored_once_and_a_change_is_seen() -> None:
    store = Store(1.0, 60)
    carried = [GpuProcess(4121, 2**30)]
    for t in range(3):
        store.add_reading(reading(float(t), processes=carried))  # the sampler carries one list
    carried.append(GpuProcess(4122, 2**20))  # changed in place
    store.add_reading(reading(3.0, processes=carried))
    history = store.history(0, 60)
    assert [len(r.processes or ()) for r in history] == [1, 1, 1, 2]
    assert history[3].processes == [GpuProcess(4121, 2**30), GpuProcess(4122, 2**20)]
    entries = store._readings[0].entries()
    i = [f.name for f in dataclasses.fields(GpuReading)].index("processes")
    assert entries[0][1][i] is entries[2][1][i] and entries[2][1][i] is not entries[3][1][i]


def test_empty_and_filled_dict_fields_round_trip_in_order() -> None:
    store = Store(1.0, 60)
    fields = [{}, {"gpu": 50.0, "memory": 60.0}, {"memory": 60.0, "gpu": 50.0}, {}]
    for t, temps in enumerate(fields):
        store.add_reading(reading(float(t), temperatures_celsius=temps))
    stored = [r.temperatures_celsius for r in store.history(0, 60)]
    assert stored == fields
    assert [list(d) for d in stored] == [list(d) for d in fields]  # key order kept
