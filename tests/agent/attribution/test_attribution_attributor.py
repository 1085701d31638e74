"""Attributor end to end: fixture /proc trees read by the real HostBackend, a real kubelet gRPC server."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from kubelet_server import FakeKubelet, pod

from agent.attribution.attributor import ALLOCATION_INFO, DROPPED, PROCESS_INFO, Attributor
from agent.attribution.kubelet import KubeletPods
from agent.attribution.settings import AttributionSettings
from agent.clock import ManualClock
from agent.host.backend import HostBackend
from agent.model import GpuIdentity, GpuProcess, GpuReading, HostReading
from agent.nvml.backend import NvmlBackend
from agent.nvml.fake import FakeNvml
from agent.nvml.steady import SteadyDevice
from agent.snapshot import CollectorStatus, Snapshot
from agent.specs import SPECS

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "attribution"
UUIDS = [f"GPU-{i}0000000-aaaa-4bbb-8ccc-{i:012d}" for i in range(6)]
MIG_EMBED = "MIG-5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
CTD = "4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
CTD2 = "c0ffee00d00dfeedc0ffee00d00dfeedc0ffee00d00dfeedc0ffee00d00dfeed"
CRIO = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0"
DOCK = "d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4e7d0c4"
POD_A = "0d4c8a6e-3b1f-4e2a-9c7d-5f6e8a9b0c1d"


def readings(procs: dict[int, list[GpuProcess]], n: int = 6) -> dict[int, GpuReading]:
    return {
        i: GpuReading(index=i, uuid=UUIDS[i], timestamp=0.0, processes=procs.get(i, [])) for i in range(n)
    }


def gpu_pids(procs: dict[int, list[GpuProcess]]) -> dict[int, tuple[int, ...]]:
    out: dict[int, list[int]] = {}
    for index, plist in procs.items():
        for p in plist:
            out.setdefault(p.pid, []).append(index)
    return {pid: tuple(v) for pid, v in out.items()}


def host_read(tree: str, procs: dict[int, list[GpuProcess]], tmp_path: Path) -> HostReading:
    backend = HostBackend(str(FIXTURES / tree / "proc"), str(tmp_path), str(tmp_path), ManualClock(0.0))
    return backend.read(gpu_pids(procs))


def attributor(tmp_path: Path, tree: str, socket: str | None = None, **kw: Any) -> Attributor:
    settings = AttributionSettings(
        kubernetes="on" if socket else "off", kubelet_socket=socket or "/nonexistent", **kw
    )
    return Attributor(settings, procfs=str(FIXTURES / tree / "proc"), clock=ManualClock(0.0))


def items(entry: dict[str, object], key: str) -> list[dict[str, Any]]:
    value = entry[key]
    assert isinstance(value, list)
    return value


def series(gauges: dict[Any, float], name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels), v in gauges.items() if n == name and v == 1.0]


# The Kubernetes node under cgroup v2: NVML names the trainer by its container pid (1) on GPU 0 and
# by its host pid on GPU 1; GPU 2 is split into MIG slices for two pods; GPU 3 runs a plain Docker
# container, GPU 4 a bare process, GPU 5 nothing.
K8S_PROCS = {
    0: [GpuProcess(pid=1, used_memory_bytes=40 * 2**30, sm_ratio=0.9)],
    1: [GpuProcess(pid=1001, used_memory_bytes=38 * 2**30, sm_ratio=0.85)],
    2: [
        GpuProcess(pid=1101, used_memory_bytes=9 * 2**30, sm_ratio=0.6),
        GpuProcess(pid=1201, used_memory_bytes=3 * 2**30, sm_ratio=0.25),
    ],
    3: [GpuProcess(pid=1301, used_memory_bytes=2**30, sm_ratio=0.1)],
    4: [GpuProcess(pid=1401, used_memory_bytes=2**29, sm_ratio=None)],
}
K8S_PODS = [
    pod("train-llama-0", "ml", {"trainer": [("nvidia.com/gpu", [UUIDS[0], UUIDS[1]])]}),
    pod("vllm-7d9f8c-x2k4q", "serving", {"vllm": [("nvidia.com/mig-3g.40gb", [f"MIG-{UUIDS[2]}/1/0"])]}),
    pod("embed-0", "ml", {"embedder": [("nvidia.com/mig-1g.10gb", [MIG_EMBED])]}),
]


@pytest.fixture
def k8s(kubelet: FakeKubelet, tmp_path: Path) -> tuple[Attributor, HostReading]:
    kubelet.pods = list(K8S_PODS)
    att = attributor(tmp_path, "k8s-v2", kubelet.socket_path)
    att.mig_devices = {MIG_EMBED: 2}
    assert att.kubelet.refresh()
    return att, host_read("k8s-v2", K8S_PROCS, tmp_path)


def test_whole_gpus_map_to_the_pod_and_the_container_pid_is_reported(
    k8s: tuple[Attributor, HostReading],
) -> None:
    att, host = k8s
    owners, _ = att.owners(readings(K8S_PROCS), host)
    for gpu in (0, 1):
        o = owners[gpu]
        assert o["attributed"] is True
        assert (o["pod"], o["namespace"], o["container"]) == ("train-llama-0", "ml", "trainer")
    (p0,) = items(owners[0], "processes")
    assert (p0["pid"], p0["host_pid"], p0["pid_namespace"], p0["container_pid"]) == (1, 1001, "container", 1)
    assert (p0["runtime"], p0["container_id"], p0["pod_uid"]) == ("containerd", CTD, POD_A)
    assert p0["descendants"] == [1002]  # the data-loader worker
    (p1,) = items(owners[1], "processes")
    assert (p1["pid"], p1["host_pid"], p1["pid_namespace"]) == (1001, 1001, "host")


def test_mig_slices_of_one_gpu_keep_their_own_pods_and_shares(k8s: tuple[Attributor, HostReading]) -> None:
    att, host = k8s
    owners, gauges = att.owners(readings(K8S_PROCS), host)
    o = owners[2]
    assert o["pod"] == "embed-0, vllm-7d9f8c-x2k4q"
    pods = {(x["pod"], x["namespace"], x["container"]) for x in items(o, "owners")}
    assert pods == {("vllm-7d9f8c-x2k4q", "serving", "vllm"), ("embed-0", "ml", "embedder")}
    procs = {p["pid"]: p for p in items(o, "processes")}
    assert (procs[1101]["pod"], procs[1101]["runtime"], procs[1101]["sm_ratio"]) == (
        "vllm-7d9f8c-x2k4q",
        "cri-o",
        0.6,
    )
    assert (procs[1201]["pod"], procs[1201]["container"], procs[1201]["sm_ratio"]) == (
        "embed-0",
        "embedder",
        0.25,
    )
    alloc = [s for s in series(gauges, ALLOCATION_INFO) if s["gpu"] == "2"]
    assert sorted(s["pod"] for s in alloc) == ["embed-0", "vllm-7d9f8c-x2k4q"]


def test_docker_bare_and_idle_gpus(k8s: tuple[Attributor, HostReading]) -> None:
    att, host = k8s
    owners, gauges = att.owners(readings(K8S_PROCS), host)
    assert owners[3]["attributed"] is True and owners[3]["container"] == DOCK[:12]
    assert items(owners[3], "processes")[0]["runtime"] == "docker"
    assert owners[4]["attributed"] is False
    assert "no container, pod or Slurm job" in str(owners[4]["reason"])
    assert items(owners[4], "processes")[0]["comm"] == "python"
    assert owners[5] == {
        **owners[5],
        "attributed": False,
        "processes": [],
        "reason": "no compute process and no allocation",
    }
    # unattributed GPUs still have an allocation series, without owner labels
    by_gpu = {s["gpu"]: s for s in series(gauges, ALLOCATION_INFO)}
    assert by_gpu["4"] == {"gpu": "4", "uuid": UUIDS[4]}
    assert by_gpu["5"] == {"gpu": "5", "uuid": UUIDS[5]}


def test_process_info_series(k8s: tuple[Attributor, HostReading]) -> None:
    att, host = k8s
    _, gauges = att.owners(readings(K8S_PROCS), host)
    info = {s["pid"]: s for s in series(gauges, PROCESS_INFO)}
    assert info["1001"] == {
        "pid": "1001",
        "comm": "python",
        "user": info["1001"]["user"],
        "container_id": CTD,
        "pod": "train-llama-0",
        "namespace": "ml",
        "container": "trainer",
    }
    assert info["1002"]["pod"] == "train-llama-0"  # the worker inherits through the GPUs it serves
    assert info["1101"]["pod"] == "vllm-7d9f8c-x2k4q" and info["1101"]["container_id"] == CRIO
    assert info["1201"]["container_id"] == CTD2
    assert info["1301"]["container"] == DOCK[:12] and "pod" not in info["1301"]
    assert set(info["1401"]) == {"pid", "comm", "user"}
    assert "1" not in info  # the host's init is not the trainer


def test_ended_pod_and_process_drop_out(
    k8s: tuple[Attributor, HostReading], kubelet: FakeKubelet, tmp_path: Path
) -> None:
    att, host = k8s
    att.owners(readings(K8S_PROCS), host)
    kubelet.pods = [p for p in K8S_PODS if p.name != "train-llama-0"]  # the training pod ended
    assert att.kubelet.refresh()
    procs = {i: v for i, v in K8S_PROCS.items() if i not in (0, 1)}
    owners, gauges = att.owners(readings(procs), host_read("k8s-v2", procs, tmp_path))
    assert owners[0]["attributed"] is False and owners[0]["pod"] is None
    assert {"1001", "1002"}.isdisjoint(s["pid"] for s in series(gauges, PROCESS_INFO))
    assert not [s for s in series(gauges, ALLOCATION_INFO) if s.get("pod") == "train-llama-0"]


def test_without_the_kubelet_the_pod_uid_from_the_cgroup_is_used(tmp_path: Path) -> None:
    att = attributor(tmp_path, "k8s-v2")
    owners, gauges = att.owners(readings(K8S_PROCS), host_read("k8s-v2", K8S_PROCS, tmp_path))
    assert owners[0]["pod"] == POD_A and owners[0]["namespace"] is None
    info = {s["pid"]: s for s in series(gauges, PROCESS_INFO)}
    assert info["1001"]["pod"] == POD_A and "namespace" not in info["1001"]


@pytest.mark.parametrize(
    ("pid", "runtime", "container_id", "pod_uid"),
    [
        (
            2001,
            "containerd",
            "1111aaaa2222bbbb3333cccc4444dddd5555eeee6666ffff7777000088889999",
            "2f3e4d5c-6b7a-4891-a2b3-c4d5e6f7a8b9",
        ),  # cgroupfs driver: runtime from the shim
        (
            2101,
            "cri-o",
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
            "3a4b5c6d-7e8f-4a0b-9c1d-2e3f4a5b6c7d",
        ),
        (2201, "docker", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", None),
    ],
)
def test_cgroup_v1_runtimes(
    tmp_path: Path, pid: int, runtime: str, container_id: str, pod_uid: str | None
) -> None:
    procs = {0: [GpuProcess(pid=pid, used_memory_bytes=2**30)]}
    att = attributor(tmp_path, "k8s-v1")
    owners, _ = att.owners(readings(procs, 1), host_read("k8s-v1", procs, tmp_path))
    (p,) = items(owners[0], "processes")
    assert (p["runtime"], p["container_id"], p["pod_uid"]) == (runtime, container_id, pod_uid)
    assert owners[0]["attributed"] is True


def test_slurm_v1_cgroup_and_environment(tmp_path: Path) -> None:
    procs = {
        0: [GpuProcess(pid=3001)],
        1: [GpuProcess(pid=3001)],
        2: [GpuProcess(pid=3101)],
        3: [GpuProcess(pid=3201)],
    }
    att = attributor(tmp_path, "slurm-v1")
    owners, gauges = att.owners(readings(procs, 5), host_read("slurm-v1", procs, tmp_path))
    assert owners[0]["slurm_job"] == "77" and owners[1]["slurm_job"] == "77"
    (o,) = items(owners[0], "owners")
    assert (o["slurm_user"], o["slurm_partition"], o["source"]) == ("root", "a100-long", "process")
    (o78,) = items(owners[2], "owners")
    assert (o78["slurm_job"], o78["slurm_user"], o78["slurm_partition"]) == (
        "78",
        "54321",
        None,
    )  # no environ
    (o80,) = items(owners[3], "owners")
    assert (o80["slurm_job"], o80["slurm_user"], o80["slurm_partition"]) == ("80", "carol", "debug")
    assert owners[4]["attributed"] is False
    info = {s["pid"]: s for s in series(gauges, PROCESS_INFO)}
    assert info["3002"]["slurm_job"] == "77"  # the worker, from its own cgroup
    alloc = {s["gpu"]: s for s in series(gauges, ALLOCATION_INFO)}
    assert alloc["0"] == {"gpu": "0", "uuid": UUIDS[0], "slurm_job": "77"}


def test_slurm_v2(tmp_path: Path) -> None:
    procs = {0: [GpuProcess(pid=4001)]}
    att = attributor(tmp_path, "slurm-v2")
    owners, _ = att.owners(readings(procs, 1), host_read("slurm-v2", procs, tmp_path))
    (o,) = items(owners[0], "owners")
    assert (o["slurm_job"], o["slurm_user"], o["slurm_partition"]) == ("91", "alice", "h100")


def test_series_cap_counts_each_dropped_series_once(k8s: tuple[Attributor, HostReading]) -> None:
    att, host = k8s
    att.settings.max_series = 8  # 7 allocation series (GPU 2 has two owners) + 1 process
    _, gauges = att.owners(readings(K8S_PROCS), host)
    assert len(gauges) == 8
    assert len(series(gauges, ALLOCATION_INFO)) == 7  # allocations come first
    kept = series(gauges, PROCESS_INFO)
    assert [s["pid"] for s in kept] == ["1001"]  # then the GPU processes NVML named
    dropped = att.dropped_total
    assert dropped == 5  # 1101, 1201, 1301, 1401, and the worker 1002
    att.owners(readings(K8S_PROCS), host)
    assert att.dropped_total == dropped  # the same series again: not counted twice


def test_provide_fills_the_snapshot(k8s: tuple[Attributor, HostReading]) -> None:
    att, host = k8s
    snap = Snapshot(
        timestamp=1.0,
        epoch=1.0,
        interval_seconds=1.0,
        nvml_up=True,
        nvml_message="",
        identities={i: GpuIdentity(i, UUIDS[i], "NVIDIA H100", f"0000:{i:02x}:00.0") for i in range(6)},
        readings=readings(K8S_PROCS),
        host=host,
        node_gauges={(PROCESS_INFO, (("pid", "999"),)): 1.0},
    )  # a stale series from elsewhere
    owners = att.provide(snap)
    assert owners[0]["pod"] == "train-llama-0"
    assert (PROCESS_INFO, (("pid", "999"),)) not in snap.node_gauges
    assert any(k[0] == PROCESS_INFO for k in snap.node_gauges)
    assert snap.node_counters[(DROPPED, ())] == 0.0
    status = snap.collectors["kubernetes"]
    assert isinstance(status, CollectorStatus) and status.success


def test_disabled_attribution_exports_nothing(tmp_path: Path) -> None:
    att = Attributor(AttributionSettings(enabled=False), procfs=str(FIXTURES / "k8s-v2" / "proc"))
    assert att.owners(readings(K8S_PROCS), None) == ({}, {})
    assert att.collector_status() is None


def test_kubelet_failure_is_reported_and_attribution_carries_on(tmp_path: Path) -> None:
    settings = AttributionSettings(kubernetes="on", kubelet_socket=str(tmp_path / "missing.sock"))
    att = Attributor(
        settings, procfs=str(FIXTURES / "k8s-v2" / "proc"), kubelet=KubeletPods(settings, ManualClock(0.0))
    )
    assert not att.kubelet.refresh()
    owners, _ = att.owners(readings(K8S_PROCS), host_read("k8s-v2", K8S_PROCS, tmp_path))
    assert owners[0]["pod"] == POD_A  # the cgroup fallback
    status = att.collector_status()
    assert status is not None and not status.success and "missing.sock" in (status.message or "")


def test_a_container_on_a_gpu_allocated_to_another_pod_is_not_given_that_pod(
    k8s: tuple[Attributor, HostReading], tmp_path: Path
) -> None:
    att, _ = k8s
    # the embedder (its own pod UID) runs on GPU 0, which the kubelet gave to train-llama-0
    procs = {
        **K8S_PROCS,
        0: [*K8S_PROCS[0], GpuProcess(pid=1201, used_memory_bytes=2**28)],
        2: K8S_PROCS[2][:1],
    }
    host = host_read("k8s-v2", procs, tmp_path)
    owners, gauges = att.owners(readings(procs), host)
    info = {s["pid"]: s for s in series(gauges, PROCESS_INFO)}
    assert info["1001"]["pod"] == "train-llama-0"
    assert info["1201"]["pod"] == "5b4a3928-1706-4f5e-8d3c-2b1a09f8e7d6"  # its pod UID, not the trainer's pod
    assert owners[0]["pod"] == "train-llama-0"


# MIG devices named by the kubelet as MIG-<uuid>: their parent GPU comes from the NVML backend's
# identities (GpuIdentity.mig_devices), read here through FakeNvml, not set by hand.
MIG_OTHER = "MIG-0a0b0c0d-1e1f-4a2b-8c3d-4e5f6a7b8c9d"  # on no GPU of this node


def nvml_identities(mig_uuids: tuple[str, ...]) -> dict[int, GpuIdentity]:
    """Three H100s through the real NvmlBackend over FakeNvml; GPU 2 is MIG-enabled with ``mig_uuids``."""
    clock = ManualClock(0.0)
    models = [SteadyDevice(SPECS["H100-SXM"], i, mig_uuids=mig_uuids if i == 2 else ()) for i in range(3)]
    backend = NvmlBackend(FakeNvml(models, clock), clock)
    assert backend.start()
    try:
        return {ident.index: ident for ident in backend.identities()}
    finally:
        backend.close()


def mig_snapshot(identities: dict[int, GpuIdentity]) -> Snapshot:
    return Snapshot(
        timestamp=1.0, epoch=1.0, interval_seconds=1.0, nvml_up=True, nvml_message="", identities=identities
    )


def test_a_mig_device_from_the_kubelet_is_placed_on_its_parent_gpu(
    kubelet: FakeKubelet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kubelet.pods = [
        pod("embed-0", "ml", {"embedder": [("nvidia.com/mig-1g.10gb", [MIG_EMBED])]}),
        pod("elsewhere", "ml", {"c": [("nvidia.com/mig-1g.10gb", [MIG_OTHER])]}),
    ]
    att = attributor(tmp_path, "k8s-v2", kubelet.socket_path)
    assert att.mig_devices == {}  # nothing set by hand: the identities say where MIG_EMBED is
    assert att.kubelet.refresh()
    identities = nvml_identities((MIG_EMBED.lower(), "", "MIG-99999999-8888-4777-8666-555555555555"))
    assert identities[2].mig_devices[0] == MIG_EMBED.lower()  # case differs from the kubelet's: still matched
    snap = mig_snapshot(identities)
    with caplog.at_level("WARNING", logger="agent.attribution.attributor"):
        owners = att.provide(snap)
    assert owners[2]["attributed"] is True and owners[2]["pod"] == "embed-0"
    (owner,) = items(owners[2], "owners")
    assert (owner["pod"], owner["namespace"], owner["container"], owner["source"]) == (
        "embed-0",
        "ml",
        "embedder",
        "kubelet",
    )
    assert owner["devices"] == [
        {"device_id": MIG_EMBED, "resource": "nvidia.com/mig-1g.10gb", "mig": MIG_EMBED}
    ]
    alloc = series(snap.node_gauges, ALLOCATION_INFO)
    assert {
        "gpu": "2",
        "uuid": identities[2].uuid,
        "pod": "embed-0",
        "namespace": "ml",
        "container": "embedder",
    } in alloc
    assert [s for s in alloc if s["gpu"] in ("0", "1")] == [
        {"gpu": "0", "uuid": identities[0].uuid},
        {"gpu": "1", "uuid": identities[1].uuid},
    ]  # whole GPUs without MIG: unattributed
    assert not any(s.get("pod") == "elsewhere" for s in alloc)  # its MIG device is on no GPU here
    unplaced = [r.getMessage() for r in caplog.records if "no GPU here reports it" in r.getMessage()]
    assert len(unplaced) == 1 and MIG_OTHER in unplaced[0]


def test_without_the_identities_mig_devices_the_mig_pod_is_not_placed(
    kubelet: FakeKubelet, tmp_path: Path
) -> None:
    kubelet.pods = [pod("embed-0", "ml", {"embedder": [("nvidia.com/mig-1g.10gb", [MIG_EMBED])]})]
    att = attributor(tmp_path, "k8s-v2", kubelet.socket_path)
    assert att.kubelet.refresh()
    identities = nvml_identities((MIG_EMBED,))
    bare = {i: dataclasses.replace(ident, mig_devices=()) for i, ident in identities.items()}
    owners = att.provide(mig_snapshot(bare))
    assert all(o["attributed"] is False for o in owners.values())
    # and the MIG layout follows the identities: with them back, the pod is placed
    assert att.provide(mig_snapshot(identities))[2]["pod"] == "embed-0"
