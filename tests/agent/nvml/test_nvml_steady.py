"""SteadyDevice: plausible values, exact energy integral, determinism, toggles."""

from __future__ import annotations

import dataclasses

import pytest

from agent.nvml import consts as C
from agent.nvml.steady import SteadyDevice, steady_fleet
from agent.sim.device import DeviceSnapshot
from agent.specs import SPECS


def test_power_clock_and_temperature_are_plausible_under_load() -> None:
    dev = SteadyDevice(SPECS["H100-SXM"], 0)  # busy 0.85, tensor 0.6
    snap = dev.snapshot(100.0)
    expected = 70 + dev.load * (700 - 70)  # idle + activity x (TDP - idle)
    assert snap.power_average_mw / 1000 == pytest.approx(expected, abs=0.004 * 700 + 1e-9)
    assert 1950 <= snap.sm_clock_mhz <= 1980
    assert 55 <= snap.temperature_gpu_c <= 65 and snap.temperature_memory_c is not None
    assert snap.processes == [(4100, snap.memory_used_bytes - 2**29)]
    assert snap.process_sm_pct == {4100: 85.0}
    assert snap.clock_event_reasons == 0


def test_idle_device_reports_idle_clocks_no_processes() -> None:
    snap = SteadyDevice(SPECS["L4"], 0, busy=0.0).snapshot(5.0)
    assert (
        snap.clock_event_reasons == C.REASON_GPU_IDLE and snap.processes == [] and snap.sm_clock_mhz == 345.0
    )
    assert snap.power_average_mw / 1000 == pytest.approx(7.2, abs=0.3)
    assert snap.temperature_memory_c is None  # GDDR


def test_energy_counter_is_the_integral_of_power() -> None:
    dev = SteadyDevice(SPECS["H100-SXM"], 3, start=10.0)
    step = 0.01
    integral = sum(dev.power_watts(10.0 + (k + 0.5) * step) * step for k in range(int(60 / step)))
    gained_mj = dev.snapshot(70.0).energy_mj - dev.snapshot(10.0).energy_mj
    assert gained_mj / 1000 == pytest.approx(integral, rel=1e-5)


def test_deterministic_and_unique_identities_across_a_large_fleet() -> None:
    a = steady_fleet(SPECS["H100-SXM"], 64, seed=7)
    b = steady_fleet(SPECS["H100-SXM"], 64, seed=7)
    assert [d.identity for d in a] == [d.identity for d in b]
    assert a[5].snapshot(12.3) == b[5].snapshot(12.3)
    assert len({d.identity.uuid for d in a}) == 64 and len({d.identity.pci_bus_id for d in a}) == 64
    assert a[0].identity.pci_bus_id == "00000000:18:00.0" and a[9].identity.pci_bus_id == "00000001:2A:00.0"
    assert steady_fleet(SPECS["H100-SXM"], 1, seed=8)[0].identity.uuid != a[0].identity.uuid


def test_toggles_bump_the_revision_and_show_in_the_snapshot() -> None:
    dev = SteadyDevice(SPECS["H100-SXM"], 0)
    rev = dev.revision
    dev.lost = True
    dev.hang_until = 50.0
    dev.add_xid(20.0, 79)
    dev.add_xid(10.0, 13)
    assert dev.revision == rev + 4
    snap = dev.snapshot(15.0)
    assert snap.lost and snap.hang_until == 50.0 and snap.xids == [(10.0, 13)]
    assert dev.snapshot(25.0).xids == [(10.0, 13), (20.0, 79)]


def test_activity_is_constant_and_consistent() -> None:
    act = SteadyDevice(SPECS["H100-SXM"], 0, busy=0.5, tensor=0.4, dram=0.2).activity(0.0, 1.0)
    assert act.busy == 0.5 and act.tensor == pytest.approx(0.2) and act.dram == pytest.approx(0.1)
    assert act.sm_active <= act.busy


def test_what_is_kept_between_calls_follows_every_change() -> None:
    dev = SteadyDevice(SPECS["H100-SXM"], 0, busy=0.5)
    assert dev.activity(0.0, 1.0) is dev.activity(5.0, 6.0)  # made once while nothing changes
    before = dev.snapshot(10.0)
    dev.busy = 0.25
    assert dev.activity(0.0, 1.0).busy == 0.25
    dev.ecc_corrected, dev.pid, dev.lost = 7, 4242, True
    snap = dev.snapshot(10.0)
    assert snap.ecc_volatile_corrected == snap.ecc_aggregate_corrected == 7 and snap.lost
    assert snap.processes == [(4242, before.processes[0][1])] and snap.process_sm_pct == {4242: 25.0}
    assert snap.power_average_mw < before.power_average_mw  # less load, less power
    dev.busy = 0.0
    idle = dev.snapshot(10.0)
    assert (
        idle.processes == [] and idle.clock_event_reasons == C.REASON_GPU_IDLE and idle.memory_used_bytes == 0
    )
    dev.spec = SPECS["L4"]
    assert dev.snapshot(10.0).memory_total_bytes == SPECS["L4"].memory_bytes


def test_snapshots_share_no_mutable_state() -> None:
    dev = SteadyDevice(SPECS["H100-SXM"], 0, fan_speeds_pct=(40.0,))
    dev.add_xid(1.0, 13)
    first = dev.snapshot(5.0)
    first.thresholds_c.clear()
    first.violation_ns[74] = 99
    first.processes.append((1, 2))
    first.process_sm_pct[1] = 50.0
    first.fan_speeds_pct.append(90.0)
    first.xids.append((2.0, 79))
    second = dev.snapshot(5.0)
    assert second.thresholds_c[C.THRESHOLD_SLOWDOWN] == 89 and second.violation_ns[74] == 0
    assert second.processes == [(4100, second.memory_used_bytes - 2**29)] and 1 not in second.process_sm_pct
    assert second.fan_speeds_pct == [40.0] and second.xids == [(1.0, 13)]
    # every field of the dataclass is there, as the constructor would have set it
    assert set(vars(second)) == {f.name for f in dataclasses.fields(DeviceSnapshot)}
    assert second == DeviceSnapshot(**vars(second))


def test_watchers_hear_of_every_xid_change_and_nothing_else() -> None:
    dev = SteadyDevice(SPECS["H100-SXM"], 0)
    heard: list[list[tuple[float, int]]] = []
    dev.watch_xids(lambda: heard.append(list(dev.xids)))
    dev.busy = 0.5
    dev.lost = True
    dev.add_xid(3.0, 79)
    dev.xids = []
    assert heard == [[(3.0, 79)], []]
