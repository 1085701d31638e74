"""The demo's owners provider: the scenario's pods and Slurm jobs, in the Attributor's shape.

The readings and the host reading come from a simulated fleet through FakeNvml, the real
NvmlBackend and the simulator's host source, as the sampler gets them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.attribution.attributor import ALLOCATION_INFO, DROPPED, PROCESS_INFO, Attributor
from agent.attribution.settings import AttributionSettings
from agent.clock import ManualClock
from agent.model import GpuIdentity, GpuReading, HostReading
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.sim.fleet import Fleet
from agent.sim.owners import SimOwners
from agent.sim.scenario import Scenario, parse_scenario
from agent.snapshot import Snapshot
from exporters.catalog import BY_NAME

FLEET = """
seed: 3
gpus:
  - {model: H100-SXM, count: 2, workload: {kind: training, workers: 2},
     owner: {pod: train-0, namespace: ml, container: trainer}}
  - {model: H100-SXM, workload: {kind: training, workers: 1},
     owner: {slurm_job: 4242, user: alice, partition: gpu}}
  - {model: H100-SXM, workload: {kind: inference_decode}}
  - {model: H100-SXM, owner: {pod: spare-0, namespace: ml, container: trainer}}
  - {model: H100-SXM, owner: {slurm_job: 99}}
