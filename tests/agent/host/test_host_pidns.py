"""NVML PIDs seen from inside a container are mapped to host PIDs through NSpid."""

from __future__ import annotations

from pathlib import Path

from agent.clock import ManualClock
from agent.host.backend import HostBackend
from agent.host.pidns import PidResolver

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "host"
PROC = FIXTURES / "proc"
LIVE = {int(p.name) for p in PROC.iterdir() if p.name.isdigit()}


def test_host_pid_stays_itself() -> None:
    assert PidResolver(str(PROC)).resolve([4121, 5120], LIVE.__contains__) == {4121: 4121, 5120: 5120}


def test_namespace_pid_with_no_host_namesake_maps_to_its_process() -> None:
    # worker 4130 is pid 27 inside its container, and no host process has pid 27
    assert PidResolver(str(PROC)).resolve([27], LIVE.__contains__) == {27: 4130}


def test_ambiguous_pid_goes_to_the_process_holding_the_gpu() -> None:
    # pid 1 is the host's init *and* the training process inside its container;
    # only the training process has /dev/nvidia* open
    assert PidResolver(str(PROC)).resolve([1], LIVE.__contains__) == {1: 4121}


def test_unknown_pid_is_left_out() -> None:
    assert PidResolver(str(PROC)).resolve([31337], LIVE.__contains__) == {}


def test_resolution_is_dropped_when_the_process_ends() -> None:
    resolver = PidResolver(str(PROC))
    assert resolver.resolve([27], LIVE.__contains__) == {27: 4130}
    assert resolver.resolve([27], (LIVE - {4130}).__contains__) == {}


def test_backend_reads_the_host_process_for_a_container_pid() -> None:
    backend = HostBackend(str(PROC), str(FIXTURES / "sys"), str(FIXTURES / "cgroup"), ManualClock(0.0))
    r = backend.read({1: (0,)})  # NVML said "pid 1" from inside the training container
    assert 1 not in r.processes  # not the host's init
    assert r.processes[4121].nspids == (4121, 1)
    assert r.processes[4121].gpu_indices == (0,)
    assert {4130, 4131, 4132, 4133, 4140} <= set(r.processes)
