"""The PID rule and GPU ownership, on snapshots and a real /proc."""

from __future__ import annotations

import os

import pytest
from profiling_fixtures import make_snapshot, process_stats

from agent.model import ProcessStats
from agent.profiling.errors import NoGpuOwner, PidNotAllowed, ProfilingError, UnknownGpu
from agent.profiling.policy import check_pid, gpu_processes, owner_pid
from agent.profiling.procinfo import ProcInfo

PROC = ProcInfo()


def test_a_gpu_process_is_allowed() -> None:
    snap = make_snapshot({0: [4121], 1: [4121, 5000]})
    assert gpu_processes(snap) == {4121: {0, 1}, 5000: {1}}
    assert check_pid(4121, snap, PROC) == "uses GPU 0, 1"


def test_a_descendant_known_to_the_host_backend_is_allowed() -> None:
    host = {4122: process_stats(4122, 4121, gpus=(0,)), 4200: process_stats(4200, 4122)}
    snap = make_snapshot({0: [4121]}, host_processes=host)
    assert check_pid(4122, snap, PROC) == "descends from a process on GPU 0"
    assert check_pid(4200, snap, PROC) == "descends from pid 4121, which uses a GPU"


def test_a_descendant_found_through_proc() -> None:
    # This test process's parent "uses a GPU": the test process is its descendant in the real /proc.
    snap = make_snapshot({0: [os.getppid()]})
    assert check_pid(os.getpid(), snap, PROC) == f"descends from pid {os.getppid()}, which uses a GPU"


def test_anything_else_is_refused_naming_the_rule() -> None:
    snap = make_snapshot({0: [999_999]})
    with pytest.raises(PidNotAllowed) as err:
        check_pid(os.getpid(), snap, PROC)
    assert err.value.status == 403
    assert "only processes that use a GPU, and their descendants, may be profiled" in err.value.message
    assert "profiling.allow_any_pid" in err.value.message


def test_no_snapshot_yet() -> None:
    with pytest.raises(ProfilingError) as err:
        check_pid(1, None, PROC)
    assert err.value.status == 503 and "not sampled" in err.value.message


def test_owner_is_the_outermost_gpu_process() -> None:
    # The worker also holds a CUDA context (a pin-memory thread does that): the parent is the owner.
    host = {
        os.getpid(): ProcessStats(pid=os.getpid(), ppid=os.getppid(), comm="python"),
    }
    snap = make_snapshot({0: [os.getpid(), os.getppid()]}, host_processes=host)
    assert owner_pid(0, snap, PROC) == os.getppid()


def test_owner_among_unrelated_processes_holds_the_most_memory() -> None:
    snap = make_snapshot({2: [999_991, 999_990]})  # first listed holds more memory in make_snapshot
    assert owner_pid(2, snap, PROC) == 999_991


def test_unknown_gpu_and_idle_gpu() -> None:
    snap = make_snapshot({0: [1234], 1: []})
    with pytest.raises(UnknownGpu, match=r"no GPU 7 on this node \(GPUs: 0, 1\)"):
        owner_pid(7, snap, PROC)
    with pytest.raises(NoGpuOwner, match="GPU 1 has no compute process"):
        owner_pid(1, snap, PROC)


def test_owner_records_from_attribution_count() -> None:
    snap = make_snapshot({0: []})
    object.__setattr__(snap, "owners", {0: {"processes": [{"pid": 4321, "comm": "python"}], "pod": "p"}})
    assert owner_pid(0, snap, PROC) == 4321
    assert check_pid(4321, snap, PROC) == "uses GPU 0"
