"""Parsers for /proc files, on literal strings (the format knowledge in one place)."""

from __future__ import annotations

import pytest

from agent.host.procfs import (
    CLK_TCK,
    parse_cgroup,
    parse_cmdline,
    parse_diskstats,
    parse_environ,
    parse_meminfo,
    parse_net_dev,
    parse_ppid,
    parse_proc_io,
    parse_proc_stat,
    parse_psi,
    parse_stat,
    parse_status,
)

STAT = (
    "4121 (py (weird) name) S 812 4121 4121 0 -1 4194560 120345 0 12 0 64210 3655 0 0 20 0 6 0 123456 "
    "32212254720 2621440 18446744073709551615 1 1 1 0 0 0 0 16781312 134234626 0 0 0 17 3 0 0 240 0 0 "
    "1 1 1 1 1 1 1 0\n"
)


def test_stat_handles_parentheses_and_spaces_in_comm() -> None:
    st = parse_stat(STAT)
    assert st.pid == 4121
    assert st.comm == "py (weird) name"
    assert (st.state, st.ppid) == ("S", 812)
    assert (st.utime_ticks, st.stime_ticks) == (64210, 3655)
    assert (st.num_threads, st.starttime_ticks, st.rss_pages) == (6, 123456, 2621440)
    assert st.blkio_ticks == 240
    assert parse_ppid(STAT) == 812


def test_stat_without_delayacct_field_gives_none() -> None:
    short = STAT.split(" 17 3 0 0 240")[0] + "\n"
    assert parse_stat(short).blkio_ticks is None


def test_status_real_uid_and_nspid_chain() -> None:
    st = parse_status("Name:\tpython\nUid:\t1000\t0\t0\t0\nNSpid:\t4121\t57\t1\n")
    assert st.uid == 1000
    assert st.nspids == (4121, 57, 1)
    assert parse_status("Name:\tx\n").nspids == ()


def test_cmdline_and_environ_split_on_nul() -> None:
    assert parse_cmdline(b"python\0train.py\0--lr\x000.1\0") == "python train.py --lr 0.1"
    assert parse_cmdline(b"") == ""
    env = parse_environ(b"SLURM_JOB_ID=77\0PATH=/bin:/usr/bin\0EMPTY=\0junk\0A=b=c\0")
    assert env == {"SLURM_JOB_ID": "77", "PATH": "/bin:/usr/bin", "EMPTY": "", "A": "b=c"}


def test_proc_io_uses_storage_bytes_not_rchar() -> None:
    text = (
        "rchar: 999\nwchar: 888\nsyscr: 1\nsyscw: 1\n"
        "read_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n"
    )
    assert parse_proc_io(text) == (4096, 8192)


def test_cgroup_lines_v1_and_v2() -> None:
    lines = parse_cgroup("4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/system.slice/x.scope\n")
    assert lines[0].controllers == ("cpu", "cpuacct")
    assert lines[0].path == "/docker/abc"
    assert lines[2].hierarchy == 0 and lines[2].controllers == () and lines[2].path == "/system.slice/x.scope"


def test_proc_stat_modes_count_and_btime() -> None:
    text = (
        "cpu  100 2 30 400 5 0 6 7 0 0\ncpu0 50 1 15 200 2 0 3 3 0 0\n"
        "cpu1 50 1 15 200 3 0 3 4 0 0\nbtime 1700000000\n"
    )
    times = parse_proc_stat(text)
    assert times.cpu_count == 2
    assert times.boot_time == 1700000000.0
    assert times.seconds["user"] == pytest.approx(100 / CLK_TCK)
    assert times.seconds["steal"] == pytest.approx(7 / CLK_TCK)
    assert set(times.seconds) == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1\n")


def test_meminfo_kb_to_bytes_and_counts_kept() -> None:
    info = parse_meminfo("MemTotal:       1000 kB\nHugePages_Total:       3\n")
    assert info == {"MemTotal": 1024000, "HugePages_Total": 3}


def test_psi_total_microseconds_to_seconds() -> None:
    text = (
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=125\n"
    )
    assert parse_psi(text) == {"some": 2.5, "full": 0.000125}


def test_diskstats_sectors_and_io_ticks() -> None:
    (disk,) = parse_diskstats(" 259 0 nvme0n1 10 0 2048 5 20 0 4096 9 0 1500 14 0 0 0 0\n")
    assert (disk.name, disk.read_bytes, disk.write_bytes, disk.busy_seconds) == (
        "nvme0n1",
        2048 * 512,
        4096 * 512,
        1.5,
    )


def test_net_dev_receive_and_transmit_bytes() -> None:
    text = (
        "Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n"
        "  eth0: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n"
        "bond0.12: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n"
    )
    assert parse_net_dev(text) == {"eth0": (100, 200), "bond0.12": (5, 6)}


def test_meminfo_only_the_keys_asked_for() -> None:
    text = "MemTotal:       1000 kB\nMemFree:  5 kB\nMemAvailable:    500 kB\nSwapTotal: 7 kB\n"
    assert parse_meminfo(text, frozenset({"MemTotal", "MemAvailable"})) == {
        "MemTotal": 1024000,
        "MemAvailable": 512000,
    }


def test_diskstats_keep_filters_by_name() -> None:
    text = (
        " 7 0 loop0 1 0 8 0 0 0 0 0 0 0 0 0 0 0 0\n 259 0 nvme0n1 10 0 2048 5 20 0 4096 9 0 1500 14 0 0 0 0\n"
    )
    asked: list[str] = []

    def keep(name: str) -> bool:
        asked.append(name)
        return name.startswith("nvme")

    assert [d.name for d in parse_diskstats(text, keep)] == ["nvme0n1"]
    assert asked == ["loop0", "nvme0n1"]
