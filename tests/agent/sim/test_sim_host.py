"""The simulated host: process trees whose CPU, thread states and pressure match the wait cause."""

from __future__ import annotations

import itertools

import pytest

from agent.clock import ManualClock
from agent.sim.fleet import Fleet
from agent.sim.scenario import load_scenario


def _gpu_pids(fleet: Fleet, t: float) -> dict[int, tuple[int, ...]]:
    pids: dict[int, tuple[int, ...]] = {}
    for i, m in enumerate(fleet.models):
        snap = m.snapshot(t)
        if not snap.lost:
            for pid, _ in snap.processes:
                pids[pid] = (i,)
    return pids


def _f(value: float | None) -> float:
    assert value is not None
    return float(value)


def _tree_cpu(reading, main: int) -> float:
    return sum(
        p.cpu_user_seconds + p.cpu_system_seconds
        for p in reading.processes.values()
        if p.pid == main or p.ppid == main
    )


@pytest.fixture
def fleet() -> Fleet:
    return Fleet.from_scenario(load_scenario("default"), ManualClock())


def test_trees_match_the_pids_nvml_reports(fleet: Fleet) -> None:
    pids = _gpu_pids(fleet, 30.0)
    assert len(pids) == 7  # GPU 6 is idle
    reading = fleet.host_source.read(pids, at=30.0)
    for pid, gpus in pids.items():
        stats = reading.processes[pid]
        assert stats.gpu_indices == gpus and stats.comm == "python3" and stats.ppid != pid
        workers = [p for p in reading.processes.values() if p.ppid == pid]
        assert all(w.comm == "pt_data_worker" and w.gpu_indices == gpus for w in workers)
    assert fleet.host_source.read({}, at=30.0).processes == {}  # only GPU processes and their children
    assert reading.timestamp == 30.0 and reading.cpu_count == 224


def test_host_cpu_starvation_pins_workers_and_fills_the_quota(fleet: Fleet) -> None:
    main = fleet.models[2].snapshot(20.0).processes[0][0]
    pids = _gpu_pids(fleet, 20.0)
    a, b = fleet.host_source.read(pids, at=20.0), fleet.host_source.read(pids, at=30.0)
    workers = [p for p in b.processes if b.processes[p].ppid == main]
    assert len(workers) == 4
    for w in workers:
        assert b.processes[w].threads_running >= 1
        pinned = (_f(b.processes[w].max_thread_cpu_seconds) - _f(a.processes[w].max_thread_cpu_seconds)) / 10
        assert pinned > 0.95  # one thread at ~100 % of a core
    quota = b.processes[main].cgroup_cpu_quota_cores
    assert quota == 5
    assert (_tree_cpu(b, main) - _tree_cpu(a, main)) / 10 == pytest.approx(quota, rel=0.01)
    assert _f(b.processes[main].cgroup_cpu_throttled_seconds) > _f(
        a.processes[main].cgroup_cpu_throttled_seconds
    )
    assert b.pressure_stall_seconds["cpu"]["some"] > a.pressure_stall_seconds["cpu"]["some"]


def test_io_starvation_blocks_workers_in_d_state(fleet: Fleet) -> None:
    main = fleet.models[3].snapshot(20.0).processes[0][0]
    pids = _gpu_pids(fleet, 20.0)
    a, b = fleet.host_source.read(pids, at=20.0), fleet.host_source.read(pids, at=30.0)
    workers = [p for p in b.processes if b.processes[p].ppid == main]
    assert len(workers) == 6
    for w in workers:
        assert b.processes[w].threads_blocked_io == 1 and b.processes[w].threads_running == 0
        assert (_f(b.processes[w].io_delay_seconds) - _f(a.processes[w].io_delay_seconds)) / 10 > 0.5
        assert _f(b.processes[w].io_read_bytes) > _f(a.processes[w].io_read_bytes)
    assert (_tree_cpu(b, main) - _tree_cpu(a, main)) / 10 < 1.5  # mostly not on the CPU
    assert b.pressure_stall_seconds["io"]["some"] - a.pressure_stall_seconds["io"]["some"] > 3
    assert b.cpu_seconds["iowait"] > a.cpu_seconds["iowait"]


def test_waits_with_no_host_cause_show_nothing(fleet: Fleet) -> None:
    main = fleet.models[7].snapshot(20.0).processes[0][0]
    pids = _gpu_pids(fleet, 20.0)
    a, b = fleet.host_source.read(pids, at=20.0), fleet.host_source.read(pids, at=30.0)
    tree = [p for p in b.processes.values() if p.pid == main or p.ppid == main]
    assert sum(p.threads_blocked_io for p in tree) == 0
    assert sum(p.threads_running for p in tree) <= 1
    assert b.processes[main].cgroup_cpu_throttled_seconds == 0
    for w in (p.pid for p in tree if p.ppid == main):
        assert (
            _f(b.processes[w].max_thread_cpu_seconds) - _f(a.processes[w].max_thread_cpu_seconds)
        ) / 10 < 0.1


def test_node_counters_are_monotonic_and_consistent(fleet: Fleet) -> None:
    readings = [fleet.host_source.read({}, at=float(t)) for t in (10, 20, 95, 200)]
    for prev, cur in itertools.pairwise(readings):
        for mode, value in cur.cpu_seconds.items():
            assert value >= prev.cpu_seconds[mode], mode
        assert _f(cur.disk_read_bytes) >= _f(prev.disk_read_bytes)
        span = cur.timestamp - prev.timestamp
        assert sum(cur.cpu_seconds.values()) - sum(prev.cpu_seconds.values()) == pytest.approx(224 * span)
    # after GPU 7 fell off the bus at 92 s its tree is gone
    lost_pid = fleet.models[7].snapshot(50.0).processes[0][0]
    assert lost_pid not in fleet.host_source.read({lost_pid: (7,)}, at=100.0).processes
