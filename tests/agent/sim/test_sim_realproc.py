"""Real-process mode: real OS processes with the PIDs the fake NVML reports, cleaned up on stop."""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from agent.clock import ManualClock
from agent.host.backend import HostBackend
from agent.sim.fleet import Fleet
from agent.sim.realproc import RealProcesses
from agent.sim.scenario import parse_scenario

SCENARIO = """
    gpus:
      - model: H100-SXM
        workload: {kind: training, compute_s: 0.1, wait_s: 0.3, wait_cause: host_cpu, workers: 3}
      - {model: H100-SXM, workload: {kind: inference_decode}}
      - {model: H100-SXM}
    events:
      - {at_s: 100, gpu: 1, kind: process_exit}
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_real_processes_behind_the_simulated_gpus() -> None:
    clock = ManualClock()
    fleet = Fleet.from_scenario(parse_scenario(textwrap.dedent(SCENARIO)), clock)
    procs = RealProcesses(fleet, clock)
    all_pids: list[int] = []
    try:
        pids = procs.start()
        assert set(pids) == {0, 1}  # GPU 2 is idle: no process
        for gpu, pid in pids.items():
            assert fleet.models[gpu].snapshot(1.0).processes[0][0] == pid  # what NVML will report
        assert _wait_for(lambda: len(procs.worker_pids(0)) == 1)  # busy workers are capped at one
        assert procs.worker_pids(1) == []  # decode: no data loader
        worker = procs.worker_pids(0)[0]
        all_pids = [*pids.values(), worker]

        simulated = fleet.host_source.read({pids[0]: (0,)})  # the simulated host names the real tree
        assert set(simulated.processes) == {pids[0], worker}
        assert simulated.processes[worker].ppid == pids[0]

        host = HostBackend(clock=clock)
        first = host.read({pids[0]: (0,)})
        assert first.processes[pids[0]].gpu_indices == (0,)
        assert first.processes[worker].ppid == pids[0]
        time.sleep(1.5)
        second = host.read({pids[0]: (0,)})
        w0, w1 = first.processes[worker], second.processes[worker]
        busy = (w1.cpu_user_seconds + w1.cpu_system_seconds) - (w0.cpu_user_seconds + w0.cpu_system_seconds)
        assert busy > 0.2  # it really burns CPU (shared CI cores: not necessarily a full one)
        main = second.processes[pids[0]]
        assert main.cpu_user_seconds + main.cpu_system_seconds < 1.0  # the main process mostly waits

        clock.set(100.0)  # GPU 1's process exits: its tree goes away
        assert _wait_for(lambda: not _alive(pids[1]))
        assert _wait_for(lambda: 1 not in procs.pids())
        assert _alive(pids[0])
    finally:
        procs.stop()
    for pid in all_pids:
        assert _wait_for(lambda pid=pid: not _alive(pid), 5.0), pid


def test_stop_leaves_no_process_even_when_the_parent_is_killed() -> None:
    clock = ManualClock()
    fleet = Fleet.from_scenario(
        parse_scenario(
            textwrap.dedent("""
        gpus:
          - model: L4
            workload: {kind: training, compute_s: 0.1, wait_s: 0.1, wait_cause: other, workers: 2}
    """)
        ),
        clock,
    )
    procs = RealProcesses(fleet, clock)
    try:
        main = procs.start()[0]
        assert _wait_for(lambda: len(procs.worker_pids(0)) == 2)
        workers = procs.worker_pids(0)
        os.kill(main, 9)  # the main process dies hard: its workers follow it
        for pid in workers:
            assert _wait_for(lambda pid=pid: not _alive(pid), 5.0), pid
    finally:
        procs.stop()
    assert not _alive(main)


@pytest.mark.parametrize("cause", ["io"])
def test_io_worker_blocks_on_the_disk(cause: str, tmp_path) -> None:
    clock = ManualClock()
    fleet = Fleet.from_scenario(
        parse_scenario(
            textwrap.dedent(f"""
        gpus: [{{model: L4, workload: {{kind: training, compute_s: 0.1, wait_s: 0.1, wait_cause: {cause}}}}}]
    """)
        ),
        clock,
    )
    with RealProcesses(fleet, clock, io_dir=str(tmp_path)) as procs:
        assert _wait_for(lambda: len(procs.worker_pids(0)) == 1)
        worker = procs.worker_pids(0)[0]
        assert _wait_for(lambda: any(p.name.startswith("shard-") for p in tmp_path.iterdir()))
        with open(f"/proc/{worker}/io") as fh:
            io = dict(line.split(": ") for line in fh.read().splitlines())
        assert int(io["write_bytes"]) > 0 or int(io["wchar"]) > 1 << 20