"""

Read = tuple[dict[int, GpuReading], HostReading, dict[int, GpuIdentity]]


def _read(scenario: Scenario, t: float = 5.0) -> Read:
    """One tick's readings (with NVML's process lists), host reading and identities."""
    clock = ManualClock()
    fleet = Fleet.from_scenario(scenario, clock)
    fake = FakeNvml(fleet.models, clock)
    backend = NvmlBackend(fake, clock)
    try:
        assert backend.start()
        clock.set(t)
        readings = {i: backend.read(i, processes=True) for i in range(len(fleet.models))}
        identities = {ident.index: ident for ident in backend.identities()}
    finally:
        fake.release()
        backend.close()
    gpu_pids: dict[int, tuple[int, ...]] = {}
    for index, reading in readings.items():
        for p in reading.processes or ():
            gpu_pids[p.pid] = (*gpu_pids.get(p.pid, ()), index)
    return readings, fleet.host_source.read(gpu_pids), identities


@pytest.fixture(scope="module")
def fleet() -> tuple[Scenario, Read]:
    scenario = parse_scenario(textwrap.dedent(FLEET))
    return scenario, _read(scenario)


def _items(entry: dict[str, object], key: str) -> list[dict[str, Any]]:
    value = entry[key]
    assert isinstance(value, list)
    return value


def _series(gauges: dict[Any, float], name: str) -> list[dict[str, str]]:
    assert all(v == 1.0 for (n, _), v in gauges.items() if n == name)
    return [dict(labels) for (n, labels) in gauges if n == name]


def _pid(readings: dict[int, GpuReading], gpu: int) -> int:
    procs = readings[gpu].processes
    assert procs, f"GPU {gpu} lists no process"
    return procs[0].pid


def test_kubernetes_gpus_belong_to_the_pod_and_so_do_their_process_trees(
    fleet: tuple[Scenario, Read],
) -> None:
    scenario, (readings, host, identities) = fleet
    owners, gauges = SimOwners(scenario).owners(readings, host, identities)
    pod_uids = set()
    for gpu in (0, 1):
        o = owners[gpu]
        assert (o["attributed"], o["pod"], o["namespace"], o["container"], o["slurm_job"]) == (
            True,
            "train-0",
            "ml",
            "trainer",
            None,
        )
        (owner,) = _items(o, "owners")
        # the kubelet's allocation, with what the process's container adds
        assert owner["source"] == "kubelet"
        assert owner["devices"] == [{"device_id": o["uuid"], "resource": "nvidia.com/gpu", "mig": None}]
        assert owner["runtime"] == "containerd" and len(str(owner["container_id"])) == 64
        pod_uids.add(owner["pod_uid"])
        (proc,) = _items(o, "processes")
        pid = _pid(readings, gpu)
        assert (proc["pid"], proc["host_pid"], proc["pid_namespace"]) == (pid, pid, "host")
        assert (proc["pod"], proc["container"], proc["comm"]) == ("train-0", "trainer", "python3")
        assert proc["descendants"] == [pid + 1, pid + 2]  # the two data-loader workers
        assert proc["gpu_memory_bytes"] == readings[gpu].processes[0].used_memory_bytes  # type: ignore[index]
    assert len(pod_uids) == 1  # one pod, one UID, on both of its GPUs
    allocations = _series(gauges, ALLOCATION_INFO)
    for gpu in (0, 1):
        uuid = identities[gpu].uuid
        assert {
            "gpu": str(gpu),
            "uuid": uuid,
            "pod": "train-0",
            "namespace": "ml",
            "container": "trainer",
        } in (allocations)
    info = {s["pid"]: s for s in _series(gauges, PROCESS_INFO)}
    main = _pid(readings, 0)
    for pid in (main, main + 1, main + 2):  # the main process and its workers
        assert info[str(pid)]["pod"] == "train-0" and info[str(pid)]["container"] == "trainer"
        assert set(info[str(pid)]) == {"pid", "comm", "user", "container_id", "pod", "namespace", "container"}
    assert info[str(main + 1)]["comm"] == "pt_data_worker"


def test_an_allocated_gpu_without_a_process_is_still_the_pods(fleet: tuple[Scenario, Read]) -> None:
    scenario, (readings, host, identities) = fleet
    owners, gauges = SimOwners(scenario).owners(readings, host, identities)
    spare = owners[4]
    assert (spare["attributed"], spare["pod"], spare["processes"]) == (True, "spare-0", [])
    assert {
        "gpu": "4",
        "uuid": identities[4].uuid,
        "pod": "spare-0",
        "namespace": "ml",
        "container": "trainer",
    } in (_series(gauges, ALLOCATION_INFO))


def test_a_slurm_job_is_known_through_its_processes(fleet: tuple[Scenario, Read]) -> None:
    scenario, (readings, host, identities) = fleet
    owners, gauges = SimOwners(scenario).owners(readings, host, identities)
    job = owners[2]
    assert (job["attributed"], job["slurm_job"], job["pod"], job["namespace"]) == (True, "4242", None, None)
    (owner,) = _items(job, "owners")
    assert (owner["source"], owner["slurm_user"], owner["slurm_partition"], owner["container_id"]) == (
        "process",
        "alice",
        "gpu",
        None,
    )
    assert {"gpu": "2", "uuid": identities[2].uuid, "slurm_job": "4242"} in _series(gauges, ALLOCATION_INFO)
    pid = _pid(readings, 2)
    info = {s["pid"]: s for s in _series(gauges, PROCESS_INFO)}
    assert info[str(pid)] == {"pid": str(pid), "comm": "python3", "user": "ml", "slurm_job": "4242"}
    assert info[str(pid + 1)]["slurm_job"] == "4242"  # its worker
    # A job whose GPU runs no process is not seen, as on a real node: unattributed.
    assert owners[5]["attributed"] is False
    assert {"gpu": "5", "uuid": identities[5].uuid} in _series(gauges, ALLOCATION_INFO)


def test_gpus_without_an_owner_are_reported_exactly_as_the_attributor_does(
    fleet: tuple[Scenario, Read], tmp_path: Path
) -> None:
    # The real Attributor, on an empty /proc and without a kubelet, finds no owner for any process:
    # what it says about an unowned GPU is what the demo must say.
    scenario, (readings, host, identities) = fleet
    real = Attributor(AttributionSettings(kubernetes="off"), procfs=str(tmp_path))
    expected, expected_gauges = real.owners(readings, host, identities)
    owners, gauges = SimOwners(scenario).owners(readings, host, identities)
    for gpu in (3, 5):  # a GPU running an unowned process; one whose Slurm job runs nothing
        assert owners[gpu] == expected[gpu]
        assert owners[gpu]["attributed"] is False
    assert "no container, pod or Slurm job" in str(owners[3]["reason"])
    assert owners[5]["reason"] == "no compute process and no allocation"
    unowned = {(ALLOCATION_INFO, (("gpu", "3"), ("uuid", identities[3].uuid)))}
    unowned.add((PROCESS_INFO, (("pid", str(_pid(readings, 3))), ("comm", "python3"), ("user", "ml"))))
    assert unowned <= set(gauges) and unowned <= set(expected_gauges)

    # A fleet without owners: everything the same as the Attributor.
    plain = parse_scenario(
        "seed: 3\ngpus: [{model: H100-SXM, count: 2, workload: {kind: training}}, {model: L4}]"
    )
    readings, host, identities = _read(plain)
    real = Attributor(AttributionSettings(kubernetes="off"), procfs=str(tmp_path))
    assert SimOwners(plain).owners(readings, host, identities) == real.owners(readings, host, identities)


def test_series_carry_the_catalogs_labels_in_its_order(fleet: tuple[Scenario, Read]) -> None:
    scenario, (readings, host, identities) = fleet
    _, gauges = SimOwners(scenario).owners(readings, host, identities)
    assert {name for name, _ in gauges} == {ALLOCATION_INFO, PROCESS_INFO}
    for name, labels in gauges:
        names = [k for k, _ in labels]
        catalog = BY_NAME[name].labels
        assert names == [label for label in catalog if label in names], (name, names)
        assert all(v for _, v in labels)  # an unknown label is left out, never empty
    # one allocation series per GPU; one info series per process in the host reading
    assert len(_series(gauges, ALLOCATION_INFO)) == len(scenario.gpus)
    assert {s["pid"] for s in _series(gauges, PROCESS_INFO)} == {str(pid) for pid in host.processes}


def test_the_cap_keeps_allocations_first_and_counts_each_dropped_series_once(
    fleet: tuple[Scenario, Read],
) -> None:
    scenario, (readings, host, identities) = fleet
    owners = SimOwners(scenario, max_series=8)
    for _ in range(3):  # the same series dropped tick after tick are counted once
        _, gauges = owners.owners(readings, host, identities)
    assert len(gauges) == 8
    assert len(_series(gauges, ALLOCATION_INFO)) == 6
    # the two GPU processes with the lowest pids are kept; their workers are not
    gpu_pids = sorted(_pid(readings, gpu) for gpu in (0, 1, 2, 3))
    assert sorted(int(s["pid"]) for s in _series(gauges, PROCESS_INFO)) == gpu_pids[:2]
    assert owners.dropped_total == len(host.processes) - 2


def test_provide_fills_the_snapshot_like_the_attributor(fleet: tuple[Scenario, Read]) -> None:
    scenario, (readings, host, identities) = fleet
    stale = (PROCESS_INFO, (("pid", "1"), ("comm", "gone")))
    snapshot = Snapshot(
        timestamp=5.0,
        epoch=0.0,
        interval_seconds=1.0,
        nvml_up=True,
        nvml_message="",
        identities=identities,
        readings=readings,
        host=host,
        node_gauges={stale: 1.0},
    )
    owners = SimOwners(scenario).provide(snapshot)
    assert owners[0]["pod"] == "train-0" and sorted(owners) == list(range(6))
    assert stale not in snapshot.node_gauges  # info series are replaced each tick
    assert len([k for k in snapshot.node_gauges if k[0] == ALLOCATION_INFO]) == 6
    assert snapshot.node_counters[(DROPPED, ())] == 0.0
