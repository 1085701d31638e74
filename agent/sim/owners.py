"""Who owns each simulated GPU: the ``owners_provider`` of ``gpulse demo``.

The real ``Attributor`` reads ``/proc/<pid>/cgroup`` and ``environ`` and asks the kubelet.
The demo must not: its simulated PIDs may belong to unrelated real processes on this
machine. This provider answers from the scenario instead (each ``gpus`` entry's
``owner``) and from the simulated process tree the host source reports (the main
process the fake NVML lists on a GPU, and its data-loader workers).

What a real node would show, and what this gives:

- a Kubernetes owner is an allocation as the kubelet reports it (device id = the GPU's
  UUID, resource ``nvidia.com/gpu``), held for the whole scenario, and every process on
  the GPU runs in that pod's container (containerd; pod UID and container id derived
  from the names and the seed, so one pod has one UID on all of its GPUs);
- a Slurm job is known through its processes (job id, user, partition), as from the
  cgroup path and ``SLURM_*`` environment; while its GPU runs no process, the GPU is
  unattributed, as on a real node;
- a GPU without an owner is unattributed: its processes are bare host processes.

The owners dict and the series are built by the Attributor's own code
(``Attributor.gpu_entry``, ``process_labels``), so ``Snapshot.owners``,
``gpulse_gpu_allocation_info`` and ``gpulse_process_info`` have exactly its shape, and
the same cap (``attribution.max_series``) and dropped-series counter apply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from agent.attribution.attributor import (
    AttributedProcess,
    Attributor,
    SeriesCap,
    descendants_of,
    put_owner_series,
)
from agent.attribution.kubelet import Allocation, DeviceRef, PodContainer
from agent.model import GpuIdentity, GpuReading, HostReading, ProcessStats
from agent.sim.scenario import OwnerSpec, Scenario
from agent.snapshot import CounterKey, Labels, Snapshot

GPU_RESOURCE = "nvidia.com/gpu"


class SimOwners:
    """Owners of a simulated fleet's GPUs and processes, from its scenario."""

    def __init__(self, scenario: Scenario, *, max_series: int = 2000) -> None:
        self.owners_by_gpu: dict[int, OwnerSpec] = {
            i: entry.owner for i, entry in enumerate(scenario.gpus) if entry.owner is not None
        }
        self.seed = scenario.seed
        # (pod UID, container id) per Kubernetes owner, worked out once
        self._pod_ids = {o: _pod_ids(self.seed, o) for o in self.owners_by_gpu.values() if o.kubernetes}
        self.max_series = max_series
        self.series_cap = SeriesCap()  # the same cap and dropped-series count as the Attributor

    # -- the runtime's owners_provider ---------------------------------------------------

    def provide(self, snapshot: Snapshot) -> dict[int, dict[str, object]]:
        """Fill a snapshot in progress as ``Attributor.provide`` does: returns its owners; puts the
        info series and the dropped-series counter in it."""
        owners, gauges = self.owners(snapshot.readings, snapshot.host, snapshot.identities)
        put_owner_series(snapshot, gauges, self.dropped_total)
        return owners

    def owners(
        self,
        readings: Mapping[int, GpuReading],
        host: HostReading | None,
        identities: Mapping[int, GpuIdentity] | None = None,
    ) -> tuple[dict[int, dict[str, object]], dict[CounterKey, float]]:
        """GPU index -> owners, and the info series (full label sets) for this tick."""
        uuids = {i: r.uuid for i, r in readings.items()}
        uuids.update({i: ident.uuid for i, ident in (identities or {}).items()})
        processes = host.processes if host is not None else {}
        attributed = {pid: self._attribute(proc) for pid, proc in processes.items()}
        descendants = descendants_of(attributed)
        owners: dict[int, dict[str, object]] = {}
        alloc_series: list[Labels] = []
        for index in sorted(uuids):
            entry, series = Attributor.gpu_entry(
                index,
                uuids[index],
                readings.get(index),
                self._allocations(index, uuids[index]),
                attributed,
                descendants,
                processes,
            )
            owners[index] = entry
            alloc_series.extend(series)
        return owners, self._cap(alloc_series, attributed)

    # -- the simulated answers -------------------------------------------------------------

    def _allocations(self, index: int, uuid: str) -> list[Allocation]:
        """What the kubelet's pod-resources ``List`` would say about this GPU."""
        owner = self.owners_by_gpu.get(index)
        if owner is None or not owner.kubernetes:
            return []
        assert owner.pod is not None and owner.namespace is not None and owner.container is not None
        pod = PodContainer(owner.pod, owner.namespace, owner.container)
        return [Allocation(pod, GPU_RESOURCE, uuid, DeviceRef(gpu_uuid=uuid))]

    def _attribute(self, proc: ProcessStats) -> AttributedProcess:
        """A process belongs to the owner of the GPU it (or its parent) runs on."""
        owner = next(
            (self.owners_by_gpu[i] for i in sorted(proc.gpu_indices) if i in self.owners_by_gpu), None
        )
        if owner is None:
            return AttributedProcess(proc, None, None, None, None, None, None, None, None, None)
        if owner.kubernetes:
            pod_uid, container_id = self._pod_ids[owner]
            return AttributedProcess(
                proc,
                "containerd",
                container_id,
                pod_uid,
                owner.pod,
                owner.namespace,
                owner.container,
                None,
                None,
                None,
            )
        return AttributedProcess(
            proc, None, None, None, None, None, None, owner.slurm_job, owner.user, owner.partition
        )

    @property
    def dropped_total(self) -> float:
        return self.series_cap.dropped_total

    def _cap(
        self, alloc_series: list[Labels], attributed: dict[int, AttributedProcess]
    ) -> dict[CounterKey, float]:
        return self.series_cap.apply(self.max_series, alloc_series, attributed)[0]


def _pod_ids(seed: int, owner: OwnerSpec) -> tuple[str, str]:
    """(pod UID, container id): stable for a pod and seed, shared by all of the pod's GPUs."""
    pod = hashlib.sha256(f"{seed}/{owner.namespace}/{owner.pod}".encode()).hexdigest()
    uid = f"{pod[0:8]}-{pod[8:12]}-{pod[12:16]}-{pod[16:20]}-{pod[20:32]}"
    container = hashlib.sha256(f"{seed}/{owner.namespace}/{owner.pod}/{owner.container}".encode())
    return uid, container.hexdigest()
