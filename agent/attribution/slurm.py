"""Slurm job, user and partition of a process: from its cgroup path or its ``SLURM_*`` environment.

cgroup paths Slurm's task/cgroup plugin creates:
- v1: ``/slurm/uid_<uid>/job_<id>/step_<step>/task_<n>`` (also ``/slurm_<node>/...``
  with several slurmd per host), under the cpuset, memory, devices and freezer controllers;
- v2: ``/system.slice/slurmstepd.scope/job_<id>/step_<step>/user/task_<n>``
  (``<node>_slurmstepd.scope`` with several slurmd per host).

The partition is only in the environment (``SLURM_JOB_PARTITION``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.host.procfs import CgroupLine

_JOB = re.compile(r"(?:^|/)job_(\d+)(?:/|$)")
_UID = re.compile(r"(?:^|/)uid_(\d+)(?:/|$)")


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    user: str | None = None  # a name, or the uid as text when only that is known
    partition: str | None = None
    source: str = "cgroup"  # cgroup | environ


def from_cgroups(lines: list[CgroupLine]) -> SlurmJob | None:
    for line in lines:
        if "slurm" not in line.path:
            continue
        job = _JOB.search(line.path)
        if job:
            uid = _UID.search(line.path)
            return SlurmJob(job.group(1), uid.group(1) if uid else None, None, "cgroup")
    return None


def from_environ(env: dict[str, str]) -> SlurmJob | None:
    # The raw job id (an array task has its own), as in the cgroup path and sacct's JobIDRaw.
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job:
        return None
    return SlurmJob(job, env.get("SLURM_JOB_USER"), env.get("SLURM_JOB_PARTITION"), "environ")


def merge(cgroup: SlurmJob | None, environ: SlurmJob | None) -> SlurmJob | None:
    """The cgroup says which job holds the process; the environment adds user and partition."""
    if cgroup is None:
        return environ
    if environ is None:
        return cgroup
    if environ.job_id != cgroup.job_id:  # started outside the job and moved into it: trust the cgroup
        return cgroup
    return SlurmJob(cgroup.job_id, environ.user or cgroup.user, environ.partition, "cgroup")
