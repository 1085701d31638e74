"""Slurm job, user and partition from cgroup paths (v1 and v2) and SLURM_* environment."""

from __future__ import annotations

from agent.attribution.slurm import SlurmJob, from_cgroups, from_environ, merge
from agent.host.procfs import parse_cgroup


def test_v1_path_gives_job_and_uid() -> None:
    lines = parse_cgroup("9:freezer:/slurm/uid_1000/job_77/step_0/task_0\n4:cpu,cpuacct:/\n0::/\n")
    assert from_cgroups(lines) == SlurmJob("77", "1000", None, "cgroup")


def test_v1_path_with_several_slurmd_per_host() -> None:
    lines = parse_cgroup("9:freezer:/slurm_node07/uid_1000/job_12345/step_batch/task_0\n")
    assert from_cgroups(lines) == SlurmJob("12345", "1000", None, "cgroup")


def test_v2_path_gives_job_only() -> None:
    lines = parse_cgroup("0::/system.slice/slurmstepd.scope/job_91/step_0/user/task_0\n")
    assert from_cgroups(lines) == SlurmJob("91", None, None, "cgroup")
    lines = parse_cgroup("0::/system.slice/node07_slurmstepd.scope/job_92/step_extern/user/task_special\n")
    assert from_cgroups(lines) == SlurmJob("92", None, None, "cgroup")


def test_paths_that_are_not_slurm() -> None:
    assert from_cgroups(parse_cgroup("0::/system.slice/cron.service/job_4\n")) is None
    assert from_cgroups(parse_cgroup("0::/user.slice\n")) is None


def test_environment() -> None:
    env = {"SLURM_JOB_ID": "80", "SLURM_JOB_USER": "carol", "SLURM_JOB_PARTITION": "debug"}
    assert from_environ(env) == SlurmJob("80", "carol", "debug", "environ")
    assert from_environ({"SLURM_JOBID": "81"}) == SlurmJob("81", None, None, "environ")
    assert from_environ({"PATH": "/bin"}) is None


def test_merge_prefers_the_cgroup_and_takes_details_from_the_environment() -> None:
    cg = SlurmJob("77", "1000", None, "cgroup")
    assert merge(cg, SlurmJob("77", "alice", "a100", "environ")) == SlurmJob("77", "alice", "a100", "cgroup")
    # moved into another job after it started: the environment is stale
    assert merge(cg, SlurmJob("12", "bob", "cpu", "environ")) == cg
    assert merge(None, SlurmJob("12", "bob", "cpu", "environ")) == SlurmJob("12", "bob", "cpu", "environ")
    assert merge(cg, None) == cg
