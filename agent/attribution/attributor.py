"""Attributor: who owns each GPU and each GPU process, once per sampling tick.

Inputs are what the tick already holds — the GPU readings (with NVML's compute
processes), the host reading (the processes behind each GPU, keyed by host PID) — plus
the kubelet's device map, which a timer thread keeps fresh. Nothing here waits on I/O
other than reading ``/proc/<pid>/cgroup`` (and ``environ``) once for each new process.

Outputs:
- ``owners``: GPU index -> a JSON-ready dict (the owners, the allocations the kubelet
  reports, and every process with its namespace PIDs, container, pod, job, GPU memory
  and SM share) for ``Snapshot.owners`` and the API;
- info series for ``Snapshot.node_gauges``: ``gpulse_process_info`` per process and
  ``gpulse_gpu_allocation_info`` per GPU and owner; a GPU without an owner still gets
  an allocation series, without owner labels, so it shows as unattributed rather than
  missing. At most ``max_series`` are exported; ``gpulse_attribution_dropped_series_total``
  counts each series left out (once, when it is first left out).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from agent.attribution.kubelet import Allocation, DeviceMap, KubeletPods, PodContainer
from agent.attribution.process_owner import ProcessOwners
from agent.attribution.settings import AttributionSettings
from agent.clock import Clock
from agent.model import GpuIdentity, GpuProcess, GpuReading, HostReading, ProcessStats
from agent.snapshot import CollectorStatus, CounterKey, Labels, Snapshot

log = logging.getLogger(__name__)

PROCESS_INFO = "gpulse_process_info"
ALLOCATION_INFO = "gpulse_gpu_allocation_info"
DROPPED = "gpulse_attribution_dropped_series_total"


@dataclass
class AttributedProcess:
    """One host process with its owner resolved (public: the demo's owners provider builds these too)."""

    proc: ProcessStats
    runtime: str | None
    container_id: str | None
    pod_uid: str | None
    pod: str | None
    namespace: str | None
    container: str | None
    slurm_job: str | None
    slurm_user: str | None
    slurm_partition: str | None


class SeriesCap:
    """At most ``limit`` attribution series per node, in a fixed order; each dropped one counted once.

    The order under the cap: allocations, then the GPU processes NVML named, then their
    descendants, so the series that say whose GPU it is are the last to go.
    """

    def __init__(self) -> None:
        self.dropped_total = 0.0
        self._dropped: set[CounterKey] = set()

    def apply(
        self, limit: int, alloc_series: list[Labels], attributed: dict[int, AttributedProcess]
    ) -> tuple[dict[CounterKey, float], int, int]:
        """(the series kept, how many were newly dropped, how many are dropped in all)."""
        candidates: list[CounterKey] = [(ALLOCATION_INFO, labels) for labels in alloc_series]
        order = sorted(attributed, key=lambda pid: (attributed[pid].proc.ppid in attributed, pid))
        candidates += [(PROCESS_INFO, process_labels(attributed[pid])) for pid in order]
        dropped = set(candidates[limit:])
        new = len(dropped - self._dropped)
        self.dropped_total += new
        self._dropped = dropped
        return dict.fromkeys(candidates[:limit], 1.0), new, len(dropped)


def put_owner_series(snapshot: Snapshot, gauges: Mapping[CounterKey, float], dropped_total: float) -> None:
    """Put this tick's process and allocation info series in a snapshot in progress (replacing
    any already there) and the dropped-series counter."""
    for key in [k for k in snapshot.node_gauges if k[0] in (PROCESS_INFO, ALLOCATION_INFO)]:
        del snapshot.node_gauges[key]
    snapshot.node_gauges.update(gauges)
    snapshot.node_counters[(DROPPED, ())] = dropped_total


class Attributor:
    def __init__(
        self,
        settings: AttributionSettings,
        procfs: str = "/proc",
        clock: Clock | None = None,
        *,
        kubelet: KubeletPods | None = None,
    ) -> None:
        self.settings = settings
        self.kubelet = kubelet if kubelet is not None else KubeletPods(settings, clock)
        self._owners = ProcessOwners(procfs, read_environ=settings.slurm_environ)
        self._uid_pods: dict[str, tuple[str, str]] = {}  # pod UID -> (pod, namespace), learned
        self._cid_containers: dict[str, str] = {}  # container id -> container name, learned
        self.series_cap = SeriesCap()
        # MIG device UUID -> parent GPU index, for kubelet device ids of the form MIG-<uuid>:
        # what the GPU identities list (GpuIdentity.mig_devices, from the NVML backend) each
        # tick, plus anything set here by hand (which the identities override).
        self.mig_devices: dict[str, int] = {}
        self._mig_parents: dict[str, int] = {}
        self._unplaced_logged: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.enabled:
            self.kubelet.start()

    def close(self) -> None:
        self.kubelet.close()

    def collector_status(self) -> CollectorStatus | None:
        """The ``kubernetes`` collector's status; None when not on Kubernetes (auto mode, no socket)."""
        return self.kubelet.current()[1] if self.settings.enabled and self.kubelet.enabled else None

    # -- the runtime's owners_provider ---------------------------------------------

    def provide(self, snapshot: Snapshot) -> dict[int, dict[str, object]]:
        """Fill a snapshot in progress: returns its owners; adds the info series, the dropped
        counter and the ``kubernetes`` collector status to it."""
        owners, gauges = self.owners(snapshot.readings, snapshot.host, snapshot.identities)
        put_owner_series(snapshot, gauges, self.dropped_total)
        status = self.collector_status()
        if status is not None:
            snapshot.collectors["kubernetes"] = status
        return owners

    # -- the work --------------------------------------------------------------------

    def owners(
        self,
        readings: Mapping[int, GpuReading],
        host: HostReading | None,
        identities: Mapping[int, GpuIdentity] | None = None,
    ) -> tuple[dict[int, dict[str, object]], dict[CounterKey, float]]:
        """GPU index -> owners, and the info series (full label sets) for this tick."""
        if not self.settings.enabled:
            return {}, {}
        identities = identities or {}
        self._mig_parents = {
            **self.mig_devices,
            **{mig: i for i, ident in identities.items() for mig in ident.mig_devices},
        }
        uuids = {i: r.uuid for i, r in readings.items()}
        uuids.update({i: ident.uuid for i, ident in identities.items()})
        kube_map = self.kubelet.current()[0] if self.kubelet.enabled else None
        allocations = {i: self._allocations(kube_map, i, uuid) for i, uuid in uuids.items()}
        if kube_map is not None:
            self._log_unplaced(kube_map)
            self._prune_learned(kube_map)

        processes = host.processes if host is not None else {}
        attributed = self._attribute_processes(processes, readings, allocations)

        descendants = descendants_of(attributed)
        owners: dict[int, dict[str, object]] = {}
        alloc_series: list[Labels] = []
        for index in sorted(uuids):
            entry, series = self.gpu_entry(
                index,
                uuids[index],
                readings.get(index),
                allocations[index],
                attributed,
                descendants,
                processes,
            )
            owners[index] = entry
            alloc_series.extend(series)
        gauges = self._cap(alloc_series, attributed)
        return owners, gauges

    def _allocations(self, kube_map: DeviceMap | None, index: int, uuid: str) -> list[Allocation]:
        if kube_map is None:
            return []
        return kube_map.for_gpu(index, uuid, self._mig_parents)

    def _attribute_processes(
        self,
        processes: Mapping[int, ProcessStats],
        readings: Mapping[int, GpuReading],
        allocations: dict[int, list[Allocation]],
    ) -> dict[int, AttributedProcess]:
        nvml_hosts = {host for r in readings.values() for host in _host_pids(r, processes).values()}
        # GPU processes first: what they teach (pod UID -> pod name) serves their descendants.
        order = sorted(processes, key=lambda pid: (pid not in nvml_hosts, pid))
        out: dict[int, AttributedProcess] = {}
        for pid in order:
            proc = processes[pid]
            owner = self._owners.owner(proc)
            info, job = owner.container, owner.slurm
            pod = namespace = container = None
            if info.container_id is not None and info.container_id in self._cid_containers:
                container = self._cid_containers[info.container_id]
            if info.pod_uid is not None and info.pod_uid in self._uid_pods:
                pod, namespace = self._uid_pods[info.pod_uid]
            if pod is None and info.kubernetes:
                pod, namespace, container = self._pod_from_gpus(
                    proc, info.pod_uid, info.container_id, allocations
                )
            if container is None and info.container_id is not None and not info.kubernetes:
                # Docker/Podman outside Kubernetes: the short id that `docker ps` shows
                container = info.container_id[:12]
            out[pid] = AttributedProcess(
                proc,
                info.runtime,
                info.container_id,
                info.pod_uid,
                pod,
                namespace,
                container,
                job.job_id if job else None,
                job.user if job else None,
                job.partition if job else None,
            )
        self._owners.forget_except({(p.pid, p.create_time) for p in processes.values()})
        return out

    def _pod_from_gpus(
        self,
        proc: ProcessStats,
        pod_uid: str | None,
        container_id: str | None,
        allocations: dict[int, list[Allocation]],
    ) -> tuple[str | None, str | None, str | None]:
        """(pod, namespace, container) of a Kubernetes process from the allocations of its GPUs."""
        candidates = {a.owner for i in proc.gpu_indices for a in allocations.get(i, ())}
        if pod_uid is not None:
            # A pod already known under another UID is not this process's pod (a container that
            # sees GPUs it was not allocated, e.g. with NVIDIA_VISIBLE_DEVICES=all).
            taken = {named: uid for uid, named in self._uid_pods.items() if uid != pod_uid}
            candidates = {c for c in candidates if (c.pod, c.namespace) not in taken}
        if len(candidates) > 1:
            # A shared GPU (MIG slices, time-slicing): the container's HOSTNAME is its pod's name.
            hostname = self._owners.hostname(proc)
            candidates = {c for c in candidates if c.pod == hostname}
        if len(candidates) == 1:
            (only,) = candidates
            self._learn(pod_uid, container_id, only)
            return only.pod, only.namespace, only.container
        return pod_uid, None, None  # fallback: the pod UID from the cgroup path, no name known

    def _learn(self, pod_uid: str | None, container_id: str | None, owner: PodContainer) -> None:
        if pod_uid is not None:
            self._uid_pods[pod_uid] = (owner.pod, owner.namespace)
        if container_id is not None:
            self._cid_containers[container_id] = owner.container

    def _prune_learned(self, kube_map: DeviceMap) -> None:
        # A pod the kubelet no longer lists has ended: forget its name with it.
        ended = [uid for uid, (pod, ns) in self._uid_pods.items() if (ns, pod) not in kube_map.pods]
        for uid in ended:
            del self._uid_pods[uid]
        if ended:
            self._cid_containers.clear()  # cheap to relearn; container ids do not say their pod

    @staticmethod
    def gpu_entry(
        index: int,
        uuid: str,
        reading: GpuReading | None,
        allocations: list[Allocation],
        attributed: dict[int, AttributedProcess],
        descendants: dict[int, list[int]],
        processes: Mapping[int, ProcessStats],
    ) -> tuple[dict[str, object], list[Labels]]:
        owners: dict[tuple[str, str, str, str], dict[str, object]] = {}
        for a in allocations:
            key = (a.owner.pod, a.owner.namespace, a.owner.container, "")
            alloc_owner = owners.setdefault(
                key, _owner(a.owner.pod, a.owner.namespace, a.owner.container, None, "kubelet")
            )
            devices = alloc_owner.setdefault("devices", [])
            assert isinstance(devices, list)
            devices.append({"device_id": a.device_id, "resource": a.resource, "mig": a.ref.mig})
        proc_entries: list[dict[str, object]] = []
        host_pids = _host_pids(reading, processes) if reading is not None else {}
        for gp in (reading.processes or []) if reading is not None else []:
            host_pid = host_pids.get(gp.pid)
            att = attributed.get(host_pid) if host_pid is not None else None
            proc_entries.append(_process_entry(gp, host_pid, att, descendants))
            if att is None or not (att.pod or att.slurm_job or att.container_id):
                continue  # a bare host process: it is listed, but owns nothing on its own
            if allocations and att.pod is not None and att.namespace is None and not att.slurm_job:
                continue  # only its pod UID is known, and the kubelet already named this GPU's owners
            key = (att.pod or "", att.namespace or "", att.container or "", att.slurm_job or "")
            found = owners.get(key)
            if found is None:
                owners[key] = _owner(att.pod, att.namespace, att.container, att, "process")
            else:  # the kubelet named it already; add what the process's cgroup says
                for name, value in _owner(None, None, None, att, "process").items():
                    if found.get(name) is None:
                        found[name] = value
        entry: dict[str, object] = {
            "gpu": index,
            "uuid": uuid,
            "attributed": bool(owners),
            "owners": list(owners.values()),
            "processes": proc_entries,
        }
        for label in ("pod", "namespace", "container", "slurm_job"):
            values = sorted({str(o[label]) for o in owners.values() if o.get(label)})
            entry[label] = ", ".join(values) if values else None
        if not owners:
            entry["reason"] = (
                "compute processes found, but no container, pod or Slurm job owns them"
                if proc_entries
                else "no compute process and no allocation"
            )
        base = (("gpu", str(index)), ("uuid", uuid))
        series = [
            base + tuple((k, str(o[k])) for k in ("pod", "namespace", "container", "slurm_job") if o.get(k))
            for o in owners.values()
        ]
        return entry, series or [base]  # an unattributed GPU keeps a series, without owner labels

    @property
    def dropped_total(self) -> float:
        return self.series_cap.dropped_total

    def _cap(
        self, alloc_series: list[Labels], attributed: dict[int, AttributedProcess]
    ) -> dict[CounterKey, float]:
        kept, new, dropped = self.series_cap.apply(self.settings.max_series, alloc_series, attributed)
        if new:
            limit = self.settings.max_series
            log.warning("attribution: %d series over the cap of %d were not exported", dropped, limit)
        return kept

    def _log_unplaced(self, kube_map: DeviceMap) -> None:
        for alloc in kube_map.unplaced_mig(self._mig_parents):
            if alloc.device_id not in self._unplaced_logged and len(self._unplaced_logged) < 1000:
                self._unplaced_logged.add(alloc.device_id)
                log.warning(
                    "MIG device %s is allocated to pod %s/%s, but no GPU here reports it",
                    alloc.device_id,
                    alloc.owner.namespace,
                    alloc.owner.pod,
                )


def _host_pids(reading: GpuReading, processes: Mapping[int, ProcessStats]) -> dict[int, int]:
    """NVML pid -> host pid for one GPU's compute processes (NVML may give either)."""
    out: dict[int, int] = {}
    if not reading.processes:
        return out
    for gp in reading.processes:
        proc = processes.get(gp.pid)
        if proc is not None and reading.index in proc.gpu_indices:
            out[gp.pid] = gp.pid
            continue
        for p in processes.values():
            if len(p.nspids) > 1 and p.nspids[-1] == gp.pid and reading.index in p.gpu_indices:
                out[gp.pid] = p.pid
                break
    return out


def _owner(
    pod: str | None, namespace: str | None, container: str | None, att: AttributedProcess | None, source: str
) -> dict[str, object]:
    out: dict[str, object] = {
        "pod": pod,
        "namespace": namespace,
        "container": container,
        "source": source,
        "slurm_job": None,
    }
    if att is not None:
        out.update(
            slurm_job=att.slurm_job,
            slurm_user=att.slurm_user,
            slurm_partition=att.slurm_partition,
            container_id=att.container_id,
            runtime=att.runtime,
            pod_uid=att.pod_uid,
        )
    return out


def _process_entry(
    gp: GpuProcess, host_pid: int | None, att: AttributedProcess | None, descendants: dict[int, list[int]]
) -> dict[str, object]:
    entry: dict[str, object] = {
        "pid": gp.pid,
        "host_pid": host_pid,
        # which PID NVML reported: the host's, or the one inside the process's container
        "pid_namespace": "unresolved" if host_pid is None else "host" if host_pid == gp.pid else "container",
        "gpu_memory_bytes": gp.used_memory_bytes,
        "sm_ratio": gp.sm_ratio,  # this process's own share, as NVML samples it
    }
    if att is None:
        return entry
    p = att.proc
    entry.update(
        container_pid=p.nspids[-1] if len(p.nspids) > 1 else None,
        comm=p.comm,
        cmdline=p.cmdline,
        user=p.user,
        container_id=att.container_id,
        runtime=att.runtime,
        pod_uid=att.pod_uid,
        pod=att.pod,
        namespace=att.namespace,
        container=att.container,
        slurm_job=att.slurm_job,
        slurm_user=att.slurm_user,
        slurm_partition=att.slurm_partition,
        descendants=sorted(descendants.get(p.pid, ())),
    )
    return entry


def descendants_of(attributed: dict[int, AttributedProcess]) -> dict[int, list[int]]:
    """pid -> every tracked process below it."""
    out: dict[int, list[int]] = {}
    for pid, a in attributed.items():
        parent, depth = a.proc.ppid, 0
        while parent in attributed and parent != pid and depth < 64:
            out.setdefault(parent, []).append(pid)
            parent, depth = attributed[parent].proc.ppid, depth + 1
    return out


def process_labels(a: AttributedProcess) -> Labels:
    values = (
        ("pid", str(a.proc.pid)),
        ("comm", a.proc.comm),
        ("user", a.proc.user or ""),
        ("container_id", a.container_id or ""),
        ("pod", a.pod or ""),
        ("namespace", a.namespace or ""),
        ("container", a.container or ""),
        ("slurm_job", a.slurm_job or ""),
    )
    return tuple((k, v) for k, v in values if v)
