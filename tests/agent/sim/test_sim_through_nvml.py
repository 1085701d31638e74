"""The simulated fleet seen through FakeNvml and the real NvmlBackend, as the agent sees it."""

from __future__ import annotations

import textwrap
import threading
import time

import pytest

from agent.clock import ManualClock
from agent.model import DeviceStatus
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.sim.fleet import Fleet
from agent.sim.scenario import load_scenario, parse_scenario


def _backend(fleet: Fleet, clock: ManualClock) -> tuple[FakeNvml, NvmlBackend]:
    fake = FakeNvml(fleet.models, clock)
    backend = NvmlBackend(fake, clock)
    assert backend.start()
    return fake, backend


def test_hang_stalls_exactly_one_device() -> None:
    clock = ManualClock()
    fleet = Fleet.from_scenario(
        parse_scenario(
            textwrap.dedent("""
        gpus: [{model: H100-SXM, count: 3, workload: {kind: training}}]
        events: [{at_s: 10, gpu: 1, kind: nvml_hang, seconds: 30}]
    """)
        ),
        clock,
    )
    fake, backend = _backend(fleet, clock)
    try:
        clock.set(12.0)
        done: dict[int, float] = {}

        def read(i: int) -> None:
            reading = backend.read(i, processes=True)
            assert reading.status == DeviceStatus.OK
            done[i] = clock.now()

        threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(3)]
        for th in threads:
            th.start()
        threads[0].join(10)
        threads[2].join(10)
        assert done.get(0) == 12.0 and done.get(2) == 12.0  # the other GPUs answer at once
        time.sleep(0.2)
        assert 1 not in done and threads[1].is_alive()  # GPU 1 is stuck in its call
        for t in (20.0, 30.0, 39.0):
            clock.set(t)
            time.sleep(0.05)
            assert 1 not in done, t
            assert backend.read(0, processes=False).status == DeviceStatus.OK
        clock.set(40.0)
        threads[1].join(10)
        assert done.get(1) == 40.0  # it returns when the hang ends
    finally:
        fake.release()
        backend.close()


def test_readings_follow_the_model() -> None:
    clock = ManualClock()
    fleet = Fleet.from_scenario(load_scenario("default"), clock)
    fake, backend = _backend(fleet, clock)
    try:
        ids = backend.identities()
        assert [i.uuid for i in ids] == [m.identity.uuid for m in fleet.models]
        assert ids[0].name == "NVIDIA H100 80GB HBM3"
        for t in (61.0, 62.0):  # two reads: GPM and counters need a previous sample
            clock.set(t)
            readings = [backend.read(i, processes=True) for i in range(8)]
        starved = readings[2]
        assert starved.sm_active_ratio == pytest.approx(0.4 * 0.97, abs=0.02)
        assert starved.utilization_samples_ratio == pytest.approx(0.4, abs=0.1)
        capped = readings[4]
        assert capped.power_watts == pytest.approx(350, rel=0.05)
        assert capped.clock_event_reasons is not None and capped.clock_event_reasons & 0x4
        assert capped.violation_ns["sw_power_cap"] > 45e9
        hot = readings[5]
        assert hot.clock_event_reasons is not None and hot.clock_event_reasons & 0x20
        assert hot.temperature_thresholds_celsius["slowdown"] - hot.temperatures_celsius["gpu"] < 6
        assert readings[6].processes == [] and readings[6].clock_event_reasons & 0x1  # type: ignore[operator]
        decode = readings[1]
        assert decode.dram_active_ratio is not None and decode.dram_active_ratio > 0.5
        host = fleet.host_source.read(
            {p.pid: (i,) for i, r in enumerate(readings) for p in r.processes or []}
        )
        for i in (0, 1, 2, 3, 4, 5, 7):
            pid = readings[i].processes[0].pid  # type: ignore[index]
            assert host.processes[pid].gpu_indices == (i,)
        # energy through the backend: joules between two reads match the mean power
        e0 = readings[0].energy_joules
        clock.set(72.0)
        later = backend.read(0, processes=False)
        assert later.energy_joules - e0 == pytest.approx(later.power_watts * 10, rel=0.02)  # type: ignore[operator]
    finally:
        fake.release()
        backend.close()


def test_xid_event_then_lost() -> None:
    clock = ManualClock()
    fleet = Fleet.from_scenario(load_scenario("default"), clock)
    fake, backend = _backend(fleet, clock)
    try:
        clock.set(89.0)
        assert backend.read(7, processes=True).status == DeviceStatus.OK
        assert backend.wait_events(0.05) == []
        clock.set(90.5)
        events = backend.wait_events(0.5)
        assert [(e.index, e.xid) for e in events] == [(7, 79)]
        clock.set(93.0)
        assert backend.read(7, processes=True).status == DeviceStatus.LOST
        assert backend.read(6, processes=True).status == DeviceStatus.OK
    finally:
        fake.release()
        backend.close()
