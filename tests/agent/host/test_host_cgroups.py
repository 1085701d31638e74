"""Cgroup CPU limits: v2 cpu.max and v1 CFS files, the tightest ancestor, namespaced paths."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from agent.host.cgroups import NO_LIMIT, CgroupReader, host_relative, process_cgroup_path
from agent.host.procfs import parse_cgroup, read_text

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "host"
CID = "8c6f3b2a9d1e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c"
POD = "kubepods-burstable-pod1f2e3d4c_5b6a_4789_9abc_def012345678.slice"
K8S = f"/kubepods.slice/kubepods-burstable.slice/{POD}/cri-containerd-{CID}.scope"


def test_v2_container_quota_beats_looser_pod_quota() -> None:
    reader = CgroupReader(str(FIXTURES / "cgroup"))
    assert reader.unified
    cpu = reader.cpu(K8S)
    assert cpu.quota_cores == pytest.approx(4.0)  # container 400000/100000; the pod allows 6
    assert cpu.throttled_seconds == pytest.approx(812.345678)
    assert cpu.usage_seconds == pytest.approx(7421.234567)


def test_v2_quota_on_an_ancestor_binds_and_its_stats_are_used() -> None:
    reader = CgroupReader(str(FIXTURES / "cgroup"))
    cpu = reader.cpu("/system.slice/slurmstepd.scope/job_77/step_0/user/task_0")
    assert cpu.quota_cores == pytest.approx(2.0)  # set on job_77
    assert cpu.throttled_seconds == pytest.approx(1.5)  # job_77's cpu.stat, not the task's 0
    assert cpu.usage_seconds == pytest.approx(99.0)


def test_v2_unlimited_cgroup_reports_own_usage_and_no_quota() -> None:
    reader = CgroupReader(str(FIXTURES / "cgroup"))
    cpu = reader.cpu("/kubepods.slice")
    assert cpu.quota_cores is None
    assert cpu.usage_seconds == pytest.approx(9123.456789)


def test_missing_cgroup_directory_gives_nothing() -> None:
    cpu = CgroupReader(str(FIXTURES / "cgroup")).cpu("/no/such.scope")
    assert (cpu.quota_cores, cpu.throttled_seconds, cpu.usage_seconds) == (None, None, None)


def test_a_missing_cgroup_under_a_limited_parent_gives_nothing() -> None:
    cpu = CgroupReader(str(FIXTURES / "cgroup")).cpu(K8S + "/gone")
    assert cpu == NO_LIMIT  # not the container's 4 cores: the process's cgroup is not there


def test_v1_cfs_quota_throttled_ns_and_cpuacct_usage() -> None:
    reader = CgroupReader(str(FIXTURES / "v1" / "cgroup"))
    assert not reader.unified
    cpu = reader.cpu("/docker/3e1f0c9b8a7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f")
    assert cpu.quota_cores == pytest.approx(2.5)
    assert cpu.throttled_seconds == pytest.approx(215.0)
    assert cpu.usage_seconds == pytest.approx(1180.0)


def test_process_path_picks_unified_or_v1_cpu_line() -> None:
    lines = parse_cgroup("4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/system.slice/d.scope\n")
    assert process_cgroup_path(lines, unified=True) == "/system.slice/d.scope"
    assert process_cgroup_path(lines, unified=False) == "/docker/abc"
    assert process_cgroup_path(parse_cgroup("0::/a\n"), unified=False) == "/a"
    assert process_cgroup_path(parse_cgroup("3:memory:/a\n"), unified=True) is None


def test_paths_seen_from_another_cgroup_namespace_are_rebuilt() -> None:
    assert host_relative("/a/b") == "/a/b"
    assert host_relative("/../../x/y") == "/x/y"
    rebuilt = host_relative(f"/../../{POD}/cri-containerd-{CID}.scope")
    assert rebuilt == K8S
    reader = CgroupReader(str(FIXTURES / "cgroup"))
    assert reader.cpu(f"/../../../{POD}/cri-containerd-{CID}.scope").quota_cores == pytest.approx(4.0)


def test_the_layout_is_looked_up_again_after_relayout_every_reads(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    shutil.copytree(FIXTURES / "cgroup", root)
    reader = CgroupReader(str(root), relayout_every=2)
    reader.begin()
    assert reader.unified
    (root / "cgroup.controllers").unlink()  # remounted as v1 (no cpu hierarchy here)
    reader.begin()
    reader.begin()
    assert not reader.unified
    assert reader.cpu(K8S) == NO_LIMIT


def test_a_cgroup_without_a_quota_file_still_reports_its_ancestors_limit(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    shutil.copytree(FIXTURES / "cgroup", root)
    (root / K8S.lstrip("/") / "cpu.max").unlink()
    cpu = CgroupReader(str(root)).cpu(K8S)
    assert cpu.quota_cores == pytest.approx(6.0)  # the pod's


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux cgroupfs")
def test_live_cgroup_files_are_kept_open_only_while_read() -> None:
    root = "/sys/fs/cgroup"
    reader = CgroupReader(root)
    path = process_cgroup_path(parse_cgroup(read_text("/proc/self/cgroup")), reader.unified)
    if path is None:
        pytest.skip("no cgroup for this process")
    reader.begin()
    first = reader.cpu(path)
    if fds_under(root) == 0:
        pytest.skip("no cgroup cpu files readable here")
    fresh = CgroupReader(root).cpu(path)
    assert first.quota_cores == fresh.quota_cores
    reader.begin()
    second = reader.cpu(path)
    if first.usage_seconds is not None:
        assert second.usage_seconds is not None and second.usage_seconds >= first.usage_seconds
    reader.begin()  # a read that needs no cgroup
    reader.begin()
    assert fds_under(root) == 0
    reader.close()


def fds_under(root: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(root + "/")
        except OSError:
            continue
    return count
