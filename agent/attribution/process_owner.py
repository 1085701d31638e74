"""Who a host process belongs to: container runtime and id, pod UID, Slurm job.

Read once per process (keyed by pid and start time, so a reused pid is read again)
from ``/proc/<pid>/cgroup`` — and, when the cgroup names no Slurm job or to learn the
partition, ``/proc/<pid>/environ`` — through the host package's readers.
"""

from __future__ import annotations

import logging
import pwd
from dataclasses import dataclass

from agent.attribution import containers, slurm
from agent.attribution.containers import ContainerInfo
from agent.attribution.slurm import SlurmJob
from agent.host.procfs import read_process_cgroups, read_process_environ, read_process_parent
from agent.model import ProcessStats

log = logging.getLogger(__name__)

_SHIM_DEPTH = 4  # container init -> shim is one step; allow for an init wrapper (tini, dumb-init)


@dataclass(frozen=True)
class ProcessOwner:
    container: ContainerInfo
    slurm: SlurmJob | None


class ProcessOwners:
    def __init__(self, procfs: str, read_environ: bool = True) -> None:
        self.procfs = procfs
        self.read_environ = read_environ
        self._cache: dict[tuple[int, float | None], ProcessOwner] = {}
        self._hostnames: dict[tuple[int, float | None], str | None] = {}
        self._runtimes: dict[str, str | None] = {}  # container id -> runtime named by its shim

    def owner(self, proc: ProcessStats) -> ProcessOwner:
        key = (proc.pid, proc.create_time)
        found = self._cache.get(key)
        if found is None:
            found = self._read(proc)
            self._cache[key] = found
        return found

    def hostname(self, proc: ProcessStats) -> str | None:
        """``HOSTNAME`` from the process's environment: the pod's name in a Kubernetes container."""
        key = (proc.pid, proc.create_time)
        if key not in self._hostnames:
            try:
                self._hostnames[key] = read_process_environ(self.procfs, proc.pid).get("HOSTNAME")
            except OSError:
                self._hostnames[key] = None
        return self._hostnames[key]

    def forget_except(self, live: set[tuple[int, float | None]]) -> None:
        for key in [k for k in self._cache if k not in live]:
            del self._cache[key]
        for key in [k for k in self._hostnames if k not in live]:
            del self._hostnames[key]
        live_ids = {o.container.container_id for o in self._cache.values()}
        for cid in [c for c in self._runtimes if c not in live_ids]:
            del self._runtimes[cid]

    def _read(self, proc: ProcessStats) -> ProcessOwner:
        try:
            lines = read_process_cgroups(self.procfs, proc.pid)
        except OSError:
            lines = []
        info = containers.from_cgroups(lines)
        if info.container_id is not None and info.runtime is None:
            runtime = self._runtime_from_shim(info.container_id, proc.ppid)
            if runtime is not None:
                info = ContainerInfo(runtime, info.container_id, info.pod_uid, info.kubernetes)
        job = slurm.from_cgroups(lines)
        if self.read_environ and (job is None or job.partition is None) and info.container_id is None:
            try:
                env_job = slurm.from_environ(read_process_environ(self.procfs, proc.pid))
            except OSError:  # environ needs the same uid or CAP_SYS_PTRACE
                env_job = None
            job = slurm.merge(job, env_job)
        if job is not None and job.user is not None and job.user.isdigit():
            job = SlurmJob(
                job.job_id, _user_name(int(job.user)), job.partition, job.source
            )  # uid_N in the path
        return ProcessOwner(info, job)

    def _runtime_from_shim(self, container_id: str, ppid: int) -> str | None:
        if container_id in self._runtimes:
            return self._runtimes[container_id]
        runtime: str | None = None
        pid = ppid
        for _ in range(_SHIM_DEPTH):
            if pid <= 1:
                break
            try:
                parent, comm, cmdline = read_process_parent(self.procfs, pid)
            except (OSError, ValueError, IndexError):
                break
            runtime = containers.runtime_from_shim(comm, cmdline)
            if runtime is not None:
                break
            pid = parent
        self._runtimes[container_id] = runtime
        return runtime


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
