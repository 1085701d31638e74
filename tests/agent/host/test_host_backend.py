"""HostBackend against the fixture trees: a training pod with 4 data-loader workers under cgroup v2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.clock import ManualClock
from agent.host.backend import HostBackend
from agent.host.procfs import CLK_TCK, PAGE_SIZE

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "host"
WORKERS = (4130, 4131, 4132, 4133)


def backend(root: Path = FIXTURES, clock: ManualClock | None = None) -> HostBackend:
    return HostBackend(
        str(root / "proc"), str(root / "sys"), str(root / "cgroup"), clock or ManualClock(42.0)
    )


def test_host_wide_parts() -> None:
    r = backend().read({})
    assert r.errors == {}
    assert r.timestamp == 42.0
    assert r.cpu_count == 8
    assert r.cpu_seconds["user"] == pytest.approx(1234567 / CLK_TCK)
    assert r.cpu_seconds["iowait"] == pytest.approx(45678 / CLK_TCK)
    assert set(r.cpu_seconds) == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    assert r.load_average == (6.52, 5.87, 4.91)
    assert r.memory_total_bytes == 263842340 * 1024
    assert r.memory_available_bytes == 201234567 * 1024
    assert r.swap_total_bytes == 8388604 * 1024
    assert r.swap_used_bytes == (8388604 - 8126460) * 1024
    assert r.pressure_stall_seconds == {
        "cpu": {"some": 123.456789, "full": 0.0},
        "io": {"some": 45.678901, "full": 34.56789},
        "memory": {"some": 1.234567, "full": 0.456789},
    }


def test_disks_count_whole_physical_disks_only() -> None:
    r = backend().read({})
    # nvme0n1 + nvme1n1; not the partition nvme0n1p1, not loop0, not dm-0 (which would double count)
    assert r.disk_read_bytes == (400000000 + 100000000) * 512
    assert r.disk_write_bytes == (600000000 + 20000000) * 512
    assert r.disk_busy_seconds == pytest.approx(1234.567 + 345.678)


def test_network_excludes_loopback_and_virtual_interfaces() -> None:
    r = backend().read({})
    # eth0 + eth1 from the host namespace (pid 1); lo, the veth and the cni0 bridge left out
    assert r.network_receive_bytes == 9876543210 + 5000000000
    assert r.network_transmit_bytes == 1234567890 + 6000000000


def test_training_process_and_its_workers() -> None:
    r = backend().read({4121: (0, 1)})
    assert set(r.processes) == {4121, *WORKERS, 4140}  # 4140: ffmpeg started by worker 4130 (a grandchild)
    main = r.processes[4121]
    assert (main.ppid, main.comm, main.user) == (812, "python", "root")
    assert main.cmdline == "python train.py --config configs/llama-8b.yaml --batch-size 32"
    assert main.create_time == pytest.approx(1700000000 + 123456 / CLK_TCK)
    assert main.cpu_user_seconds == pytest.approx(64210 / CLK_TCK)
    assert main.cpu_system_seconds == pytest.approx(3655 / CLK_TCK)
    assert (main.threads_total, main.threads_running, main.threads_blocked_io) == (6, 2, 0)
    assert main.max_thread_cpu_seconds == pytest.approx(
        (52000 + 3000) / CLK_TCK
    )  # first read: busiest cumulative
    assert main.rss_bytes == 2621440 * PAGE_SIZE
    assert (main.io_read_bytes, main.io_write_bytes) == (987654321024, 12345678848)
    assert main.io_delay_seconds == pytest.approx(240 / CLK_TCK)
    assert main.cgroup_path is not None and main.cgroup_path.endswith(".scope")
    assert main.cgroup_cpu_quota_cores == pytest.approx(4.0)
    assert main.cgroup_cpu_throttled_seconds == pytest.approx(812.345678)
    assert main.cgroup_cpu_usage_seconds == pytest.approx(7421.234567)
    assert main.nspids == (4121, 1)  # pid 1 inside the container
    assert main.gpu_indices == (0, 1)
    assert all(r.processes[w].gpu_indices == (0, 1) for w in WORKERS)
    assert r.processes[4140].gpu_indices == (0, 1)


def test_the_worker_blocked_on_disk() -> None:
    r = backend().read({4121: (0,)})
    blocked = {pid: p.threads_blocked_io for pid, p in r.processes.items() if p.threads_blocked_io}
    assert blocked == {4131: 1}
    assert r.processes[4131].io_delay_seconds == pytest.approx(350 / CLK_TCK)
    assert sum(p.threads_blocked_io for p in r.processes.values()) == 1


def test_unreadable_io_is_none_not_zero() -> None:
    r = backend().read({4121: (0,)})
    assert r.processes[4133].io_read_bytes is None
    assert r.processes[4133].io_write_bytes is None
    assert r.processes[4132].io_read_bytes == 2000002000


def test_untracked_processes_are_left_out_and_missing_pids_skipped() -> None:
    r = backend().read({5120: (2,), 99999: (3,)})
    assert set(r.processes) == {5120}
    serve = r.processes[5120]
    assert serve.user == "54321"  # a uid the host does not know keeps its number
    assert serve.cgroup_cpu_quota_cores == pytest.approx(2.0)  # set on the Slurm job, two levels up
    assert serve.gpu_indices == (2,)
    assert "processes" not in r.errors


def test_delay_accounting_switched_off_means_no_io_delay(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / "proc" / "sys" / "kernel" / "task_delayacct").write_text("0\n")
    r = backend(root).read({4121: (0,)})
    assert r.processes[4131].io_delay_seconds is None


def test_each_part_fails_on_its_own(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / "proc" / "meminfo").unlink()
    (root / "proc" / "pressure" / "io").unlink()
    (root / "proc" / "pressure" / "io").mkdir()  # reading a directory fails like an unreadable file
    r = backend(root).read({4121: (0,)})
    assert set(r.errors) == {"memory", "pressure"}
    assert "meminfo" in r.errors["memory"]
    assert r.memory_total_bytes is None
    assert set(r.pressure_stall_seconds) == {"cpu", "memory"}  # the readable ones stand
    assert r.cpu_count == 8 and r.disk_read_bytes is not None and 4121 in r.processes


def test_kernel_without_psi_is_unsupported_not_an_error(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    shutil.rmtree(root / "proc" / "pressure")
    r = backend(root).read({})
    assert r.pressure_stall_seconds == {}
    assert "pressure" not in r.errors


def test_missing_proc_root_never_raises(tmp_path: Path) -> None:
    r = HostBackend(str(tmp_path / "none"), str(tmp_path / "none"), str(tmp_path / "none")).read({1: (0,)})
    assert {"cpu", "load", "memory", "disk", "network", "processes"} <= set(r.errors)
    assert r.processes == {}


def test_a_fixture_file_replaced_between_reads_is_read_afresh(tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    b = backend(root)
    assert b.read({}).memory_total_bytes == 263842340 * 1024
    meminfo = root / "proc" / "meminfo"
    replacement = root / "proc" / "meminfo.new"
    replacement.write_text(meminfo.read_text().replace("263842340", "100", 1))
    replacement.replace(meminfo)  # a new file: a descriptor kept open would still read the old one
    assert b.read({}).memory_total_bytes == 100 * 1024


def test_cgroup_v1_docker_host() -> None:
    v1 = FIXTURES / "v1"
    b = HostBackend(str(v1 / "proc"), str(FIXTURES / "sys"), str(v1 / "cgroup"), ManualClock(0.0))
    r = b.read({7001: (0,)})
    assert set(r.processes) == {7001, 7010}
    p = r.processes[7001]
    assert p.cgroup_path == "/docker/3e1f0c9b8a7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f"
    assert p.cgroup_cpu_quota_cores == pytest.approx(2.5)
    assert p.cgroup_cpu_throttled_seconds == pytest.approx(215.0)
    assert p.cgroup_cpu_usage_seconds == pytest.approx(1180.0)
    assert r.processes[7010].nspids == (7010, 12)
    # this tree has no meminfo, loadavg, diskstats or net/dev: those parts fail, the processes stand
    assert {"memory", "load", "disk", "network"} <= set(r.errors)


def copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES, root, symlinks=True)
    return root
